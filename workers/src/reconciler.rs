//! The reconciler: re-arms the Redis gate of every live sale that Redis lost.
//!
//! Redis keeps nothing on disk here, so after a restart or flush the door finds no gate and
//! answers 503. The reconciler arms it again from PostgreSQL's `quantity_left` minus the
//! tickets still waiting in the queue (they were admitted but not yet drained), with `SET NX`
//! so it never undoes admissions made meanwhile. Counting a ticket that is being drained both
//! in `quantity_left` and in the queue only under-admits, never over-admits.
//!
//! Each pass also announces the sales whose start or end time has passed (the `started` and
//! `ended` sale events): nothing else notices a time passing. The announcement is marked on
//! the sale row in the same transaction as its outbox entry, so it goes out once however many
//! worker processes reconcile.

use anyhow::Context;
use async_nats::jetstream;
use flash_core::{
    nats::Subjects,
    redis_model::Keys,
    redis_model::sale_gate::{self, Arm, SaleSettings},
    sale_events::{self, SaleEvent},
};
use futures::StreamExt;
use redis::aio::ConnectionManager;
use sqlx::PgPool;
use uuid::Uuid;

/// Re-arms lost gates.
pub struct Reconciler {
    db: PgPool,
    redis: ConnectionManager,
    keys: Keys,
    stream: jetstream::stream::Stream,
    subjects: Subjects,
}

#[derive(sqlx::FromRow)]
struct LiveSale {
    flash_sale_id: Uuid,
    quantity_left: i32,
    #[sqlx(flatten)]
    settings: SaleSettings,
}

impl Reconciler {
    /// A reconciler for the sales in `db`, the gates in `redis`, the queue in `stream`.
    pub fn new(
        db: PgPool,
        redis: ConnectionManager,
        keys: Keys,
        stream: jetstream::stream::Stream,
        subjects: Subjects,
    ) -> Self {
        Self {
            db,
            redis,
            keys,
            stream,
            subjects,
        }
    }

    /// One pass: arms every unarmed sale that has not ended; returns how many it armed.
    ///
    /// # Errors
    /// When PostgreSQL, Redis or NATS fail.
    pub async fn reconcile_once(&self) -> anyhow::Result<usize> {
        self.announce().await?;
        let sales: Vec<LiveSale> = sqlx::query_as(
            "select flash_sale_id, quantity_left, per_member_limit, starts_at, ends_at, cancelled_at,
                    paused_at, outflow_per_sec, waitlist_limit, prequeue_secs, released_at,
                    pow_bits, abandon_after_secs
             from flash_sales where ends_at > now()",
        )
        .fetch_all(&self.db)
        .await?;
        let mut armed = 0;
        for sale in sales {
            let mut conn = self.redis.clone();
            let present: bool = redis::cmd("EXISTS")
                .arg(self.keys.sale_gate(sale.flash_sale_id))
                .query_async(&mut conn)
                .await?;
            if present {
                continue;
            }
            let queued = self.queued(sale.flash_sale_id).await?;
            let units = if sale.settings.cancelled_at.is_some() {
                0
            } else {
                (i64::from(sale.quantity_left) - queued).max(0)
            };
            let meta = sale.settings.meta();
            sale_gate::arm(
                &self.redis,
                &self.keys,
                sale.flash_sale_id,
                units,
                &meta,
                Arm::IfAbsent,
            )
            .await?;
            tracing::warn!(sale_id = %sale.flash_sale_id, units, queued, "re-armed a sale gate Redis had lost");
            metrics::counter!("flash_workers_gates_rearmed_total").increment(1);
            armed += 1;
        }
        Ok(armed)
    }

    /// Writes the `started` and `ended` events of sales whose time has come.
    async fn announce(&self) -> anyhow::Result<()> {
        let mut tx = self.db.begin().await?;
        let started: Vec<Uuid> = sqlx::query_scalar(
            "update flash_sales set started_announced_at = now()
             where started_announced_at is null and starts_at <= now() and cancelled_at is null
             returning flash_sale_id",
        )
        .fetch_all(&mut *tx)
        .await?;
        for sale in started {
            sale_events::record(&mut tx, sale, SaleEvent::Started).await?;
        }
        let ended: Vec<Uuid> = sqlx::query_scalar(
            "update flash_sales set ended_announced_at = now()
             where ended_announced_at is null and ends_at <= now() and cancelled_at is null
             returning flash_sale_id",
        )
        .fetch_all(&mut *tx)
        .await?;
        for sale in ended {
            sale_events::record(&mut tx, sale, SaleEvent::Ended { early: false }).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Tickets of `sale` still waiting in the queue.
    async fn queued(&self, sale: Uuid) -> anyhow::Result<i64> {
        let mut subjects = self
            .stream
            .info_with_subjects(self.subjects.flash_tickets(sale))
            .await
            .context("counting queued tickets")?;
        let mut total = 0i64;
        while let Some(entry) = subjects.next().await {
            let (_, count) = entry.map_err(|e| anyhow::anyhow!("counting queued tickets: {e}"))?;
            total += i64::try_from(count).unwrap_or(i64::MAX);
        }
        Ok(total)
    }
}
