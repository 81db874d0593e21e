//! Stopping as Kubernetes asks a container to: SIGTERM (or Ctrl-C), a drain bounded by Istio's
//! default `terminationDrainDuration`, and a second signal that cuts it short. The proxy
//! (`proxy/drain.rs`) and the built-in apps stop this way.

use std::future::Future;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};

/// Istio's default `terminationDrainDuration`.
pub const DRAIN_TIME: Duration = Duration::from_secs(5);

/// Resolves at the next SIGTERM or SIGINT.
pub async fn signalled() {
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// After the first signal: the drain time, or a second signal, whichever comes first.
pub async fn drain_deadline() {
    tokio::select! {
        _ = tokio::time::sleep(DRAIN_TIME) => {}
        _ = signalled() => {}
    }
}

/// Serves an app's router until a signal, then lets the requests in flight finish (new
/// connections are refused) until they are done or the drain deadline.
pub async fn serve_app(listener: tokio::net::TcpListener, router: axum::Router) -> std::io::Result<()> {
    serve_with(|stop| async move {
        axum::serve(listener, router.into_make_service_with_connect_info::<std::net::SocketAddr>())
            .with_graceful_shutdown(stop)
            .await
    })
    .await
}

/// Runs `server`, handing it a future that resolves at the first signal (its cue to stop
/// accepting and finish what is in flight); returns when it is done or the drain deadline passes.
pub async fn serve_with<S, F>(server: S) -> std::io::Result<()>
where
    S: FnOnce(std::pin::Pin<Box<dyn Future<Output = ()> + Send>>) -> F,
    F: Future<Output = std::io::Result<()>>,
{
    let (tx, mut rx) = tokio::sync::watch::channel(false);
    let stop = Box::pin(async move {
        signalled().await;
        let _ = tx.send(true);
    });
    let running = server(stop);
    tokio::select! {
        r = running => r,
        _ = async move {
            let _ = rx.wait_for(|s| *s).await;
            drain_deadline().await;
        } => Ok(()),
    }
}
