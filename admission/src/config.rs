//! admission settings: environment first, loopback defaults.

use std::{net::SocketAddr, time::Duration};

use flash_core::{
    client_address::ClientAddressArgs,
    config::{HttpArgs, JwtVerifyArgs, LogArgs, NatsArgs, PgArgs, RedisArgs},
};

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
    /// Where the gateway routes forward to, and its limits.
    #[command(flatten)]
    pub gateway: GatewayArgs,
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
    /// Verified access tokens remembered (0: verify every request). A buyer polls with one
    /// token many times; a remembered token skips the EdDSA check, and the denylist's pub/sub
    /// feed tells of its logout, so it is asked about in Redis again only while the feed is
    /// down (then at most every 500 ms). Either way logout takes effect within a second.
    #[arg(long, env = "TOKEN_CACHE_SIZE", default_value_t = 200_000)]
    pub token_cache_size: usize,
    /// Longest `GET /tickets/{id}?wait=` may hold a request, in seconds.
    #[arg(long, env = "LONG_POLL_MAX_SECS", default_value_t = 25)]
    pub long_poll_max_secs: u64,
    /// Long-polls waiting at once in this process. They hold no in-flight place (entries keep
    /// theirs) and outlast the request timeout by up to `LONG_POLL_MAX_SECS`; past this bound a
    /// poll answers at once instead of waiting.
    #[arg(long, env = "LONG_POLLS_MAX", default_value_t = 50_000)]
    pub long_polls_max: usize,
    /// Polls of tickets that do not exist one member may make per minute; past it their polls
    /// get 429 until the quota refills, without the Redis and PostgreSQL lookups a miss costs.
    #[arg(long, env = "POLL_MISSES_PER_MEMBER_PER_MIN", default_value_t = 30)]
    pub poll_misses_per_member_per_min: u32,
    /// Long-polls one member may hold waiting at once (a few tabs); past it a poll answers at
    /// once instead of waiting.
    #[arg(long, env = "LONG_POLLS_PER_MEMBER", default_value_t = 4)]
    pub long_polls_per_member: usize,
    /// How often this process looks for started sales whose pre-queue is to be drawn and
    /// released (one process releases each sale).
    #[arg(long, env = "DRAW_INTERVAL_MS", default_value_t = 200)]
    pub draw_interval_ms: u64,
    /// Entries per client address per minute, across members (bot friction: one machine
    /// entering many accounts); 0 (the default) = no limit. Mind shared addresses (offices,
    /// carrier NAT) before setting it low.
    #[arg(long, env = "ENTRY_RATE_PER_ADDRESS_PER_MIN", default_value_t = 0)]
    pub entry_rate_per_address_per_min: u32,
    /// Who the client is behind a balancer (`CLIENT_ADDRESS_HEADER`, `TRUSTED_PROXIES`).
    #[command(flatten)]
    pub client_address: ClientAddressArgs,
}

/// The gateway: the door also forwards member-api's and catalog-api's routes, so a browser or
/// app talks to one origin (and the waiting room logs in without cross-origin calls).
#[derive(clap::Args, Debug, Clone)]
pub struct GatewayArgs {
    /// member-api as this process reaches it (`http://host:port`): `/members*` and `/auth/*`
    /// are forwarded there.
    #[arg(
        long,
        env = "MEMBER_UPSTREAM_URL",
        default_value = "http://127.0.0.1:8082"
    )]
    pub member_upstream_url: String,
    /// catalog-api as this process reaches it (`http://host:port`): `/products*`,
    /// `/flash-sales*`, `/orders*` and `/cart*` are forwarded there.
    #[arg(
        long,
        env = "CATALOG_UPSTREAM_URL",
        default_value = "http://127.0.0.1:8081"
    )]
    pub catalog_upstream_url: String,
    /// Longest wait for a new connection to an upstream; a service that is down is then a
    /// quick 502 rather than a hang.
    #[arg(long, env = "GATEWAY_CONNECT_TIMEOUT_MS", default_value_t = 1_000)]
    pub gateway_connect_timeout_ms: u64,
    /// Longest wait for an upstream's response head (the request body included) before the
    /// answer is 504. Keep it below `HTTP_REQUEST_TIMEOUT_MS`, or a slow upstream becomes the
    /// door's own 503 instead.
    #[arg(long, env = "GATEWAY_UPSTREAM_TIMEOUT_MS", default_value_t = 8_000)]
    pub gateway_upstream_timeout_ms: u64,
    /// Forwarded requests in flight at once (at least 1); beyond it the gateway answers 503
    /// at once, so slow upstreams cannot take the door's `HTTP_MAX_IN_FLIGHT` slots from the
    /// flash-sale routes.
    #[arg(long, env = "GATEWAY_MAX_IN_FLIGHT", default_value_t = 1_024)]
    pub gateway_max_in_flight: usize,
    /// Requests to `/auth/*` per client address per minute (0 = no limit); low, to slow down
    /// password guessing.
    #[arg(
        long,
        env = "GATEWAY_AUTH_RATE_PER_ADDRESS_PER_MIN",
        default_value_t = 60
    )]
    pub gateway_auth_rate_per_address_per_min: u32,
    /// Requests to `/members*` per client address per minute (0 = no limit); signups are a
    /// bot's target too.
    #[arg(
        long,
        env = "GATEWAY_MEMBERS_RATE_PER_ADDRESS_PER_MIN",
        default_value_t = 300
    )]
    pub gateway_members_rate_per_address_per_min: u32,
    /// Requests to catalog-api's routes per client address per minute (0 = no limit);
    /// generous, since browsing makes many small reads. Mind shared addresses (offices,
    /// carrier NAT) before lowering any of these.
    #[arg(
        long,
        env = "GATEWAY_CATALOG_RATE_PER_ADDRESS_PER_MIN",
        default_value_t = 1_200
    )]
    pub gateway_catalog_rate_per_address_per_min: u32,
}

impl GatewayArgs {
    /// The connect timeout as a `Duration`.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.gateway_connect_timeout_ms)
    }

    /// The upstream response timeout as a `Duration`.
    pub fn upstream_timeout(&self) -> Duration {
        Duration::from_millis(self.gateway_upstream_timeout_ms)
    }
}
