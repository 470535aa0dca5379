//! The benchmarks' HTTP/1.1 client: a fixed set of keep-alive connections to one server, each
//! carrying one request at a time, the way `wrk` drives a server.
//!
//! The load generator shares this machine's two cores with the services it measures, so what
//! it spends per request is taken from them. reqwest's conveniences (a URL parse, a pool keyed
//! by host, a timer and a redirect policy per request) cost about as much CPU as the door
//! spends answering; even a bare hyper client connection runs each exchange in a task of its
//! own, so every request wakes two tasks. Here the task that sends a request writes it and
//! reads the answer on the socket itself: one write and usually one read per request, with
//! `httparse` reading the head.

use std::{fmt::Write as _, net::SocketAddr, sync::Mutex};

use anyhow::Context;
use bytes::Bytes;
use http::{Method, Uri};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::Semaphore,
};

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
    host: String,
    idle: Mutex<Vec<Connection>>,
    free: Semaphore,
}

/// Most header lines an answer may have.
const MAX_HEADERS: usize = 32;

/// Largest answer head or body read, so a broken server cannot make the client grow forever.
const MAX_ANSWER_BYTES: usize = 1 << 20;

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
            host: authority.as_str().to_owned(),
            idle: Mutex::new(Vec::with_capacity(size)),
            free: Semaphore::new(size.max(1)),
        })
    }

    /// Sends `method path` with `token` as the bearer and reads the whole answer. A connection
    /// that failed is dropped; a kept one the server closed meanwhile is replaced by a new one
    /// and the request sent again (nothing of it was answered).
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
        let (mut connection, reused) = match idle {
            Some(connection) => (connection, true),
            None => (self.open().await?, false),
        };
        connection.write_request(&self.host, &method, path, token);
        let exchanged = match connection.exchange().await {
            Err(Exchange::Unanswered(_)) if reused => {
                connection = self.open().await?;
                connection.write_request(&self.host, &method, path, token);
                connection.exchange().await
            }
            other => other,
        };
        let (answer, keep) = exchanged.map_err(Exchange::into_error)?;
        if keep {
            self.lock().push(connection);
        }
        Ok(answer)
    }

    async fn open(&self) -> anyhow::Result<Connection> {
        let stream = TcpStream::connect(self.addr)
            .await
            .with_context(|| format!("connecting to {}", self.addr))?;
        stream.set_nodelay(true)?;
        Ok(Connection {
            stream,
            request: String::with_capacity(512),
            buffer: Vec::with_capacity(4096),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Connection>> {
        // A push or a pop cannot leave the list half-changed.
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// One keep-alive connection and its reusable buffers.
struct Connection {
    stream: TcpStream,
    request: String,
    buffer: Vec<u8>,
}

/// Why an exchange failed: before any byte of an answer came (safe to send again on a new
/// connection), or later.
enum Exchange {
    Unanswered(anyhow::Error),
    Broken(anyhow::Error),
}

impl Exchange {
    fn into_error(self) -> anyhow::Error {
        match self {
            Self::Unanswered(err) | Self::Broken(err) => err,
        }
    }
}

/// How the body of an answer is delimited.
enum Framing {
    Length(usize),
    Chunked,
}

impl Connection {
    fn write_request(&mut self, host: &str, method: &Method, path: &str, token: &str) {
        self.request.clear();
        // Writing to a String cannot fail.
        let _ = write!(
            self.request,
            "{method} {path} HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {token}\r\n"
        );
        if method != Method::GET {
            self.request.push_str("content-length: 0\r\n");
        }
        self.request.push_str("\r\n");
    }

    /// Sends the written request and reads its answer; also says whether the connection may
    /// carry another request.
    async fn exchange(&mut self) -> Result<(Answer, bool), Exchange> {
        self.stream
            .write_all(self.request.as_bytes())
            .await
            .map_err(|e| Exchange::Unanswered(e.into()))?;
        self.buffer.clear();
        loop {
            if let Some(done) = self.parse().map_err(Exchange::Broken)? {
                return Ok(done);
            }
            if self.buffer.len() >= MAX_ANSWER_BYTES {
                return Err(Exchange::Broken(anyhow::anyhow!(
                    "an answer over {MAX_ANSWER_BYTES} bytes"
                )));
            }
            self.buffer.reserve(4096);
            let read = self.stream.read_buf(&mut self.buffer).await;
            match read {
                Ok(0) | Err(_) if self.buffer.is_empty() => {
                    return Err(Exchange::Unanswered(anyhow::anyhow!(
                        "the server closed the connection"
                    )));
                }
                Ok(0) => {
                    return Err(Exchange::Broken(anyhow::anyhow!(
                        "the server closed the connection mid-answer"
                    )));
                }
                Ok(_) => {}
                Err(err) => return Err(Exchange::Broken(err.into())),
            }
        }
    }

    /// The whole answer, once the buffer holds it.
    fn parse(&self) -> anyhow::Result<Option<(Answer, bool)>> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut headers);
        let httparse::Status::Complete(head) = response.parse(&self.buffer)? else {
            return Ok(None);
        };
        let status = response.code.context("an answer without a status")?;
        let mut framing = None;
        let mut keep = true;
        for header in response.headers.iter() {
            if header.name.eq_ignore_ascii_case("content-length") {
                let length = std::str::from_utf8(header.value)?.trim().parse()?;
                framing = Some(Framing::Length(length));
            } else if header.name.eq_ignore_ascii_case("transfer-encoding")
                && header.value.eq_ignore_ascii_case(b"chunked")
            {
                framing = Some(Framing::Chunked);
            } else if header.name.eq_ignore_ascii_case("connection")
                && header.value.eq_ignore_ascii_case(b"close")
            {
                keep = false;
            }
        }
        // 1xx, 204 and 304 answers carry no body whatever their headers say.
        if status < 200 || status == 204 || status == 304 {
            framing = Some(Framing::Length(0));
        }
        // A body that ends when the connection closes would leave nothing to reuse; the
        // services always say how long their answers are.
        let framing = framing.context("an answer with neither Content-Length nor chunks")?;
        let rest = &self.buffer[head..];
        let body = match framing {
            Framing::Length(length) if rest.len() >= length => {
                Bytes::copy_from_slice(&rest[..length])
            }
            Framing::Length(_) => return Ok(None),
            Framing::Chunked => match dechunk(rest)? {
                Some(body) => body,
                None => return Ok(None),
            },
        };
        Ok(Some((Answer { status, body }, keep)))
    }
}

/// The body of a chunked answer, once `rest` holds all of it (trailers are not expected).
fn dechunk(mut rest: &[u8]) -> anyhow::Result<Option<Bytes>> {
    let mut body = Vec::new();
    loop {
        let (start, size) = match httparse::parse_chunk_size(rest)
            .map_err(|_| anyhow::anyhow!("a malformed chunk size"))?
        {
            httparse::Status::Complete(found) => found,
            httparse::Status::Partial => return Ok(None),
        };
        let size = usize::try_from(size)?;
        let end = start.checked_add(size).context("a chunk too large")?;
        // The chunk's data, then CRLF (after the last, empty chunk: the final CRLF).
        if rest.len() < end + 2 {
            return Ok(None);
        }
        if size == 0 {
            return Ok(Some(body.into()));
        }
        body.extend_from_slice(&rest[start..end]);
        rest = &rest[end + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunked_body_is_whole_only_once_its_last_chunk_came() {
        let whole = b"4\r\nWiki\r\n5\r\npedia\r\n0\r\n\r\n";
        assert_eq!(
            dechunk(whole).ok().flatten().as_deref(),
            Some(&b"Wikipedia"[..])
        );
        for cut in 0..whole.len() {
            assert!(dechunk(&whole[..cut]).is_ok_and(|b| b.is_none()), "{cut}");
        }
        assert!(dechunk(b"zz\r\n").is_err());
    }
}
