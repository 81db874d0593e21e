//! Draining on SIGTERM, as Envoy does when Kubernetes stops a pod: listeners stop accepting,
//! HTTP connections close once their request in flight is answered (idle ones at once), and the
//! process exits when no connection is left or the drain time (Istio's default
//! `terminationDrainDuration`, 5 s) is over; a second signal exits at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};

pub use crate::shutdown::{signalled, DRAIN_TIME};

/// The proxy's drain state: whether it is draining, and its open downstream connections.
#[derive(Debug)]
pub struct Drain {
    draining: watch::Sender<bool>,
    open: AtomicUsize,
    closed: Notify,
}

impl Default for Drain {
    fn default() -> Self {
        Drain { draining: watch::channel(false).0, open: AtomicUsize::new(0), closed: Notify::new() }
    }
}

/// Held by each open downstream connection; dropping it may end the drain.
pub struct Open(Arc<Drain>);

impl Drop for Open {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.closed.notify_waiters();
        }
    }
}

impl Drain {
    /// Counts a connection as open until the returned guard is dropped.
    pub fn open(self: &Arc<Self>) -> Open {
        self.open.fetch_add(1, Ordering::AcqRel);
        Open(self.clone())
    }

    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    pub fn is_draining(&self) -> bool {
        *self.draining.borrow()
    }

    /// Resolves once draining has begun (at once if it has).
    pub async fn started(&self) {
        let mut rx = self.draining.subscribe();
        let _ = rx.wait_for(|d| *d).await;
    }

    /// Begins draining: listeners stop accepting, connections close after their request.
    pub fn start(&self) {
        self.draining.send_replace(true);
    }

    /// Waits until no connection is open, or `limit` has passed; true when none is left.
    pub async fn finished(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let closed = self.closed.notified();
            if self.open_connections() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, closed).await.is_err() {
                return self.open_connections() == 0;
            }
        }
    }
}

/// After the first signal: drains for at most `DRAIN_TIME`, or until a second signal.
pub async fn drain_then_exit(drain: &Drain) {
    drain.start();
    let open = drain.open_connections();
    crate::net::log(&format!("draining: {open} connection(s) open; exiting when they close or in {DRAIN_TIME:?}"));
    tokio::select! {
        done = drain.finished(DRAIN_TIME) => {
            if !done {
                crate::net::log(&format!("drain time over with {} connection(s) open", drain.open_connections()));
            }
        }
        _ = signalled() => crate::net::log("a second signal: exiting now"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_drain_ends_when_the_last_connection_closes_or_at_the_limit() {
        let drain = Arc::new(Drain::default());
        assert!(drain.finished(Duration::from_millis(10)).await, "nothing open: done at once");
        let a = drain.open();
        let b = drain.open();
        assert!(!drain.is_draining());
        drain.start();
        drain.started().await;
        assert!(!drain.finished(Duration::from_millis(20)).await, "two open: not done by the limit");
        drop(a);
        let waiter = {
            let drain = drain.clone();
            tokio::spawn(async move { drain.finished(Duration::from_secs(10)).await })
        };
        tokio::task::yield_now().await;
        drop(b);
        assert!(waiter.await.unwrap(), "the last close ends the drain");
    }
}
