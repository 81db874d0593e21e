//! Envoy's circuit breakers for one cluster (DestinationRule `connectionPool`): limits on open
//! connections, pending requests, active requests and concurrent retries, counted across the
//! cluster's endpoints in this proxy (as Envoy counts them per proxy, not per host), with the
//! counters Envoy's `/stats` shows. A cluster's breakers are kept by name across config
//! pushes: a push under load changes the limits, never the counts.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::proxy::outlier::{self, Detector};

pub use crate::snapshot::UNLIMITED;

/// What a guard holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    /// An open upstream connection (`maxConnections`).
    Connection,
    /// A request waiting for a connection (`http1MaxPendingRequests`).
    Pending,
    /// A request in flight (`http2MaxRequests`).
    Request,
    /// A retry in flight (`maxRetries`).
    Retry,
}

const RESOURCES: [Resource; 4] = [Resource::Connection, Resource::Pending, Resource::Request, Resource::Retry];

impl Resource {
    fn index(self) -> usize {
        self as usize
    }

    /// Envoy's name in `circuit_breakers.default.*_open` and `remaining_*`.
    pub fn envoy_name(self) -> (&'static str, &'static str) {
        match self {
            Resource::Connection => ("cx_open", "remaining_cx"),
            Resource::Pending => ("rq_pending_open", "remaining_pending"),
            Resource::Request => ("rq_open", "remaining_rq"),
            Resource::Retry => ("rq_retry_open", "remaining_retries"),
        }
    }
}

/// The thresholds, in the order of `Resource`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Limits(pub [u64; 4]);

impl Default for Limits {
    fn default() -> Self {
        Limits([UNLIMITED; 4])
    }
}

impl Limits {
    pub fn of(&self, r: Resource) -> u64 {
        self.0[r.index()]
    }

    pub fn from_pool(p: &crate::snapshot::ConnectionPool) -> Limits {
        Limits([p.max_connections, p.max_pending_requests, p.max_requests, p.max_retries])
    }
}

/// Envoy's per-cluster counters that the breakers and pools keep.
#[derive(Default, Debug)]
pub struct Counters {
    pub cx_total: AtomicU64,
    pub cx_overflow: AtomicU64,
    pub cx_connect_fail: AtomicU64,
    pub rq_total: AtomicU64,
    pub rq_pending_total: AtomicU64,
    pub rq_pending_overflow: AtomicU64,
    pub rq_pending_failure_eject: AtomicU64,
    pub rq_retry: AtomicU64,
    pub rq_retry_overflow: AtomicU64,
    pub rq_retry_success: AtomicU64,
}

/// One cluster's breakers.
#[derive(Debug, Default)]
pub struct Breakers {
    limits: [AtomicU64; 4],
    active: [AtomicU64; 4],
    pub counters: Counters,
    /// Moves when the limits change: connections made before belong to the old settings and
    /// are not reused (Envoy drains a changed cluster's pools).
    generation: AtomicU64,
    /// Woken when a connection comes free (back to idle, or closed): pending requests look again.
    freed: tokio::sync::Notify,
    /// Requests waiting on `freed` (so a freed connection wakes nobody, cheaply, when none waits).
    waiting: std::sync::atomic::AtomicUsize,
    /// Outlier detection, when the cluster has it (`None` costs the request path nothing).
    /// Kept here so ejections, like the counts, survive config pushes.
    pub outlier: Mutex<Option<Detector>>,
    outlier_on: std::sync::atomic::AtomicBool,
}

/// Holds one unit of a resource until dropped.
#[derive(Debug)]
pub struct Guard {
    breakers: Arc<Breakers>,
    resource: Resource,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.breakers.active[self.resource.index()].fetch_sub(1, Ordering::SeqCst);
        if self.resource == Resource::Connection {
            self.breakers.connection_freed();
        }
    }
}

impl Breakers {
    pub fn new(limits: Limits) -> Arc<Breakers> {
        let b = Breakers::default();
        b.set_limits(limits);
        Arc::new(b)
    }

    pub fn set_limits(&self, limits: Limits) {
        for r in RESOURCES {
            self.limits[r.index()].store(limits.of(r), Ordering::Release);
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Which pool a connection belongs to: this cluster, under its current limits.
    pub fn owner(self: &Arc<Self>) -> (usize, u64) {
        (Arc::as_ptr(self) as usize, self.generation.load(Ordering::Acquire))
    }

    pub fn limits(&self) -> Limits {
        Limits(RESOURCES.map(|r| self.limits[r.index()].load(Ordering::Acquire)))
    }

    /// One more of `r` if it is under its limit; `None` when the breaker is open.
    pub fn try_acquire(self: &Arc<Self>, r: Resource) -> Option<Guard> {
        let limit = self.limits[r.index()].load(Ordering::Acquire);
        let active = &self.active[r.index()];
        let mut now = active.load(Ordering::Acquire);
        loop {
            if now >= limit {
                return None;
            }
            match active.compare_exchange_weak(now, now + 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Some(Guard { breakers: self.clone(), resource: r }),
                Err(seen) => now = seen,
            }
        }
    }

    /// One more of `r` whatever the limit (Envoy lets an endpoint with no connection open one,
    /// so a request for it is never queued with no way to be served).
    pub fn acquire_anyway(self: &Arc<Self>, r: Resource) -> Guard {
        self.active[r.index()].fetch_add(1, Ordering::AcqRel);
        Guard { breakers: self.clone(), resource: r }
    }

    pub fn active(&self, r: Resource) -> u64 {
        self.active[r.index()].load(Ordering::Acquire)
    }

    /// `circuit_breakers.default.*_open`: the resource is at its limit.
    pub fn open(&self, r: Resource) -> bool {
        self.active(r) >= self.limits[r.index()].load(Ordering::Acquire)
    }

    /// `circuit_breakers.default.remaining_*`.
    pub fn remaining(&self, r: Resource) -> u64 {
        self.limits[r.index()].load(Ordering::Acquire).saturating_sub(self.active(r))
    }

    /// Sets (or clears) outlier detection; a detector already running keeps its ejections.
    pub fn set_outlier(&self, config: Option<outlier::Config>) {
        let mut d = self.outlier.lock().unwrap_or_else(|p| p.into_inner());
        match (config, d.as_mut()) {
            (None, _) => *d = None,
            (Some(c), Some(det)) => det.config = c,
            (Some(c), None) => *d = Some(Detector::new(c)),
        }
        self.outlier_on.store(d.is_some(), Ordering::Release);
    }

    /// The endpoints to leave out now (ejected, unless the cluster panics); empty without
    /// outlier detection.
    pub fn ejected(&self, total: usize) -> Vec<SocketAddr> {
        if !self.outlier_on.load(Ordering::Acquire) {
            return Vec::new();
        }
        let mut d = self.outlier.lock().unwrap_or_else(|p| p.into_inner());
        let Some(det) = d.as_mut() else { return Vec::new() };
        let now = Instant::now();
        det.sweep(now);
        if det.panics(total, now) {
            return Vec::new();
        }
        det.ejected_addrs()
    }

    /// How a try to `addr` ended, for outlier detection.
    pub fn record(&self, addr: SocketAddr, outcome: outlier::Outcome, total: usize) {
        if !self.outlier_on.load(Ordering::Acquire) {
            return;
        }
        let mut d = self.outlier.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(det) = d.as_mut() {
            if let Some(reason) = det.record(addr, outcome, total, Instant::now()) {
                crate::net::log(&format!("outlier detection: ejected {addr} ({reason:?})"));
            }
        }
    }

    /// A connection came free: wakes the requests waiting for one, if any.
    pub fn connection_freed(&self) {
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.freed.notify_waiters();
        }
    }

    /// Waits until a connection comes free, unless `ready` (checked once the wait is
    /// registered, so a connection freed in between is not missed) already says one has.
    pub async fn wait_for_connection(&self, ready: impl FnOnce() -> bool) {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let freed = self.freed.notified();
        tokio::pin!(freed);
        freed.as_mut().enable();
        if !ready() {
            freed.await;
        }
        self.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Breakers {
    /// Envoy's `/stats` lines for cluster `name` (`cluster.NAME.STAT`), in name order. Istio
    /// sets only the default priority's thresholds and tracks what remains of them.
    pub fn envoy_stats(&self, name: &str) -> Vec<(String, u64)> {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out: Vec<(String, u64)> = Vec::new();
        for r in RESOURCES {
            let (open, remaining) = r.envoy_name();
            out.push((format!("circuit_breakers.default.{open}"), u64::from(self.open(r))));
            out.push((format!("circuit_breakers.default.{remaining}"), self.remaining(r)));
            out.push((format!("circuit_breakers.high.{open}"), 0));
        }
        out.extend([
            ("upstream_cx_active".to_string(), self.active(Resource::Connection)),
            ("upstream_cx_connect_fail".into(), get(&c.cx_connect_fail)),
            ("upstream_cx_overflow".into(), get(&c.cx_overflow)),
            ("upstream_cx_total".into(), get(&c.cx_total)),
            ("upstream_rq_active".into(), self.active(Resource::Request)),
            ("upstream_rq_pending_active".into(), self.active(Resource::Pending)),
            ("upstream_rq_pending_failure_eject".into(), get(&c.rq_pending_failure_eject)),
            ("upstream_rq_pending_overflow".into(), get(&c.rq_pending_overflow)),
            ("upstream_rq_pending_total".into(), get(&c.rq_pending_total)),
            ("upstream_rq_retry".into(), get(&c.rq_retry)),
            ("upstream_rq_retry_overflow".into(), get(&c.rq_retry_overflow)),
            ("upstream_rq_retry_success".into(), get(&c.rq_retry_success)),
            ("upstream_rq_total".into(), get(&c.rq_total)),
        ]);
        if let Some(det) = self.outlier.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            let o = det.counters;
            out.extend([
                ("outlier_detection.ejections_active".to_string(), det.ejected(Instant::now()) as u64),
                ("outlier_detection.ejections_enforced_total".into(), o.ejections_enforced_total),
                ("outlier_detection.ejections_overflow".into(), o.ejections_overflow),
                ("outlier_detection.ejections_enforced_consecutive_5xx".into(), o.ejections_enforced_consecutive_5xx),
                (
                    "outlier_detection.ejections_enforced_consecutive_gateway_failure".into(),
                    o.ejections_enforced_consecutive_gateway_failure,
                ),
                (
                    "outlier_detection.ejections_enforced_consecutive_local_origin_failure".into(),
                    o.ejections_enforced_consecutive_local_origin_failure,
                ),
            ]);
        }
        let mut out: Vec<(String, u64)> = out.into_iter().map(|(s, v)| (format!("cluster.{name}.{s}"), v)).collect();
        out.sort();
        out
    }
}

/// Breakers that never open, for requests outside any outbound cluster (inbound to the app,
/// passthrough), as Istio leaves those limits unset.
pub fn unlimited() -> Arc<Breakers> {
    static NONE: std::sync::OnceLock<Arc<Breakers>> = std::sync::OnceLock::new();
    NONE.get_or_init(|| Breakers::new(Limits::default())).clone()
}

/// Every cluster's breakers by name, kept across snapshots (and forgotten when a cluster has
/// been gone for a whole snapshot).
#[derive(Default)]
pub struct Registry {
    by_name: Mutex<HashMap<String, Arc<Breakers>>>,
}

impl Registry {
    /// The breakers of cluster `name`, with its limits and outlier detection as the current
    /// snapshot sets them.
    pub fn get(&self, name: &str, limits: Limits, outlier: Option<outlier::Config>) -> Arc<Breakers> {
        let mut map = self.by_name.lock().unwrap_or_else(|p| p.into_inner());
        let b = map.entry(name.to_string()).or_insert_with(|| Breakers::new(limits)).clone();
        if b.limits() != limits {
            b.set_limits(limits);
        }
        b.set_outlier(outlier);
        b
    }

    /// Forgets clusters no snapshot names any more (nothing else holds their breakers).
    pub fn sweep(&self) {
        self.by_name.lock().unwrap_or_else(|p| p.into_inner()).retain(|_, b| Arc::strong_count(b) > 1);
    }

    /// Every cluster's breakers, by name (for `/stats`).
    pub fn all(&self) -> Vec<(String, Arc<Breakers>)> {
        let map = self.by_name.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<_> = map.iter().map(|(n, b)| (n.clone(), b.clone())).collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(cx: u64, pending: u64, rq: u64, retries: u64) -> Limits {
        Limits([cx, pending, rq, retries])
    }

    #[test]
    fn a_resource_is_granted_up_to_its_limit_and_freed_by_its_guard() {
        let b = Breakers::new(limits(1, 1, 2, UNLIMITED));
        let cx = b.try_acquire(Resource::Connection).expect("the first connection");
        assert!(b.try_acquire(Resource::Connection).is_none(), "maxConnections: 1");
        assert!(b.open(Resource::Connection));
        let pending = b.try_acquire(Resource::Pending).unwrap();
        assert!(b.try_acquire(Resource::Pending).is_none(), "http1MaxPendingRequests: 1");
        assert_eq!((b.remaining(Resource::Pending), b.remaining(Resource::Request)), (0, 2));
        drop(pending);
        assert_eq!(b.remaining(Resource::Pending), 1);
        drop(cx);
        assert!(!b.open(Resource::Connection));
        let _anyway = b.acquire_anyway(Resource::Connection);
        let _again = b.acquire_anyway(Resource::Connection);
        assert_eq!((b.active(Resource::Connection), b.remaining(Resource::Connection)), (2, 0));
    }

    #[test]
    fn a_push_changes_the_limits_not_the_counts() {
        let reg = Registry::default();
        let b = reg.get("outbound|8000||httpbin", limits(1, 1, UNLIMITED, UNLIMITED), None);
        let held = b.try_acquire(Resource::Request).unwrap();
        b.counters.rq_pending_overflow.fetch_add(3, Ordering::Relaxed);
        let same = reg.get("outbound|8000||httpbin", limits(5, 1, 1, UNLIMITED), None);
        assert!(Arc::ptr_eq(&b, &same));
        assert_eq!(same.counters.rq_pending_overflow.load(Ordering::Relaxed), 3);
        assert!(same.try_acquire(Resource::Request).is_none(), "the new limit counts the request in flight");
        drop(held);
        assert!(same.try_acquire(Resource::Request).is_some());
        drop((b, same));
        reg.sweep();
        assert!(reg.all().is_empty());
    }

    #[tokio::test]
    async fn a_closed_connection_wakes_the_requests_waiting_for_one() {
        let b = Breakers::new(limits(1, UNLIMITED, UNLIMITED, UNLIMITED));
        let cx = b.try_acquire(Resource::Connection).unwrap();
        let waiter = {
            let b = b.clone();
            tokio::spawn(async move {
                loop {
                    if let Some(g) = b.try_acquire(Resource::Connection) {
                        return g;
                    }
                    b.wait_for_connection(|| b.remaining(Resource::Connection) > 0).await;
                }
            })
        };
        tokio::task::yield_now().await;
        drop(cx);
        let got = waiter.await.unwrap();
        assert_eq!(b.active(Resource::Connection), 1);
        drop(got);
    }
}
