//! admission settings: environment first, loopback defaults.

use std::net::SocketAddr;

use flash_core::config::{HttpArgs, JwtVerifyArgs, LogArgs, NatsArgs, PgArgs, RedisArgs};

/// Everything the front door reads at start-up.
#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "admission",
    about = "The flash-sale front door: tickets and the waiting room"
)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "ADMISSION_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// PostgreSQL settings (only for answers Redis lost; never on the entry path).
    #[command(flatten)]
    pub pg: PgArgs,
    /// Redis settings (gates, tickets, denylist).
    #[command(flatten)]
    pub redis: RedisArgs,
    /// NATS settings (the flash-ticket queue).
    #[command(flatten)]
    pub nats: NatsArgs,
    /// Public key and claims to verify access tokens with.
    #[command(flatten)]
    pub jwt: JwtVerifyArgs,
    /// HTTP limits.
    #[command(flatten)]
    pub http: HttpArgs,
    /// Log format.
    #[command(flatten)]
    pub log: LogArgs,
    /// Entries per second the whole process admits (all sales, all members).
    #[arg(long, env = "ENTRY_RATE_PER_SEC", default_value_t = 50_000)]
    pub entry_rate_per_sec: u32,
    /// Entries per minute one member may make (re-entries included).
    #[arg(long, env = "ENTRY_RATE_PER_MEMBER_PER_MIN", default_value_t = 20)]
    pub entry_rate_per_member_per_min: u32,
    /// Tickets waiting in the queue beyond which new entries get 503 + Retry-After instead of
    /// growing the queue without bound.
    #[arg(long, env = "QUEUE_MAX_DEPTH", default_value_t = 1_000_000)]
    pub queue_max_depth: u64,
    /// member-api's URL as a browser reaches it: the waiting room logs in there.
    #[arg(
        long,
        env = "MEMBER_PUBLIC_URL",
        default_value = "http://127.0.0.1:8082"
    )]
    pub member_public_url: String,
    /// catalog-api's URL as a browser reaches it: the waiting room shows the sale from there.
    #[arg(
        long,
        env = "CATALOG_PUBLIC_URL",
        default_value = "http://127.0.0.1:8081"
    )]
    pub catalog_public_url: String,
    /// Verified access tokens remembered (0: verify every request). A buyer polls with one
    /// token many times; a remembered token skips the EdDSA check and re-asks the denylist at
    /// most every 500 ms, so logout still takes effect within a second.
    #[arg(long, env = "TOKEN_CACHE_SIZE", default_value_t = 200_000)]
    pub token_cache_size: usize,
    /// Longest `GET /tickets/{id}?wait=` may hold a request, in seconds.
    #[arg(long, env = "LONG_POLL_MAX_SECS", default_value_t = 25)]
    pub long_poll_max_secs: u64,
    /// How often this process looks for started sales whose pre-queue is to be drawn and
    /// released (one process releases each sale).
    #[arg(long, env = "DRAW_INTERVAL_MS", default_value_t = 200)]
    pub draw_interval_ms: u64,
    /// Entries per client address per minute, across members (bot friction: one machine
    /// entering many accounts); 0 (the default) = no limit. Mind shared addresses (offices,
    /// carrier NAT) before setting it low.
    #[arg(long, env = "ENTRY_RATE_PER_ADDRESS_PER_MIN", default_value_t = 0)]
    pub entry_rate_per_address_per_min: u32,
    /// Header a trusted balancer puts the client's address in (e.g. `x-forwarded-for`; its
    /// first entry counts); unset = the connection's peer address. Never set it when clients
    /// reach this process directly: they could claim any address.
    #[arg(long, env = "CLIENT_ADDRESS_HEADER")]
    pub client_address_header: Option<String>,
}
