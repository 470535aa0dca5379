//! A TCP proxy between services and a server that can take the server away from them without
//! touching it: the way tests and the chaos matrix (`loadtest chaos`) make PostgreSQL or NATS
//! unreachable, or lose the server's answers, on servers they did not start.

use std::{io, net::SocketAddr, sync::Arc, time::Duration};

use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinHandle,
};

/// What the proxy does with its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Both ways.
    Forward,
    /// What the clients send reaches the server; what the server answers is dropped (a
    /// request stored, its acknowledgement lost on the way back).
    LoseAnswers,
    /// Every open connection cut, new ones refused (accepted and closed at once).
    Cut,
}

/// Forwards every connection on its own loopback port to `upstream`.
pub struct Proxy {
    addr: SocketAddr,
    mode: Arc<watch::Sender<Mode>>,
    task: JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    ///
    /// # Errors
    /// When no port can be bound.
    pub async fn start(upstream: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let mode = Arc::new(watch::channel(Mode::Forward).0);
        let task = tokio::spawn(forward(listener, upstream, Arc::clone(&mode)));
        Ok(Self { addr, mode, task })
    }

    /// The address to connect to instead of the server's.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Cuts every open connection and refuses new ones until [`Proxy::restore`].
    pub fn cut(&self) {
        self.mode.send_replace(Mode::Cut);
    }

    /// Drops everything the server sends until [`Proxy::restore`]; what the clients send still
    /// reaches it. The connections' byte streams from the server have a gap afterwards, so a
    /// client may have to reconnect.
    pub fn lose_answers(&self) {
        self.mode.send_replace(Mode::LoseAnswers);
    }

    /// Forwards both ways again.
    pub fn restore(&self) {
        self.mode.send_replace(Mode::Forward);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.task.abort();
    }
}

async fn forward(listener: TcpListener, upstream: SocketAddr, mode: Arc<watch::Sender<Mode>>) {
    loop {
        // Out of descriptors, or a connection reset before it was taken: try again shortly.
        let Ok((client, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        if *mode.borrow() == Mode::Cut {
            continue;
        }
        let mut cut = mode.subscribe();
        let answers = mode.subscribe();
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(upstream).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            tokio::select! {
                () = pipe(client_read, server_write, None) => {}
                () = pipe(server_read, client_write, Some(answers)) => {}
                _ = cut.wait_for(|mode| *mode == Mode::Cut) => {}
            }
        });
    }
}

/// Copies `from` to `to` until either ends; with `answers`, drops what it reads while they
/// are to be lost.
async fn pipe(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    answers: Option<watch::Receiver<Mode>>,
) {
    let mut buf = vec![0; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if answers
            .as_ref()
            .is_some_and(|mode| *mode.borrow() == Mode::LoseAnswers)
        {
            continue;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on a free port.
    async fn echo() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut read, mut write) = socket.split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                });
            }
        });
        addr
    }

    async fn round_trip(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
        stream.write_all(b"ping").await?;
        let mut answer = vec![0; 4];
        stream.read_exact(&mut answer).await?;
        Ok(answer)
    }

    #[tokio::test]
    async fn a_cut_ends_open_connections_and_refuses_new_ones_until_restored() {
        let proxy = Proxy::start(echo().await).await.unwrap();
        let mut open = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut open).await.unwrap(), b"ping");

        proxy.cut();
        assert!(
            round_trip(&mut open).await.is_err(),
            "the open connection was cut"
        );
        let mut refused = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(
            round_trip(&mut refused).await.is_err(),
            "a new connection was refused"
        );

        proxy.restore();
        let mut again = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut again).await.unwrap(), b"ping");
    }

    #[tokio::test]
    async fn lost_answers_never_arrive_and_later_ones_do() {
        let proxy = Proxy::start(echo().await).await.unwrap();
        let mut open = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut open).await.unwrap(), b"ping");

        proxy.lose_answers();
        open.write_all(b"lost").await.unwrap();
        let mut answer = vec![0; 4];
        let heard = tokio::time::timeout(Duration::from_millis(300), open.read_exact(&mut answer));
        assert!(heard.await.is_err(), "the echo of a lost answer arrived");

        proxy.restore();
        assert_eq!(round_trip(&mut open).await.unwrap(), b"ping");
    }
}
