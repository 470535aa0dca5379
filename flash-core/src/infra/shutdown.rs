//! One shutdown signal for the whole process.

use tokio_util::sync::CancellationToken;

/// Returns a token cancelled on SIGINT or SIGTERM (what orchestrators send to start a graceful
/// shutdown). Every server and background loop watches a clone of it.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        let signal = wait_for_signal().await;
        tracing::info!(signal, "shutdown requested; finishing in-flight work");
        trigger.cancel();
    });
    token
}

#[cfg(unix)]
async fn wait_for_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(err) => {
            tracing::warn!(error = %err, "cannot listen for SIGTERM; only Ctrl-C stops the process");
            let _ = tokio::signal::ctrl_c().await;
            return "SIGINT";
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() -> &'static str {
    let _ = tokio::signal::ctrl_c().await;
    "Ctrl-C"
}

/// Spawns `work` every `interval` until `shutdown` is cancelled: the shape of every periodic
/// housekeeping task (forgetting idle rate-limit keys, refreshing gauges).
pub fn every(
    interval: std::time::Duration,
    shutdown: CancellationToken,
    mut work: impl FnMut() + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = tick.tick() => work(),
            }
        }
    })
}
