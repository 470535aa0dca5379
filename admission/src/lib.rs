//! admission: the flash-sale front door.
//!
//! `POST /sales/{id}/tickets` turns a buyer's entry into a waiting-room ticket with one Redis
//! Lua call (the sale's gate) and, when a unit was taken, one JetStream publish whose ack is
//! awaited: a 202 means the ticket is durably queued. `GET /tickets/{id}` is the waiting room's
//! poll. PostgreSQL is consulted only when Redis lost something.

pub mod config;
mod draw;
mod gate;
mod gateway;
mod http;
mod limits;
mod long_polls;
mod pipelined;
mod pow;
mod queue;
mod resp;
mod ticket_id;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use flash_core::{
    auth::{Authenticator, Denylist, DenylistFeed, JwtVerifier},
    client_address::ClientAddress,
    http::{Readiness, Server},
    nats::Subjects,
    redis_model::Keys,
};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

pub use config::Config;

/// The door's authenticator: with a token cache, it also follows the denylist's feed, so a
/// remembered token costs no Redis round trip while the feed vouches for it.
fn authenticator(
    verifier: JwtVerifier,
    denylist: Denylist,
    config: &Config,
    keys: &Keys,
    shutdown: &CancellationToken,
) -> anyhow::Result<Authenticator> {
    let auth = Authenticator::new(verifier, denylist);
    if config.token_cache_size == 0 {
        return Ok(auth);
    }
    let feed = DenylistFeed::start(&config.redis.redis_url, keys, shutdown.clone())?;
    Ok(auth.with_cache(config.token_cache_size).with_feed(feed))
}

/// A started (bound, connected, migrated) front door, ready to serve.
pub struct App {
    server: Server,
    queue: queue::Queue,
    stream: async_nats::jetstream::stream::Stream,
    limits: Arc<limits::EntryLimits>,
    poll_misses: Arc<limits::PollMisses>,
    gateway: Arc<gateway::Gateway>,
    drawer: draw::Drawer,
    draw_every: Duration,
    shutdown: CancellationToken,
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
    /// Redis and NATS, create the flash queue and its consumer if absent, bind.
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
        let nats = flash_core::nats::connect(&config.nats, "admission").await?;
        let js = flash_core::nats::jetstream(nats.clone(), &config.nats);
        let stream = flash_core::nats::ensure_flash_queue(&js, &config.nats).await?;
        let verifier = JwtVerifier::from_args(&config.jwt)?;
        let queue = queue::Queue::new(js, Subjects::new(&config.nats.nats_subject_prefix));
        let drawer = draw::Drawer::new(pool.clone(), redis.clone(), keys.clone(), queue.clone());
        let limits = Arc::new(limits::EntryLimits::new(
            config.entry_rate_per_sec,
            config.entry_rate_per_member_per_min,
            config.entry_rate_per_address_per_min,
        ));
        let poll_misses = Arc::new(limits::PollMisses::new(
            config.poll_misses_per_member_per_min,
        ));
        let client_address = ClientAddress::from_args(&config.client_address)?;
        let gateway = Arc::new(gateway::Gateway::new(
            &config.gateway,
            &config.http,
            client_address.clone(),
        )?);
        let state = http::AppState::new(http::Shared {
            db: pool.clone(),
            auth: Arc::new(authenticator(
                verifier,
                Denylist::new(redis.clone(), keys.clone(), pool.clone()),
                &config,
                &keys,
                &shutdown,
            )?),
            gate: gate::Gate::new(
                redis.clone(),
                pipelined::Pipelined::start(
                    &config.redis.redis_url,
                    Duration::from_millis(config.redis.redis_response_timeout_ms),
                )?,
                keys,
            ),
            queue: queue.clone(),
            limits: Arc::clone(&limits),
            poll_misses: Arc::clone(&poll_misses),
            queue_max_depth: config.queue_max_depth,
            long_polls: long_polls::MemberLongPolls::new(config.long_polls_per_member),
            client_address,
            waiting_room: http::waiting_room_page()?,
        });
        let readiness = Readiness::new(shutdown.clone())
            .with_pg(pool)
            .with_redis(redis)
            .with_nats(nats);
        let router = http::router(
            state,
            gateway::router(Arc::clone(&gateway)),
            readiness.clone(),
            &config.http,
            flash_core::http::LongPolls {
                route: http::LONG_POLL_ROUTE,
                max_wait: Duration::from_secs(config.long_poll_max_secs),
                max_waiting: config.long_polls_max,
            },
        );
        let server = Server::bind(config.addr, router, shutdown.clone(), &config.http)
            .await?
            .with_ops(readiness, &config.http)
            .await?;
        Ok(Self {
            server,
            queue,
            stream,
            limits,
            poll_misses,
            gateway,
            drawer,
            draw_every: Duration::from_millis(config.draw_interval_ms),
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

    /// The ops address as bound, when `OPS_ADDR` is set.
    ///
    /// # Errors
    /// As [`App::local_addr`].
    pub fn ops_addr(&self) -> anyhow::Result<Option<SocketAddr>> {
        self.server.ops_addr()
    }

    /// Serves until the shutdown token is cancelled, then lets in-flight entries finish (their
    /// 202s stay true) while new connections are refused.
    ///
    /// # Errors
    /// When the server fails.
    pub async fn run(self) -> anyhow::Result<()> {
        tokio::spawn(
            self.queue
                .clone()
                .watch_depth(self.stream, self.shutdown.clone()),
        );
        tokio::spawn(self.drawer.run(self.draw_every, self.shutdown.clone()));
        let limits = Arc::clone(&self.limits);
        flash_core::shutdown::every(limits::FORGET_INTERVAL, self.shutdown.clone(), move || {
            limits.forget_idle()
        });
        let poll_misses = Arc::clone(&self.poll_misses);
        flash_core::shutdown::every(limits::FORGET_INTERVAL, self.shutdown.clone(), move || {
            poll_misses.forget_idle()
        });
        let gateway = Arc::clone(&self.gateway);
        flash_core::shutdown::every(limits::FORGET_INTERVAL, self.shutdown.clone(), move || {
            gateway.forget_idle()
        });
        self.server.run().await
    }
}
