//! The accept loop every service runs: HTTP/1.1 connections with a header-read timeout and a
//! cap on open connections, and graceful shutdown.
//!
//! `axum::serve` would do the rest, but it builds each connection without a timer, so hyper's
//! header-read timeout never applies and a client sending its headers one byte a minute holds
//! a connection for ever; nor does it bound connections. This loop is `axum::serve` with both.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use axum::{Router, body::Body, extract::ConnectInfo, http::Request};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
};
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// How connections are bounded.
#[derive(Debug, Clone, Copy)]
pub(super) struct Connections {
    /// Longest a client may take to send a request's headers, or to begin its next request on
    /// a kept-alive connection.
    pub(super) header_read_timeout: Duration,
    /// Connections open at once; past it the next waits in the kernel's backlog.
    pub(super) max: usize,
}

/// How long to pause after a failed accept (out of file descriptors, say) before the next.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// Serves `router` on `listener` until `shutdown`, then stops accepting, lets open requests
/// finish, and gives up after `grace`.
pub(super) async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: &CancellationToken,
    grace: Duration,
    connections: Connections,
) -> anyhow::Result<()> {
    let graceful = GracefulShutdown::new();
    // At least one connection (0 would never serve), and no more than a semaphore can count
    // (more would panic here).
    let open = Arc::new(Semaphore::new(
        connections.max.clamp(1, Semaphore::MAX_PERMITS),
    ));
    loop {
        let place = tokio::select! {
            () = shutdown.cancelled() => break,
            place = Arc::clone(&open).acquire_owned() => place.context("the connection limit closed")?,
        };
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(error = %err, "accepting a connection failed");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                    continue;
                }
            },
        };
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            router.clone().oneshot(request.map(Body::new))
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(connections.header_read_timeout)
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, %peer, "connection ended with an error");
            }
            drop(place);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(grace) => {
            tracing::warn!(?grace, "graceful shutdown did not finish in time; exiting anyway");
        }
    }
    Ok(())
}
