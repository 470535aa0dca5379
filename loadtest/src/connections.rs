//! The benchmarks' HTTP/1.1 client: a fixed set of keep-alive connections to one server, each
//! carrying one request at a time, the way `wrk` drives a server.
//!
//! The load generator shares this machine's two cores with the services it measures, so what
//! it spends per request is taken from them. reqwest's conveniences (a URL parse, a pool keyed
//! by host, a timer and a redirect policy per request) cost about as much CPU as the door spends
//! answering; a bare hyper connection costs a fraction of that.

use std::{net::SocketAddr, sync::Mutex};

use anyhow::Context;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Uri, header};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::{net::TcpStream, sync::Semaphore};

/// A server's answer: its status and whole body.
pub(crate) struct Answer {
    /// The HTTP status.
    pub(crate) status: u16,
    /// The body, read to the end (so the connection can carry the next request).
    pub(crate) body: Bytes,
}

/// Up to `size` connections to one server; a request waits for a free one.
pub(crate) struct Connections {
    addr: SocketAddr,
    host: HeaderValue,
    idle: Mutex<Vec<SendRequest<Empty<Bytes>>>>,
    free: Semaphore,
}

impl Connections {
    /// Connections to the server of `base` (`http://host:port`), opened as they are needed and
    /// kept open.
    ///
    /// # Errors
    /// When `base` is not an `http://` URL with a reachable host.
    pub(crate) async fn to(base: &str, size: usize) -> anyhow::Result<Self> {
        let uri: Uri = base
            .parse()
            .with_context(|| format!("{base:?} is not a URL"))?;
        anyhow::ensure!(
            uri.scheme_str() == Some("http"),
            "{base:?}: the benchmarks speak plain http"
        );
        let authority = uri
            .authority()
            .with_context(|| format!("{base:?} has no host"))?;
        let port = authority.port_u16().unwrap_or(80);
        let addr = tokio::net::lookup_host((authority.host(), port))
            .await?
            .next()
            .with_context(|| format!("{base:?}: no address for the host"))?;
        Ok(Self {
            addr,
            host: HeaderValue::from_str(authority.as_str())?,
            idle: Mutex::new(Vec::with_capacity(size)),
            free: Semaphore::new(size.max(1)),
        })
    }

    /// Sends `method path` with `token` as the bearer and reads the whole answer. A connection
    /// that failed is dropped; the next request opens a new one.
    ///
    /// # Errors
    /// When the server cannot be reached or the exchange breaks off.
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        token: &str,
    ) -> anyhow::Result<Answer> {
        let _turn = self.free.acquire().await?;
        let idle = self.lock().pop();
        let mut connection = match idle {
            Some(connection) if !connection.is_closed() => connection,
            _ => self.open().await?,
        };
        connection.ready().await?;
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, &self.host)
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Empty::new())?;
        let response = connection.send_request(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        self.lock().push(connection);
        Ok(Answer { status, body })
    }

    async fn open(&self) -> anyhow::Result<SendRequest<Empty<Bytes>>> {
        let stream = TcpStream::connect(self.addr).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            // A connection ends when the server closes it or its sender is dropped.
            drop(connection.await);
        });
        Ok(sender)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<SendRequest<Empty<Bytes>>>> {
        // A push or a pop cannot leave the list half-changed.
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
