//! A Redis connection of the door's own for its two hot commands, the waiting room's poll
//! (`HMGET` of the ticket) and the entry's gate script: every command goes down one socket,
//! pipelined with the others in flight, and the replies come back in the same order.
//!
//! The `redis` crate's multiplexed connection does the same, but a poll's read cost ~24,000
//! instructions in it (callgrind: its `combine` reply parser, the shared-future reconnect
//! wrapper, a response-timeout timer per command): more than the rest of the poll's handler.
//! This connection does only what those commands need, with the plain parser of
//! [`crate::resp`]. Every other Redis command of the door still goes through the crate.
//!
//! Failure behaves as with the crate: a lost, silent or deaf connection fails what is in
//! flight with an I/O error (the door answers 503), and the next request connects afresh.

use std::{collections::VecDeque, time::Duration};

use flash_core::redis_model::script::Script;
use redis::{ConnectionAddr, ErrorKind, RedisError, RedisResult};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::{mpsc, oneshot},
};

use crate::resp::{self, Reply};

/// How long connecting may take before the requests waiting for it fail.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Handle to the connection; cheap to clone. The connection's task ends when the last handle
/// is dropped.
#[derive(Clone)]
pub(crate) struct Pipelined {
    requests: mpsc::UnboundedSender<Request>,
}

/// One command on its way, and where its reply goes.
struct Request {
    command: Vec<u8>,
    reply: oneshot::Sender<RedisResult<Reply>>,
}

/// Where and how to connect.
struct Target {
    host: String,
    port: u16,
    username: Option<String>,
    password: Option<String>,
    db: i64,
    /// `CLIENT SETNAME`: tells this connection apart in `CLIENT LIST`.
    name: String,
    /// A connection with requests waiting and no reply for this long is given up.
    response_timeout: Duration,
}

impl Pipelined {
    /// A connection to the Redis at `url`, made when the first request comes; `None` when the
    /// URL names a Redis Cluster or a Unix-socket server (or a TLS one, were the crate built
    /// with TLS), which this connection does not speak: the caller keeps using the crate's
    /// connection then.
    ///
    /// # Errors
    /// When the URL is not a Redis URL.
    pub(crate) fn start(url: &str, response_timeout: Duration) -> RedisResult<Option<Self>> {
        if url.starts_with(flash_core::redis::CLUSTER_SCHEME) {
            return Ok(None);
        }
        let client = redis::Client::open(url)?;
        let info = client.get_connection_info();
        let ConnectionAddr::Tcp(host, port) = info.addr() else {
            return Ok(None);
        };
        let settings = info.redis_settings();
        let target = Target {
            host: host.clone(),
            port: *port,
            username: settings.username().map(str::to_owned),
            password: settings.password().map(str::to_owned),
            db: settings.db(),
            name: format!("flash-admission-polls-{}", uuid::Uuid::new_v4().simple()),
            response_timeout,
        };
        Ok(Some(Self::spawn(target)))
    }

    fn spawn(target: Target) -> Self {
        let (requests, incoming) = mpsc::unbounded_channel();
        tokio::spawn(drive(target, incoming));
        Self { requests }
    }

    /// Sends one command and waits for its reply. An error reply from Redis is an `Ok` with
    /// [`Reply::Error`]; `Err` means the connection failed.
    pub(crate) async fn query(&self, args: &[&[u8]]) -> RedisResult<Reply> {
        let mut command = Vec::with_capacity(args.iter().map(|a| a.len() + 16).sum());
        resp::encode(&mut command, args);
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request { command, reply })
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    /// `HMGET key fields...`: each field's text, `None` where the field (or the hash) is
    /// missing.
    pub(crate) async fn hmget<const N: usize>(
        &self,
        key: &str,
        fields: [&str; N],
    ) -> RedisResult<[Option<String>; N]> {
        let mut args: Vec<&[u8]> = Vec::with_capacity(N + 2);
        args.extend([b"HMGET".as_slice(), key.as_bytes()]);
        args.extend(fields.iter().map(|f| f.as_bytes()));
        let values = array(self.query(&args).await?)?;
        if values.len() != N {
            return Err(unexpected(&Reply::Array(values)));
        }
        let mut out = [const { None }; N];
        for (slot, value) in out.iter_mut().zip(values) {
            *slot = match value {
                Reply::Nil => None,
                Reply::Bulk(bytes) => Some(text(bytes)?),
                other => return Err(unexpected(&other)),
            };
        }
        Ok(out)
    }
}

impl Pipelined {
    /// Runs `script` with `keys` and `args` and returns its reply, one text. `EVALSHA` first;
    /// `EVAL` with the source when Redis answers `NOSCRIPT`, which also makes Redis remember
    /// it.
    pub(crate) async fn eval_text(
        &self,
        script: &Script,
        keys: &[&str],
        args: &[&str],
    ) -> RedisResult<String> {
        let count = keys.len().to_string();
        let mut command: Vec<&[u8]> = Vec::with_capacity(keys.len() + args.len() + 3);
        command.extend([
            b"EVALSHA".as_slice(),
            script.hash().as_bytes(),
            count.as_bytes(),
        ]);
        command.extend(keys.iter().chain(args).map(|a| a.as_bytes()));
        let mut reply = self.query(&command).await?;
        if matches!(&reply, Reply::Error(message) if message.starts_with("NOSCRIPT")) {
            command[0] = b"EVAL";
            command[1] = script.source().as_bytes();
            reply = self.query(&command).await?;
        }
        match reply {
            Reply::Bulk(bytes) => text(bytes),
            Reply::Status(text) => Ok(text),
            Reply::Error(message) => Err(refused(message)),
            other => Err(unexpected(&other)),
        }
    }
}

/// The items of an array reply; an error reply becomes the error it is.
fn array(reply: Reply) -> RedisResult<Vec<Reply>> {
    match reply {
        Reply::Array(items) => Ok(items),
        Reply::Error(message) => Err(refused(message)),
        other => Err(unexpected(&other)),
    }
}

/// An error reply as the error it is.
fn refused(message: String) -> RedisError {
    RedisError::from((
        ErrorKind::Extension,
        "Redis answered with an error",
        message,
    ))
}

fn text(bytes: Vec<u8>) -> RedisResult<String> {
    String::from_utf8(bytes)
        .map_err(|_| RedisError::from((ErrorKind::Parse, "Redis gave text that is not UTF-8")))
}

fn unexpected(reply: &Reply) -> RedisError {
    RedisError::from((
        ErrorKind::UnexpectedReturnType,
        "Redis answered with something else than values",
        format!("{reply:?}"),
    ))
}

fn gone() -> RedisError {
    io_error("the door's Redis connection stopped")
}

fn io_error(what: &'static str) -> RedisError {
    RedisError::from((ErrorKind::Io, what))
}

/// Connects when requests come, serves them until the connection fails, and then fails what
/// was in flight; the next request connects again. Ends when every handle is gone.
async fn drive(target: Target, mut incoming: mpsc::UnboundedReceiver<Request>) {
    while let Some(first) = incoming.recv().await {
        let mut waiting = VecDeque::new();
        let failure = match connect(&target).await {
            Ok(stream) => match serve(stream, &target, first, &mut incoming, &mut waiting).await {
                Some(failure) => failure,
                None => return,
            },
            Err(err) => {
                fail(first.reply, &err);
                err
            }
        };
        tracing::warn!(error = %failure, "the door's Redis connection for polls failed");
        for reply in waiting.drain(..) {
            fail(reply, &failure);
        }
        // What queued up meanwhile would wait on a connection that is not there yet: fail it
        // now rather than after another connect, so a Redis outage answers fast.
        while let Ok(request) = incoming.try_recv() {
            fail(request.reply, &failure);
        }
    }
}

fn fail(reply: oneshot::Sender<RedisResult<Reply>>, err: &RedisError) {
    let _ = reply.send(Err(err.clone()));
}

/// Opens the socket and says who we are: `AUTH` and `SELECT` as the URL asks, and a name.
async fn connect(target: &Target) -> RedisResult<TcpStream> {
    let mut stream = tokio::time::timeout(
        CONNECT_TIMEOUT,
        TcpStream::connect((target.host.as_str(), target.port)),
    )
    .await
    .map_err(|_| io_error("connecting to Redis timed out"))??;
    stream.set_nodelay(true)?;
    let mut hello = Vec::new();
    let mut replies = 0;
    if let Some(password) = &target.password {
        match &target.username {
            Some(user) => {
                resp::encode(&mut hello, &[b"AUTH", user.as_bytes(), password.as_bytes()])
            }
            None => resp::encode(&mut hello, &[b"AUTH", password.as_bytes()]),
        }
        replies += 1;
    }
    if target.db != 0 {
        resp::encode(&mut hello, &[b"SELECT", target.db.to_string().as_bytes()]);
        replies += 1;
    }
    resp::encode(&mut hello, &[b"CLIENT", b"SETNAME", target.name.as_bytes()]);
    replies += 1;
    stream.write_all(&hello).await?;
    let mut input = Vec::new();
    let answers = tokio::time::timeout(target.response_timeout, async {
        let mut answers = Vec::new();
        while answers.len() < replies {
            if stream.read_buf(&mut input).await? == 0 {
                return Err(io_error("Redis closed the connection while it was set up"));
            }
            while let Some((reply, used)) = resp::parse(&input).map_err(malformed)? {
                input.drain(..used);
                answers.push(reply);
            }
        }
        Ok(answers)
    })
    .await
    .map_err(|_| io_error("Redis did not answer while the connection was set up"))??;
    if let Some(Reply::Error(message)) = answers.iter().find(|a| matches!(a, Reply::Error(_))) {
        return Err(RedisError::from((
            ErrorKind::AuthenticationFailed,
            "Redis refused the connection's set-up",
            message.clone(),
        )));
    }
    Ok(stream)
}

fn malformed(err: resp::Malformed) -> RedisError {
    RedisError::from((
        ErrorKind::Parse,
        "Redis sent a malformed reply",
        err.to_string(),
    ))
}

type Waiting = VecDeque<oneshot::Sender<RedisResult<Reply>>>;

/// Queues `request`'s command for the next write and its reply slot behind the others.
fn take(request: Request, output: &mut Vec<u8>, waiting: &mut Waiting) {
    output.extend_from_slice(&request.command);
    waiting.push_back(request.reply);
}

/// Writes requests as they come and hands replies back in order, until the connection fails
/// (the failure) or every handle is gone (`None`). Requests that came together go out in one
/// write.
async fn serve(
    stream: TcpStream,
    target: &Target,
    first: Request,
    incoming: &mut mpsc::UnboundedReceiver<Request>,
    waiting: &mut Waiting,
) -> Option<RedisError> {
    let (mut reader, mut writer) = stream.into_split();
    let mut output = Vec::with_capacity(4096);
    let mut input = Vec::with_capacity(16 * 1024);
    take(first, &mut output, waiting);
    // Checked each period: requests waiting and not one reply since the last check.
    let period = target.response_timeout;
    let mut check = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut answered = false;
    loop {
        if !output.is_empty() {
            // Let the tasks that are ready run first: under load they add their commands to
            // this write, and fewer, fuller writes save system calls here and in Redis.
            tokio::task::yield_now().await;
            while let Ok(request) = incoming.try_recv() {
                take(request, &mut output, waiting);
            }
            // A Redis that stops reading would hold this write, and the check below, forever.
            match tokio::time::timeout(period, writer.write_all(&output)).await {
                Ok(Ok(())) => output.clear(),
                Ok(Err(err)) => return Some(err.into()),
                Err(_) => return Some(io_error("Redis stopped reading")),
            }
        }
        tokio::select! {
            biased;
            read = reader.read_buf(&mut input) => {
                match read {
                    Ok(0) => return Some(io_error("Redis closed the connection")),
                    Ok(_) => {}
                    Err(err) => return Some(err.into()),
                }
                let mut used = 0;
                loop {
                    match resp::parse(&input[used..]) {
                        Ok(Some((reply, len))) => {
                            used += len;
                            let Some(to) = waiting.pop_front() else {
                                return Some(io_error("Redis sent a reply nobody asked for"));
                            };
                            answered = true;
                            let _ = to.send(Ok(reply));
                        }
                        Ok(None) => break,
                        Err(err) => return Some(malformed(err)),
                    }
                }
                input.drain(..used);
            }
            request = incoming.recv() => match request {
                Some(request) => {
                    take(request, &mut output, waiting);
                    while let Ok(request) = incoming.try_recv() {
                        take(request, &mut output, waiting);
                    }
                }
                None => return None,
            },
            _ = check.tick() => {
                if !waiting.is_empty() && !answered {
                    return Some(io_error("Redis stopped answering"));
                }
                answered = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use flash_core::testing::Isolation;
    use redis::AsyncCommands;

    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(2);

    fn start(iso: &Isolation) -> Pipelined {
        Pipelined::start(&iso.redis.redis_url, TIMEOUT)
            .unwrap()
            .expect("a TCP Redis URL")
    }

    async fn plain(iso: &Isolation) -> redis::aio::MultiplexedConnection {
        redis::Client::open(iso.redis.redis_url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    /// The id Redis gives the connection named `name`, if it is connected.
    async fn client_id(conn: &mut redis::aio::MultiplexedConnection, name: &str) -> Option<u64> {
        let list: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query_async(conn)
            .await
            .unwrap();
        list.lines()
            .find(|line| line.split(' ').any(|f| f == format!("name={name}")))
            .and_then(|line| line.split(' ').find_map(|f| f.strip_prefix("id=")))
            .and_then(|id| id.parse().ok())
    }

    #[tokio::test]
    async fn many_reads_in_flight_each_get_their_own_reply() {
        let iso = Isolation::new();
        let mut conn = plain(&iso).await;
        let key = |i: usize| format!("{}pipelined:{i}", iso.redis.redis_key_prefix);
        for i in 0..300 {
            let _: () = conn.hset(key(i), "n", i).await.unwrap();
        }
        let reads = start(&iso);
        let answers = futures::future::join_all((0..300).map(|i| {
            let (reads, key) = (reads.clone(), key(i));
            async move {
                reads
                    .query(&[b"HMGET", key.as_bytes(), b"n", b"absent"])
                    .await
            }
        }))
        .await;
        for (i, answer) in answers.into_iter().enumerate() {
            assert_eq!(
                answer.unwrap(),
                Reply::Array(vec![Reply::Bulk(i.to_string().into_bytes()), Reply::Nil])
            );
        }
        iso.cleanup().await;
    }

    #[tokio::test]
    async fn an_error_reply_is_an_answer_and_the_connection_goes_on() {
        let iso = Isolation::new();
        let mut conn = plain(&iso).await;
        let key = format!("{}pipelined:string", iso.redis.redis_key_prefix);
        let _: () = conn.set(&key, "not a hash").await.unwrap();
        let reads = start(&iso);
        let answer = reads
            .query(&[b"HMGET", key.as_bytes(), b"f"])
            .await
            .unwrap();
        assert!(
            matches!(answer, Reply::Error(ref e) if e.starts_with("WRONGTYPE")),
            "{answer:?}"
        );
        assert_eq!(
            reads.query(&[b"PING"]).await.unwrap(),
            Reply::Status("PONG".into())
        );
        iso.cleanup().await;
    }

    #[tokio::test]
    async fn a_script_redis_does_not_know_is_sent_once_then_run_by_its_hash() {
        let iso = Isolation::new();
        let mut conn = plain(&iso).await;
        let script = &*flash_core::redis_model::script::ENTER;
        let _: () = redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query_async(&mut conn)
            .await
            .unwrap();
        let key = format!("{}pipelined:entry", iso.redis.redis_key_prefix);
        let keys = [key.as_str(); 9];
        let args = ["t", "m", "0", "0", "0"];
        let reads = start(&iso);
        for _ in 1..=2 {
            // No sale's metadata under the key: the gate is not armed.
            let reply = reads.eval_text(script, &keys, &args).await.unwrap();
            assert_eq!(reply, "unknown");
        }
        let known: Vec<bool> = redis::cmd("SCRIPT")
            .arg("EXISTS")
            .arg(script.hash())
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(known, [true]);
        // The member index is a hash: the script's GET of it fails.
        let _: () = redis::cmd("HSET")
            .arg(&key)
            .arg("f")
            .arg(1)
            .query_async(&mut conn)
            .await
            .unwrap();
        let err = reads.eval_text(script, &keys, &args).await.unwrap_err();
        assert!(err.to_string().contains("WRONGTYPE"), "{err}");
        iso.cleanup().await;
    }

    #[tokio::test]
    async fn a_killed_connection_is_made_again_for_the_next_read() {
        let iso = Isolation::new();
        let mut conn = plain(&iso).await;
        let reads = start(&iso);
        let name = target_name(&reads, &mut conn).await;
        let first = client_id(&mut conn, &name).await.expect("connected");
        let _: () = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("ID")
            .arg(first)
            .query_async(&mut conn)
            .await
            .unwrap();
        // The read in flight when the socket closed may fail; the connection comes back.
        let mut answered = false;
        for _ in 0..3 {
            if reads.query(&[b"PING"]).await.is_ok() {
                answered = true;
                break;
            }
        }
        assert!(answered, "no answer after the connection was killed");
        let second = client_id(&mut conn, &name).await.expect("connected again");
        assert_ne!(first, second);
        iso.cleanup().await;
    }

    #[tokio::test]
    async fn an_unreachable_redis_fails_the_read() {
        let (_refusing, addr) = flash_core::testing::refusing_port();
        let reads = Pipelined::start(&format!("redis://{addr}"), TIMEOUT)
            .unwrap()
            .unwrap();
        let err = reads.query(&[b"PING"]).await.unwrap_err();
        assert!(err.is_io_error(), "{err:?}");
    }

    /// A connection to a stand-in server on a free port that hands the one connection it
    /// accepts to `serve`, with a short response timeout.
    async fn stand_in<F, Fut>(serve: F) -> Pipelined
    where
        F: FnOnce(tokio::net::TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            if let Ok((socket, _)) = listener.accept().await {
                serve(socket).await;
            }
        });
        let url = format!("redis://127.0.0.1:{port}");
        Pipelined::start(&url, Duration::from_millis(200))
            .unwrap()
            .unwrap()
    }

    #[tokio::test]
    async fn a_redis_that_stops_answering_fails_the_reads_in_flight() {
        // Reads what it is sent, and never answers.
        let reads = stand_in(|mut socket| async move {
            let mut sink = Vec::new();
            while socket.read_buf(&mut sink).await.is_ok_and(|n| n > 0) {}
        })
        .await;
        let err = reads.query(&[b"PING"]).await.unwrap_err();
        assert!(err.is_io_error(), "{err:?}");
    }

    #[tokio::test]
    async fn a_redis_that_stops_reading_fails_the_write() {
        // Never reads: a large enough command fills the buffers.
        let reads = stand_in(|socket| async move {
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(socket);
        })
        .await;
        let big = vec![b'x'; 64 << 20];
        let command: [&[u8]; 3] = [b"SET", b"k", &big];
        let answer = tokio::time::timeout(Duration::from_secs(10), reads.query(&command));
        let err = answer.await.expect("the write was given up").unwrap_err();
        assert!(err.is_io_error(), "{err:?}");
    }

    #[test]
    fn a_unix_socket_server_is_left_to_the_crate() {
        let url = "redis+unix:///tmp/redis.sock";
        assert!(Pipelined::start(url, TIMEOUT).unwrap().is_none());
        assert!(Pipelined::start("not a url", TIMEOUT).is_err());
    }

    /// Makes the connection (its first read) and finds the name it gave itself.
    async fn target_name(
        reads: &Pipelined,
        conn: &mut redis::aio::MultiplexedConnection,
    ) -> String {
        let Reply::Bulk(name) = reads.query(&[b"CLIENT", b"GETNAME"]).await.unwrap() else {
            panic!("the connection has a name");
        };
        let name = String::from_utf8(name).unwrap();
        assert!(client_id(conn, &name).await.is_some());
        name
    }
}
