//! catalog-api settings: environment first, loopback defaults.

use std::net::SocketAddr;

use flash_core::config::{HttpArgs, JwtVerifyArgs, LogArgs, PgArgs, RedisArgs};

/// Everything catalog-api reads at start-up.
#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "catalog-api",
    about = "Products, flash-sale definitions, regular orders"
)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "CATALOG_ADDR", default_value = "127.0.0.1:8081")]
    pub addr: SocketAddr,
    /// PostgreSQL settings.
    #[command(flatten)]
    pub pg: PgArgs,
    /// Redis settings (product cache, sale gates, token denylist).
    #[command(flatten)]
    pub redis: RedisArgs,
    /// Public key and claims to verify access tokens with.
    #[command(flatten)]
    pub jwt: JwtVerifyArgs,
    /// HTTP limits.
    #[command(flatten)]
    pub http: HttpArgs,
    /// Log format.
    #[command(flatten)]
    pub log: LogArgs,
    /// How long a cached product lives without being read from PostgreSQL again. Writes
    /// replace the entry at once; the TTL only bounds what a Redis outage during a write could
    /// leave behind.
    #[arg(long, env = "PRODUCT_CACHE_TTL_SECS", default_value_t = 300)]
    pub product_cache_ttl_secs: u64,
    /// member-api's URL as a browser reaches it: the admin console logs in there.
    #[arg(
        long,
        env = "MEMBER_PUBLIC_URL",
        default_value = "http://127.0.0.1:8082"
    )]
    pub member_public_url: String,
    /// Days after delivery during which a buyer may return an order.
    #[arg(long, env = "RETURN_WINDOW_DAYS", default_value_t = 7)]
    pub return_window_days: u32,
}
