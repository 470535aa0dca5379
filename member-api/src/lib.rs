//! member-api: signup, login with rotating refresh tokens, logout, profile, email verification.
//!
//! The only service holding the JWT private key: it mints access tokens that every other
//! service verifies with the public key. Logout reaches every service through the shared Redis
//! denylist (`flash_core::auth`).

mod admin;
pub mod config;
mod http;
mod limits;
mod order_history;
mod password;
mod tokens;

use std::{net::SocketAddr, sync::Arc};

use anyhow::Context;
use flash_core::{
    auth::{Authenticator, Denylist, JwtVerifier, keys::JwtSigner},
    client_address::ClientAddress,
    http::{Readiness, Server},
    nats::Subjects,
    redis_model::Keys,
};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

pub use config::Config;

/// A started (bound, connected, migrated) member-api, ready to serve.
pub struct App {
    server: Server,
    limits: Arc<limits::Limits>,
    shutdown: CancellationToken,
}

impl App {
    /// Connects to PostgreSQL and builds the app.
    ///
    /// # Errors
    /// When a dependency is unreachable, a key file is missing, or the port is taken.
    pub async fn build(config: Config, shutdown: CancellationToken) -> anyhow::Result<Self> {
        let pool = flash_core::db::connect(&config.pg).await?;
        Self::build_with(config, pool, shutdown).await
    }

    /// Builds the app on an existing pool (tests pass a per-test database). Every fallible
    /// step happens here, before serving: migrate, connect Redis and NATS, ensure the jobs
    /// stream, load keys, create the first admin, bind.
    ///
    /// # Errors
    /// As [`App::build`].
    pub async fn build_with(
        config: Config,
        pool: PgPool,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        flash_core::db::migrate(&pool).await?;
        let redis = flash_core::redis::connect(&config.redis).await?;
        let nats = flash_core::nats::connect(&config.nats, "member-api").await?;
        let jetstream = flash_core::nats::jetstream(nats.clone(), &config.nats);
        flash_core::nats::ensure_jobs_stream(&jetstream, &config.nats).await?;

        let verifier = JwtVerifier::from_args(&config.jwt)?;
        let private_pem = std::fs::read(&config.jwt_private_key).with_context(|| {
            format!(
                "reading JWT_PRIVATE_KEY {} (run scripts/stack up once to generate a dev pair)",
                config.jwt_private_key.display()
            )
        })?;
        let signer = JwtSigner::from_pem(
            &private_pem,
            &config.jwt.jwt_issuer,
            &config.jwt.jwt_audience,
            config.access_token_ttl_secs,
        )?;
        let denylist = Denylist::new(
            redis.clone(),
            Keys::new(&config.redis.redis_key_prefix),
            pool.clone(),
        );
        let passwords = password::Passwords::new(&config.argon2)?;
        if let (Some(email), Some(password)) = (&config.admin_email, &config.admin_password) {
            admin::ensure_admin(&pool, &passwords, email, password).await?;
        }
        let limits = Arc::new(limits::Limits::new(&config.limits));

        let state = http::AppState {
            db: pool.clone(),
            auth: Arc::new(Authenticator::new(verifier, denylist)),
            signer: Arc::new(signer),
            passwords,
            limits: Arc::clone(&limits),
            client_address: ClientAddress::from_args(&config.client_address)?,
            jetstream,
            subjects: Subjects::new(&config.nats.nats_subject_prefix),
            refresh_ttl: chrono::Duration::seconds(config.refresh_token_ttl_secs),
            order_history: Arc::new(order_history::OrderHistory::new(&config.order_history)?),
        };
        let readiness = Readiness::new(shutdown.clone())
            .with_pg(pool)
            .with_redis(redis)
            .with_nats(nats);
        let router = http::router(state, readiness.clone(), &config.http);
        let server = Server::bind(config.addr, router, shutdown.clone(), &config.http)
            .await?
            .with_ops(readiness, &config.http)
            .await?;
        Ok(Self {
            server,
            limits,
            shutdown,
        })
    }

    /// The bound address (tests bind port 0).
    ///
    /// # Errors
    /// When the socket has no local address, which would be an OS failure.
    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.server.local_addr()
    }

    /// Serves until the shutdown token is cancelled, then drains in-flight requests.
    ///
    /// # Errors
    /// When the server fails.
    pub async fn run(self) -> anyhow::Result<()> {
        let limits = Arc::clone(&self.limits);
        flash_core::shutdown::every(limits::FORGET_INTERVAL, self.shutdown.clone(), move || {
            limits.forget_idle()
        });
        self.server.run().await
    }
}
