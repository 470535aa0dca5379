//! member-api settings: environment first, loopback defaults.

use std::{net::SocketAddr, path::PathBuf};

use flash_core::{
    client_address::ClientAddressArgs,
    config::{HttpArgs, JwtVerifyArgs, LogArgs, NatsArgs, PgArgs, RedisArgs},
};
use secrecy::SecretString;

/// Everything member-api reads at start-up.
#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "member-api",
    about = "Members: signup, login, token refresh and logout, profile"
)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "MEMBER_ADDR", default_value = "127.0.0.1:8082")]
    pub addr: SocketAddr,
    /// PostgreSQL settings.
    #[command(flatten)]
    pub pg: PgArgs,
    /// Redis settings (the access-token denylist).
    #[command(flatten)]
    pub redis: RedisArgs,
    /// NATS settings (email jobs).
    #[command(flatten)]
    pub nats: NatsArgs,
    /// Public key and claims every service verifies with.
    #[command(flatten)]
    pub jwt: JwtVerifyArgs,
    /// HTTP limits.
    #[command(flatten)]
    pub http: HttpArgs,

    /// Who the client is behind the door or a balancer (`CLIENT_ADDRESS_HEADER`,
    /// `TRUSTED_PROXIES`): the login limit per address counts buyers, not the door.
    #[command(flatten)]
    pub client_address: ClientAddressArgs,
    /// Log format.
    #[command(flatten)]
    pub log: LogArgs,
    /// Path of the Ed25519 private key (PKCS#8 PEM) that signs access tokens. Only member-api
    /// reads it.
    #[arg(
        long,
        env = "JWT_PRIVATE_KEY",
        default_value = ".data/keys/jwt_private.pem"
    )]
    pub jwt_private_key: PathBuf,
    /// Lifetime of an access token. Short, because a stolen one works until it expires or
    /// its owner logs out.
    #[arg(long, env = "ACCESS_TOKEN_TTL_SECS", default_value_t = 900)]
    pub access_token_ttl_secs: i64,
    /// Lifetime of a refresh token (each refresh issues a new one).
    #[arg(long, env = "REFRESH_TOKEN_TTL_SECS", default_value_t = 30 * 24 * 3600)]
    pub refresh_token_ttl_secs: i64,
    /// Email of the first admin, created at start-up when absent.
    #[arg(long, env = "ADMIN_EMAIL")]
    pub admin_email: Option<String>,
    /// Password of the first admin (only used when the admin is created).
    #[arg(long, env = "ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<SecretString>,
    /// Password hashing parameters.
    #[command(flatten)]
    pub argon2: Argon2Args,
    /// Login and email rate limits.
    #[command(flatten)]
    pub limits: LimitArgs,
    /// Where and how the profile fetches the member's orders.
    #[command(flatten)]
    pub order_history: OrderHistoryArgs,
}

/// The call to catalog-api for the profile's order history, and its circuit breaker.
#[derive(clap::Args, Debug, Clone)]
pub struct OrderHistoryArgs {
    /// catalog-api base URL.
    #[arg(long, env = "CATALOG_URL", default_value = "http://127.0.0.1:8081")]
    pub catalog_url: String,
    /// Orders shown in the profile.
    #[arg(long, env = "ORDER_HISTORY_LIMIT", default_value_t = 10)]
    pub order_history_limit: u32,
    /// A call slower than this counts as failed; the profile never waits longer.
    #[arg(long, env = "ORDER_HISTORY_TIMEOUT_MS", default_value_t = 500)]
    pub order_history_timeout_ms: u64,
    /// Calls the breaker remembers.
    #[arg(long, env = "BREAKER_WINDOW", default_value_t = 10)]
    pub breaker_window: usize,
    /// Failures among the remembered calls that open the breaker.
    #[arg(long, env = "BREAKER_FAILURES", default_value_t = 5)]
    pub breaker_failures: usize,
    /// How long an open breaker refuses calls before letting one through.
    #[arg(long, env = "BREAKER_COOLDOWN_MS", default_value_t = 5000)]
    pub breaker_cooldown_ms: u64,
}

/// Argon2id cost. The defaults are OWASP's first recommendation (19 MiB, 2 passes, 1 lane):
/// about 15 ms per hash on one core of the reference machine, which keeps an offline attack on
/// a leaked hash slow while letting one core serve ~70 logins/s.
#[derive(clap::Args, Debug, Clone)]
pub struct Argon2Args {
    /// Memory per hash, in KiB.
    #[arg(long, env = "ARGON2_MEMORY_KIB", default_value_t = 19 * 1024)]
    pub argon2_memory_kib: u32,
    /// Passes over the memory.
    #[arg(long, env = "ARGON2_ITERATIONS", default_value_t = 2)]
    pub argon2_iterations: u32,
    /// Lanes.
    #[arg(long, env = "ARGON2_PARALLELISM", default_value_t = 1)]
    pub argon2_parallelism: u32,
    /// Hashes computed at once; more wait. Bounds memory (each hash holds ARGON2_MEMORY_KIB)
    /// and keeps a login flood from starving every other request of CPU.
    #[arg(long, env = "ARGON2_MAX_CONCURRENT", default_value_t = 4)]
    pub argon2_max_concurrent: usize,
}

/// Rate limits that slow down password guessing and email spam.
#[derive(clap::Args, Debug, Clone)]
pub struct LimitArgs {
    /// Login attempts per minute for one email address (burst of the same size).
    #[arg(
        long,
        env = "LOGIN_ATTEMPTS_PER_MINUTE_PER_EMAIL",
        default_value_t = 10
    )]
    pub login_per_minute_per_email: u32,
    /// Login attempts per minute from one client address.
    #[arg(long, env = "LOGIN_ATTEMPTS_PER_MINUTE_PER_IP", default_value_t = 120)]
    pub login_per_minute_per_ip: u32,
    /// Verification emails one member may request per hour.
    #[arg(long, env = "VERIFICATION_EMAILS_PER_HOUR", default_value_t = 5)]
    pub verification_emails_per_hour: u32,
}
