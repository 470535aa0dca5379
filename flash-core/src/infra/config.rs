//! Configuration groups shared by the services, read from the environment (or flags) by clap.
//!
//! Each service flattens the groups it needs into its own `Config`. Defaults point at loopback so
//! a developer machine needs no settings; `std::env` is read nowhere else.

use std::{path::PathBuf, time::Duration};

/// PostgreSQL connection settings.
#[derive(clap::Args, Debug, Clone)]
pub struct PgArgs {
    /// PostgreSQL URL. Every service migrates this database at start-up.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/flash"
    )]
    pub database_url: String,
    /// Pool size of one process. The sum over all processes must stay below the server's
    /// `max_connections` (100 by default).
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 10)]
    pub database_max_connections: u32,
    /// How long a request waits for a pooled connection before it is answered 503.
    #[arg(long, env = "DATABASE_ACQUIRE_TIMEOUT_MS", default_value_t = 3000)]
    pub database_acquire_timeout_ms: u64,
}

/// Redis connection settings.
#[derive(clap::Args, Debug, Clone)]
pub struct RedisArgs {
    /// Redis URL.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,
    /// Prefix of every key this deployment writes, so several deployments (or parallel test
    /// runs) can share one Redis. All services of one deployment must use the same prefix.
    #[arg(long, env = "REDIS_KEY_PREFIX", default_value = "flash:")]
    pub redis_key_prefix: String,
    /// Per-command response timeout. redis 1.x defaults to 500 ms, too short for long-polls.
    #[arg(long, env = "REDIS_RESPONSE_TIMEOUT_MS", default_value_t = 2000)]
    pub redis_response_timeout_ms: u64,
}

/// NATS / JetStream connection settings.
#[derive(clap::Args, Debug, Clone)]
pub struct NatsArgs {
    /// NATS URL (the server must run with JetStream enabled), or several separated by commas:
    /// the seeds of a NATS cluster (`nats://a:4222,nats://b:4222,nats://c:4222`). The client
    /// connects to one of them, learns the rest of the cluster from it, and moves to another
    /// node when its node goes away.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// Replicas of every stream this deployment creates: 1 on one server, 3 (or 5) on a NATS
    /// cluster, so a stream keeps its messages and its leader when a node dies. Applies when a
    /// stream is created; an existing stream keeps its own.
    #[arg(long, env = "NATS_STREAM_REPLICAS", default_value_t = 1,
          value_parser = clap::value_parser!(u8).range(1..=5))]
    pub nats_stream_replicas: u8,
    /// Prefix put before every subject (`<prefix>jobs.email`), so parallel deployments or test
    /// runs on one NATS server never see each other's messages. Empty in production.
    #[arg(long, env = "NATS_SUBJECT_PREFIX", default_value = "")]
    pub nats_subject_prefix: String,
    /// Name of the stream that holds background jobs (`jobs.payment`, `jobs.email`).
    #[arg(long, env = "NATS_JOBS_STREAM", default_value = "JOBS")]
    pub nats_jobs_stream: String,
    /// Name of the stream that queues flash-sale tickets for the workers.
    #[arg(long, env = "NATS_FLASH_STREAM", default_value = "FLASH")]
    pub nats_flash_stream: String,
    /// Most tickets the flash queue holds; beyond it publishes are refused (the front door
    /// answers 503 before that, at its own configured depth).
    #[arg(long, env = "NATS_FLASH_MAX_MESSAGES", default_value_t = 5_000_000)]
    pub nats_flash_max_messages: i64,
    /// How long a publish waits for JetStream's ack before it counts as failed.
    #[arg(long, env = "NATS_PUBLISH_TIMEOUT_MS", default_value_t = 2000)]
    pub nats_publish_timeout_ms: u64,
}

impl NatsArgs {
    /// The server URLs of [`NatsArgs::nats_url`], one per seed, blanks dropped.
    pub fn seeds(&self) -> Vec<&str> {
        self.nats_url
            .split(',')
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .collect()
    }

    /// The publish-ack timeout as a `Duration`.
    pub fn publish_timeout(&self) -> Duration {
        Duration::from_millis(self.nats_publish_timeout_ms)
    }
}

/// Settings every service needs to verify access tokens minted by member-api.
#[derive(clap::Args, Debug, Clone)]
pub struct JwtVerifyArgs {
    /// Path of the Ed25519 public key (SPKI PEM) that verifies access tokens.
    #[arg(
        long,
        env = "JWT_PUBLIC_KEY",
        default_value = ".data/keys/jwt_public.pem"
    )]
    pub jwt_public_key: PathBuf,
    /// Expected `iss` claim.
    #[arg(long, env = "JWT_ISSUER", default_value = "flash-member-api")]
    pub jwt_issuer: String,
    /// Expected `aud` claim.
    #[arg(long, env = "JWT_AUDIENCE", default_value = "flash")]
    pub jwt_audience: String,
}

/// Settings of the HTTP server and its middleware stack.
#[derive(clap::Args, Debug, Clone)]
pub struct HttpArgs {
    /// Largest request body accepted; larger ones get 413.
    #[arg(long, env = "HTTP_BODY_LIMIT_BYTES", default_value_t = 16 * 1024)]
    pub http_body_limit_bytes: usize,
    /// Longest a request may take before it is answered 503; also bounds graceful shutdown.
    #[arg(long, env = "HTTP_REQUEST_TIMEOUT_MS", default_value_t = 10_000)]
    pub http_request_timeout_ms: u64,
    /// Requests served at once; beyond it the server sheds load with 503 + Retry-After
    /// instead of queueing without bound.
    #[arg(long, env = "HTTP_MAX_IN_FLIGHT", default_value_t = 4096)]
    pub http_max_in_flight: usize,
    /// Longest a client may take to send a request's headers, and to start its next request on
    /// a kept-alive connection; then the connection is closed. Cuts off slow-header clients,
    /// which would otherwise hold a connection for ever. Keep it above the gateway's pooled
    /// connection idle time (30 s) and the waiting room's longest pause between polls (10 s).
    #[arg(long, env = "HTTP_HEADER_READ_TIMEOUT_MS", default_value_t = 40_000)]
    pub http_header_read_timeout_ms: u64,
    /// Connections open at once (at least 1); past it new ones wait in the kernel's backlog
    /// until one closes, so file descriptors and memory stay bounded however many connect.
    #[arg(long, env = "HTTP_MAX_CONNECTIONS", default_value_t = 50_000)]
    pub http_max_connections: usize,
    /// A socket bound already for the main address, used instead of binding `addr`: tests bind
    /// port 0 and keep the socket until the server takes it, so no other process can take the
    /// port in between (and services that must know each other's address up front can).
    #[arg(skip)]
    pub listener: Option<std::sync::Arc<std::net::TcpListener>>,
    /// A second address for `/readyz` and `/metrics` (and `/healthz`), kept off the public one:
    /// set, the main address answers only `/healthz` of the three, so a buyer cannot read the
    /// counters or learn which dependency is down. Unset, the main address serves all three.
    #[arg(long, env = "OPS_ADDR")]
    pub ops_addr: Option<std::net::SocketAddr>,
    /// How long shutdown waits for in-flight work after SIGTERM before exiting anyway.
    #[arg(long, env = "SHUTDOWN_GRACE_MS", default_value_t = 15_000)]
    pub shutdown_grace_ms: u64,
    /// Browser origins allowed to call this service (CORS), comma-separated; the default lets
    /// the waiting room (served by admission) and the admin console (served by catalog-api)
    /// log in to member-api on one machine.
    #[arg(
        long,
        env = "CORS_ALLOWED_ORIGINS",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:8080,http://localhost:8080,http://127.0.0.1:8081,http://localhost:8081"
    )]
    pub cors_allowed_origins: Vec<String>,
}

impl HttpArgs {
    /// The per-request timeout as a `Duration`.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.http_request_timeout_ms)
    }

    /// The shutdown grace period as a `Duration`.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }
}

/// Logging settings.
#[derive(clap::Args, Debug, Clone)]
pub struct LogArgs {
    /// `compact` for people, `json` for log shippers. Levels come from `RUST_LOG`.
    #[arg(long, env = "LOG_FORMAT", default_value = "compact")]
    pub log_format: LogFormat,
}

/// Output format of the logs.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One human-readable line per event.
    Compact,
    /// One JSON object per event.
    Json,
}
