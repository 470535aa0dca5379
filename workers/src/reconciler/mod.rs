//! The reconciler: brings each live sale's Redis side to PostgreSQL's.
//!
//! Redis keeps nothing on disk here, and a change may reach PostgreSQL while its Redis step
//! fails. Each pass, for every sale that has not ended:
//! - A gate Redis lost is armed again from `quantity_left` minus the tickets still waiting in
//!   the queue (admitted, not yet drained), with `SET NX` so it never undoes admissions made
//!   meanwhile. The queue is counted before `quantity_left` is read: a drain between the two
//!   reads then only under-admits, never over-admits. The sale's waiting tickets (waitlisted,
//!   pre-queued) come back with it from PostgreSQL's copy, in their order, and so does its
//!   place under its ticket-id tag (which the door reads to find a ticket's sale).
//! - Metadata is brought to the sale row field by field (`converge_meta`): a pause, a new end,
//!   a proof of work or a cancel whose Redis step failed reaches the door within a pass.
//! - A cancelled sale's gate goes to 0; a live sale's gate is set to `quantity_left` once the
//!   sale has been quiet long enough to compare them (see [`quiet`]), which returns a unit lost
//!   on its way back to the gate. A gate short because a door died between the entry script
//!   and the publish is mended by publishing the `queued` tickets it stranded instead: their
//!   buyers took those units, and may have found the tickets on the waiting room's arrival.
//!
//! Each pass also announces the sales whose start or end time has passed (the `started` and
//! `ended` sale events): nothing else notices a time passing. The announcement is marked on
//! the sale row in the same transaction as its outbox entry, so it goes out once however many
//! worker processes reconcile.

mod quiet;

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::Context;
use async_nats::jetstream;
use flash_core::redis::Redis;
use flash_core::{
    jobs::TicketMessage,
    nats::Subjects,
    redis_model,
    redis_model::sale_gate::{self, Arm, SaleSettings},
    redis_model::{Keys, tickets},
    sale_events::{self, SaleEvent},
};
use futures::StreamExt;
use sqlx::PgPool;
use uuid::Uuid;

/// Brings sales' Redis side to PostgreSQL's.
pub struct Reconciler {
    db: PgPool,
    redis: Redis,
    keys: Keys,
    stream: jetstream::stream::Stream,
    /// Publishes tickets a dead door stranded.
    js: jetstream::Context,
    subjects: Subjects,
    quiet_for: Duration,
    /// Each live sale's quiet spell so far.
    quiet: Mutex<HashMap<Uuid, quiet::Quiet>>,
}

#[derive(sqlx::FromRow)]
struct LiveSale {
    flash_sale_id: Uuid,
    #[sqlx(flatten)]
    settings: SaleSettings,
}

impl Reconciler {
    /// A reconciler for the sales in `db`, the gates in `redis`, the queue in `stream` (which
    /// it publishes to through `js`).
    pub fn new(
        db: PgPool,
        redis: Redis,
        keys: Keys,
        stream: jetstream::stream::Stream,
        js: jetstream::Context,
        subjects: Subjects,
    ) -> Self {
        Self {
            db,
            redis,
            keys,
            stream,
            js,
            subjects,
            quiet_for: quiet::QUIET_FOR,
            quiet: Mutex::default(),
        }
    }

    /// How long a sale must be quiet before its gate is compared with PostgreSQL (tests
    /// shorten it; see [`quiet::QUIET_FOR`]).
    #[must_use]
    pub fn settle_after(mut self, quiet_for: Duration) -> Self {
        self.quiet_for = quiet_for;
        self
    }

    /// One pass over every sale that has not ended; returns how many gates it armed.
    ///
    /// # Errors
    /// When PostgreSQL, Redis or NATS fail.
    pub async fn reconcile_once(&self) -> anyhow::Result<usize> {
        self.announce().await?;
        let sales: Vec<LiveSale> = sqlx::query_as(
            "select flash_sale_id, per_member_limit, starts_at, ends_at, cancelled_at,
                    paused_at, outflow_per_sec, waitlist_limit, prequeue_secs, released_at,
                    pow_bits, abandon_after_secs
             from flash_sales where ends_at > now()",
        )
        .fetch_all(&self.db)
        .await?;
        let mut armed = 0;
        let mut live = Vec::with_capacity(sales.len());
        for sale in sales {
            live.push(sale.flash_sale_id);
            if self.reconcile(&sale).await? {
                armed += 1;
            }
        }
        self.lock_quiet().retain(|sale, _| live.contains(sale));
        Ok(armed)
    }

    /// One sale: `true` when its gate had to be armed.
    async fn reconcile(&self, sale: &LiveSale) -> anyhow::Result<bool> {
        let id = sale.flash_sale_id;
        let cancelled = sale.settings.cancelled_at.is_some();
        let (gate, seq, promoting) = sale_gate::gate_reading(&self.redis, &self.keys, id).await?;
        let queued = self.queued(id).await?;
        let quantity_left = i64::from(self.quantity_left(id).await?);
        let meta = sale.settings.meta();
        let Some(gate) = gate else {
            let units = if cancelled {
                0
            } else {
                (quantity_left - queued).max(0)
            };
            sale_gate::arm(&self.redis, &self.keys, id, units, &meta, Arm::IfAbsent).await?;
            // What lost the gate lost the tag's list of sales too: without it the door finds
            // none of the sale's tickets from now on (it remembers having registered it).
            redis_model::register_tag(&self.redis, &self.keys, id).await?;
            let waiting = flash_core::waiting::of_sale(&self.db, id).await?;
            let restored = redis_model::waiting::restore(
                &self.redis,
                &self.keys,
                id,
                sale.settings.ends_at,
                &waiting,
            )
            .await?;
            tracing::warn!(sale_id = %id, units, queued, restored, "re-armed a sale gate Redis had lost");
            metrics::counter!("flash_workers_gates_rearmed_total").increment(1);
            metrics::counter!("flash_workers_waiting_restored_total").increment(restored);
            return Ok(true);
        };
        let off = sale_gate::converge_meta(&self.redis, &self.keys, id, &meta).await?;
        if off > 0 {
            tracing::warn!(sale_id = %id, fields = off, "brought a sale's Redis metadata to PostgreSQL's");
            metrics::counter!("flash_workers_meta_converged_total").increment(1);
        }
        let target = if cancelled {
            self.lock_quiet().remove(&id);
            (gate != 0).then_some(0)
        } else {
            let reading = quiet::Reading {
                gate,
                seq,
                queued,
                promoting,
                quantity_left,
            };
            let mut spells = self.lock_quiet();
            let known = spells.get(&id).copied();
            let (spell, target) = quiet::assess(known, reading, Instant::now(), self.quiet_for);
            match spell {
                Some(spell) => spells.insert(id, spell),
                None => spells.remove(&id),
            };
            target
        };
        let Some(units) = target else {
            return Ok(false);
        };
        // A gate short of PostgreSQL in a quiet sale may hold the units of tickets a dead door
        // took and never published: those are queued, and sold to the buyers who took them.
        if units > gate && self.queue_stranded(id).await? > 0 {
            self.lock_quiet().remove(&id);
            return Ok(false);
        }
        if sale_gate::correct_gate(&self.redis, &self.keys, id, gate, units).await? {
            tracing::warn!(sale_id = %id, from = gate, to = units, "set a sale gate that was off to PostgreSQL's units left");
            metrics::counter!("flash_workers_gates_corrected_total").increment(1);
            self.lock_quiet().remove(&id);
        }
        Ok(false)
    }

    /// Publishes every ticket of `sale` left `queued` and unpublished (see
    /// [`tickets::stranded`]), under its id as `Nats-Msg-Id`; returns how many.
    async fn queue_stranded(&self, sale: Uuid) -> anyhow::Result<usize> {
        let stranded = tickets::stranded(&self.redis, &self.keys, sale).await?;
        let now = chrono::Utc::now().timestamp_millis();
        for found in &stranded {
            let message = TicketMessage {
                ticket_id: found.ticket.into(),
                sale_id: sale.into(),
                member_id: found.member.into(),
                seq: found.seq,
                admitted_at_ms: now,
            };
            flash_core::nats::publish_ticket(&self.js, &self.subjects, &message, None)
                .await
                .with_context(|| format!("queueing stranded ticket {}", found.ticket))?;
            tracing::warn!(sale_id = %sale, ticket_id = %found.ticket, "queued a ticket its door took a unit for and never published");
        }
        metrics::counter!("flash_workers_stranded_queued_total").increment(stranded.len() as u64);
        Ok(stranded.len())
    }

    async fn quantity_left(&self, sale: Uuid) -> anyhow::Result<i32> {
        Ok(
            sqlx::query_scalar("select quantity_left from flash_sales where flash_sale_id = $1")
                .bind(sale)
                .fetch_one(&self.db)
                .await?,
        )
    }

    fn lock_quiet(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, quiet::Quiet>> {
        // Each use is one map operation: a panic elsewhere cannot leave it half-changed.
        self.quiet
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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
