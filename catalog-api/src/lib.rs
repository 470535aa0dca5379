//! catalog-api: products, flash-sale definitions and regular orders ("standard REST shopping").
//!
//! Every non-flash purchase goes through here synchronously; admins define flash sales here,
//! which arms their Redis gates for the admission front door. Reads of orders cover flash-sale
//! orders too, which the workers write.

pub mod config;
mod http;
mod order_rules;
mod state;
mod stock;
mod validation;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use flash_core::{
    auth::{Authenticator, Denylist, JwtVerifier},
    http::{Readiness, Server},
    redis_model::{Keys, product_cache::ProductCache},
};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

pub use config::Config;

/// A started (bound, connected, migrated) catalog-api, ready to serve.
pub struct App {
    server: Server,
}

impl App {
    /// Connects to PostgreSQL and builds the app.
    ///
    /// # Errors
    /// When a dependency is unreachable, the key file is missing, or the port is taken.
    pub async fn build(config: Config, shutdown: CancellationToken) -> anyhow::Result<Self> {
        let pool = flash_core::db::connect(&config.pg).await?;
        Self::build_with(config, pool, shutdown).await
    }

    /// Builds the app on an existing pool (tests pass a per-test database): migrate, connect
    /// Redis, load the public key, bind.
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
        let keys = Keys::new(&config.redis.redis_key_prefix);
        let verifier = JwtVerifier::from_args(&config.jwt)?;
        let state = state::AppState {
            db: pool.clone(),
            redis: redis.clone(),
            keys: keys.clone(),
            auth: Arc::new(Authenticator::new(
                verifier,
                Denylist::new(redis.clone(), keys.clone(), pool.clone()),
            )),
            cache: ProductCache::new(
                redis.clone(),
                keys,
                Duration::from_secs(config.product_cache_ttl_secs),
            ),
            console: http::console_page(&config.member_public_url)?,
            return_window: chrono::TimeDelta::days(i64::from(config.return_window_days)),
        };
        let readiness = Readiness::new(shutdown.clone())
            .with_pg(pool)
            .with_redis(redis);
        let router = http::router(state, readiness.clone(), &config.http);
        let server = Server::bind(config.addr, router, shutdown, &config.http)
            .await?
            .with_ops(readiness, &config.http)
            .await?;
        Ok(Self { server })
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
        self.server.run().await
    }
}
