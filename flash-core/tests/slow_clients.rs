//! The server cuts off clients that never finish their headers, and holds at most
//! `HTTP_MAX_CONNECTIONS` connections open at once.

// A failed unwrap is how a test reports an unexpected answer.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use axum::{Router, routing::get};
use clap::Parser;
use flash_core::{config::HttpArgs, http::Server};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    http: HttpArgs,
}

async fn start(tweak: impl FnOnce(&mut HttpArgs)) -> (String, CancellationToken) {
    let mut http = Args::parse_from(["test"]).http;
    tweak(&mut http);
    let shutdown = CancellationToken::new();
    let router = Router::new().route("/hello", get(|| async { "hello" }));
    let server = Server::bind(
        "127.0.0.1:0".parse().unwrap(),
        router,
        shutdown.clone(),
        &http,
    )
    .await
    .unwrap();
    let addr = server.local_addr().unwrap().to_string();
    tokio::spawn(server.run());
    (addr, shutdown)
}

/// Reads until the peer closes, up to `within`: `Some(bytes)` when it closed, `None` when it
/// was still open.
async fn read_to_close(stream: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    tokio::time::timeout(within, async {
        let mut buf = [0u8; 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .ok()
    .map(|()| got)
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_cut_off() {
    let (addr, shutdown) = start(|http| http.http_header_read_timeout_ms = 300).await;
    let mut slow = TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();

    let closed = read_to_close(&mut slow, Duration::from_secs(3)).await;

    assert!(
        closed.is_some(),
        "the slow-header connection was still open after 3 s"
    );
    // A client that sends its request in time is served as before.
    let mut quick = TcpStream::connect(&addr).await.unwrap();
    ask(&mut quick).await;
    assert_served(&mut quick).await;
    shutdown.cancel();
}

#[tokio::test]
async fn connections_past_the_cap_wait_until_one_closes() {
    let (addr, shutdown) = start(|http| http.http_max_connections = 2).await;
    let first = TcpStream::connect(&addr).await.unwrap();
    let _second = TcpStream::connect(&addr).await.unwrap();
    let mut third = TcpStream::connect(&addr).await.unwrap();
    ask(&mut third).await;

    assert!(
        read_to_close(&mut third, Duration::from_millis(700))
            .await
            .is_none(),
        "a third connection was served while two were open"
    );
    drop(first);
    assert_served(&mut third).await;
    shutdown.cancel();
}

/// A cap of 0 would never serve anyone: it counts as 1.
#[tokio::test]
async fn a_connection_cap_of_zero_still_serves_one_at_a_time() {
    let (addr, shutdown) = start(|http| http.http_max_connections = 0).await;
    let mut only = TcpStream::connect(&addr).await.unwrap();
    ask(&mut only).await;
    assert_served(&mut only).await;
    shutdown.cancel();
}

/// Sends one whole request, asking the server to close afterwards.
async fn ask(stream: &mut TcpStream) {
    stream
        .write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
}

/// The request sent on `stream` is answered 200 within 3 s.
async fn assert_served(stream: &mut TcpStream) {
    let answer = read_to_close(stream, Duration::from_secs(3)).await.unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
}
