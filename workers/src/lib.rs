//! workers: the background half of the flash sale.
//!
//! The order drain turns queued tickets into orders in batches, exactly once, and the
//! reconciler re-arms sale gates Redis lost. Any number of worker processes may run: they share
//! one durable JetStream consumer, and each sale's batches are serialised by its row lock.
//! The outbox relay publishes the jobs other services wrote to PostgreSQL; payment jobs charge
//! orders through a `PaymentProvider` (simulated by default); email jobs land in a mail folder.
//! The fulfilment scheduler moves paid orders to the buyer through a `Carrier` (simulated by
//! default) and takes returns back, restocking and refunding once.

pub mod config;
mod drain;
mod email;
mod fulfilment;
mod outbox;
mod payment;
mod progress;
mod reconciler;
mod waitlist;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use flash_core::{
    http::{Readiness, Server},
    nats::Subjects,
    redis_model::Keys,
};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

pub use config::{Config, Role};
pub use drain::{DrainOutcome, DrainSettings, Drainer};
pub use email::{Delivery, Emails};
pub use fulfilment::{Carrier, CarrierError, Fulfilment, FulfilmentSettings, SimulatedCarrier};
pub use outbox::Relay;
pub use payment::{ChargeError, PaymentProvider, Payments, SimulatedProvider};
pub use reconciler::Reconciler;
pub use waitlist::{Promoter, Promotions};

/// Pause after a failed pass, so a down dependency is not hammered.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// A started worker process: connected, migrated, its health endpoints bound.
pub struct App {
    server: Server,
    drainer: Drainer,
    drain_concurrency: u16,
    reconciler: Reconciler,
    promoter: Promoter,
    relay: Relay,
    payments: Payments<SimulatedProvider>,
    emails: Emails,
    fulfilment: Fulfilment<SimulatedCarrier>,
    fulfil_every: Duration,
    reconcile_every: Duration,
    promote_every: Duration,
    roles: Vec<Role>,
    shutdown: CancellationToken,
}

impl App {
    /// Connects to PostgreSQL and builds the app.
    ///
    /// # Errors
    /// When a dependency is unreachable or the port is taken.
    pub async fn build(config: Config, shutdown: CancellationToken) -> anyhow::Result<Self> {
        let pool = flash_core::db::connect(&config.pg).await?;
        Self::build_with(config, pool, shutdown).await
    }

    /// Builds the app on an existing pool (tests pass a per-test database).
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
        let nats = flash_core::nats::connect(&config.nats, "workers").await?;
        let js = flash_core::nats::jetstream(nats.clone(), &config.nats);
        let stream = flash_core::nats::ensure_flash_queue(&js, &config.nats).await?;
        flash_core::nats::ensure_jobs_stream(&js, &config.nats).await?;
        // The relay publishes sale events there.
        flash_core::nats::ensure_events_stream(&js, &config.nats).await?;
        let jobs = js
            .get_stream(&config.nats.nats_jobs_stream)
            .await
            .map_err(|e| anyhow::anyhow!("opening the jobs stream: {e}"))?;
        let provider = SimulatedProvider::new(
            Duration::from_millis(config.payment_latency_ms),
            config.payment_decline_rate,
            config.payment_transient_rate,
        );
        let emails = Emails::new(
            pool.clone(),
            &jobs,
            &config.nats.nats_subject_prefix,
            Delivery::from_config(config.smtp_url.as_deref(), config.mail_dir.clone())?,
            &config.mail_from,
            config.email_max_attempts,
        )
        .await?;
        let payments = Payments::new(
            pool.clone(),
            redis.clone(),
            keys.clone(),
            &jobs,
            &config.nats.nats_subject_prefix,
            provider,
            config.payment_max_attempts,
        )
        .await?;
        let relay = Relay::new(pool.clone(), js.clone(), &config.nats.nats_subject_prefix);
        let settings = DrainSettings {
            batch_size: config.drain_batch_size,
            fetch_wait: Duration::from_millis(config.drain_fetch_wait_ms),
        };
        let subjects = Subjects::new(&config.nats.nats_subject_prefix);
        let drainer = Drainer::new(
            pool.clone(),
            redis.clone(),
            keys.clone(),
            js.clone(),
            subjects,
            &stream,
            settings,
        );
        let promoter = Promoter::new(
            pool.clone(),
            redis.clone(),
            keys.clone(),
            js.clone(),
            Subjects::new(&config.nats.nats_subject_prefix),
        );
        let fulfilment = Fulfilment::new(
            pool.clone(),
            redis.clone(),
            keys.clone(),
            SimulatedCarrier::new(config.carrier_failure_rate),
            FulfilmentSettings {
                prepare_after: Duration::from_secs(config.prepare_after_secs),
                ship_after: Duration::from_secs(config.ship_after_secs),
                deliver_after: Duration::from_secs(config.deliver_after_secs),
                return_after: Duration::from_secs(config.return_after_secs),
                batch_size: config.fulfilment_batch_size,
            },
        );
        let reconciler = Reconciler::new(
            pool.clone(),
            redis.clone(),
            keys,
            stream,
            js.clone(),
            Subjects::new(&config.nats.nats_subject_prefix),
        );
        let readiness = Readiness::new(shutdown.clone())
            .with_pg(pool)
            .with_redis(redis)
            .with_nats(nats);
        let router = flash_core::http::with_middleware(
            flash_core::http::ops_router(readiness.clone(), &config.http),
            &config.http,
        );
        let server = Server::bind(config.addr, router, shutdown.clone(), &config.http)
            .await?
            .with_ops(readiness, &config.http)
            .await?;
        Ok(Self {
            server,
            drainer,
            drain_concurrency: config.drain_concurrency,
            reconciler,
            promoter,
            relay,
            payments,
            emails,
            fulfilment,
            fulfil_every: Duration::from_millis(config.fulfilment_interval_ms),
            reconcile_every: Duration::from_millis(config.reconcile_interval_ms),
            promote_every: Duration::from_millis(config.waitlist_interval_ms),
            roles: config.roles,
            shutdown,
        })
    }

    /// The bound address of the health endpoints.
    ///
    /// # Errors
    /// When the socket has no local address, which would be an OS failure.
    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.server.local_addr()
    }

    /// Runs its roles (all of them unless `WORKER_ROLES` says otherwise) until shutdown. A batch
    /// in progress is finished (committed, then acked) before the loop stops; an unacked
    /// message is redelivered to another worker.
    ///
    /// # Errors
    /// When the health server fails.
    pub async fn run(self) -> anyhow::Result<()> {
        let Self {
            server,
            drainer,
            drain_concurrency,
            reconciler,
            promoter,
            relay,
            payments,
            emails,
            fulfilment,
            fulfil_every,
            reconcile_every,
            promote_every,
            roles,
            shutdown,
        } = self;
        let runs = |role| roles.contains(&role);
        let mut tasks = Vec::new();
        if runs(Role::Drain) {
            let drainer = Arc::new(drainer);
            for _ in 0..drain_concurrency {
                let (stop, drainer) = (shutdown.clone(), Arc::clone(&drainer));
                tasks.push(tokio::spawn(async move {
                    repeat(&stop, "drain", || drainer.drain_once()).await;
                }));
            }
        }
        if runs(Role::Relay) {
            tasks.push(tokio::spawn(relay.run(shutdown.clone())));
        }
        if runs(Role::Payments) {
            let stop = shutdown.clone();
            tasks.push(tokio::spawn(async move {
                repeat(&stop, "payment", || payments.run_once()).await;
            }));
        }
        if runs(Role::Emails) {
            let stop = shutdown.clone();
            tasks.push(tokio::spawn(async move {
                repeat(&stop, "email", || emails.run_once()).await;
            }));
        }
        if runs(Role::Reconciler) {
            let stop = shutdown.clone();
            tasks.push(tokio::spawn(async move {
                every(&stop, reconcile_every, "reconcile", || {
                    reconciler.reconcile_once()
                })
                .await;
            }));
        }
        if runs(Role::Waitlist) {
            let stop = shutdown.clone();
            tasks.push(tokio::spawn(async move {
                every(&stop, promote_every, "waitlist", || promoter.promote_once()).await;
            }));
        }
        if runs(Role::Fulfilment) {
            let stop = shutdown.clone();
            tasks.push(tokio::spawn(async move {
                every(&stop, fulfil_every, "fulfilment", || {
                    fulfilment.advance_once()
                })
                .await;
            }));
        }
        let served = server.run().await;
        futures::future::join_all(tasks).await;
        served
    }
}

/// Runs `pass` back to back until `stop`; a failed pass is logged and retried after a pause.
async fn repeat<F, Fut, T>(stop: &CancellationToken, what: &'static str, mut pass: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    while !stop.is_cancelled() {
        if let Err(err) = pass().await {
            tracing::error!(error.cause_chain = ?err, error.message = %err, "{what} pass failed; retrying");
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }
}

/// Runs `pass` every `period` until `stop`; a failed pass is logged and the next tick retries.
async fn every<F, Fut, T>(
    stop: &CancellationToken,
    period: Duration,
    what: &'static str,
    mut pass: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let mut tick = tokio::time::interval(period);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => if let Err(err) = pass().await {
                tracing::error!(error.cause_chain = ?err, error.message = %err, "{what} pass failed");
            },
        }
    }
}
