//! The pre-queue release: at a sale's start its pre-queue is drawn and released into the queue,
//! ahead of everyone who arrived after the start, who follow in arrival order.
//!
//! Every admission process looks for due sales a few times a second; a Redis lock lets one of
//! them release a sale, and every step can be repeated by whichever process takes over after a
//! crash:
//! 1. The seed is chosen once (`coalesce` on the sale row), so a retry draws the same order.
//! 2. The order is [`flash_core::prequeue::draw`] of the pre-queued tickets, recorded in
//!    `prequeue_draws` (`on conflict do nothing`) for audit.
//! 3. Tickets are placed in that order by one script call per chunk
//!    ([`flash_core::redis_model::prequeue`]): a unit from the gate and the next queue number
//!    (status `promoting`, in the sale's promoting set), else the waitlist, else `sold_out`. A
//!    ticket no longer `prequeued` was placed before and is skipped.
//! 4. Then the arrivals held behind the pre-queue (the backlog), first come first served; the
//!    call that empties the backlog also marks the sale released in Redis, atomically with the
//!    door's script, so from then on entries take the gate directly and none is stranded.
//! 5. Promoted tickets are published like any door entry and confirmed `queued`; one left
//!    `promoting` by a crash is published by the workers' promoter.
//! 6. PostgreSQL's copy of the waiting tickets learns where each pre-queued ticket went.
//! 7. `released_at` and the `prequeue_drawn` event are written in one transaction.

use std::time::Duration;

use chrono::{DateTime, Utc};
use flash_core::redis::Redis;
use flash_core::{
    domain::TicketStatus,
    jobs::TicketMessage,
    redis_model::{
        Keys,
        prequeue::{self, Placed},
        waitlist::{self, Promoted},
    },
    sale_events::{self, SaleEvent},
};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::queue::Queue;

/// Tickets placed per Lua call, so Redis is never blocked for long.
const CHUNK: usize = 500;

/// How long a releasing process holds the lock without renewing it.
const LOCK_MS: u64 = 30_000;

/// Releases pre-queues when their sale starts.
pub(crate) struct Drawer {
    db: PgPool,
    redis: Redis,
    keys: Keys,
    queue: Queue,
    owner: String,
}

impl Drawer {
    pub(crate) fn new(db: PgPool, redis: Redis, keys: Keys, queue: Queue) -> Self {
        Self {
            db,
            redis,
            keys,
            queue,
            owner: Uuid::new_v4().to_string(),
        }
    }

    /// Looks for due sales every `interval` until shutdown.
    pub(crate) async fn run(self, interval: Duration, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(interval);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = tick.tick() => if let Err(err) = self.release_due().await {
                    tracing::error!(error.cause_chain = ?err, error.message = %err, "pre-queue release failed; retrying");
                },
            }
        }
    }

    /// Releases every started sale whose pre-queue is not released yet (that this process gets
    /// the lock of).
    async fn release_due(&self) -> anyhow::Result<()> {
        let due: Vec<(Uuid, DateTime<Utc>)> = sqlx::query_as(
            "select flash_sale_id, ends_at from flash_sales
             where prequeue_secs > 0 and released_at is null and cancelled_at is null
               and starts_at <= now() and ends_at > now()",
        )
        .fetch_all(&self.db)
        .await?;
        for (sale, ends_at) in due {
            if !prequeue::lock(&self.redis, &self.keys, sale, &self.owner, LOCK_MS).await? {
                continue;
            }
            let released = self.release(sale, ends_at).await;
            let _ = prequeue::unlock(&self.redis, &self.keys, sale, &self.owner).await;
            released?;
        }
        Ok(())
    }

    #[tracing::instrument(skip(self))]
    async fn release(&self, sale: Uuid, ends_at: DateTime<Utc>) -> anyhow::Result<()> {
        let seed: i64 = sqlx::query_scalar(
            "update flash_sales set draw_seed = coalesce(draw_seed, $2) where flash_sale_id = $1
             returning draw_seed",
        )
        .bind(sale)
        .bind(rand::random::<i64>())
        .fetch_one(&self.db)
        .await?;
        let entrants = prequeue::entrants(&self.redis, &self.keys, sale).await?;
        let order = flash_core::prequeue::draw(&entrants, u64::from_ne_bytes(seed.to_ne_bytes()));
        self.record(sale, &order).await?;
        for chunk in order.chunks(CHUNK) {
            let placed =
                prequeue::place_drawn(&self.redis, &self.keys, sale, ends_at, chunk).await?;
            self.queue_placed(sale, &placed).await?;
            self.renew(sale).await?;
        }
        loop {
            let placed =
                prequeue::place_backlog(&self.redis, &self.keys, sale, ends_at, CHUNK).await?;
            self.queue_placed(sale, &placed).await?;
            if placed.done {
                break;
            }
            self.renew(sale).await?;
        }
        self.settle_waiting(sale).await?;
        let mut tx = self.db.begin().await?;
        let marked = sqlx::query(
            "update flash_sales set released_at = now() where flash_sale_id = $1 and released_at is null",
        )
        .bind(sale)
        .execute(&mut *tx)
        .await?;
        if marked.rows_affected() == 1 {
            sale_events::record(
                &mut tx,
                sale,
                SaleEvent::PrequeueDrawn {
                    seed,
                    entrants: order.len(),
                },
            )
            .await?;
        }
        tx.commit().await?;
        tracing::info!(%sale, seed, entrants = order.len(), "pre-queue drawn and released");
        metrics::counter!("flash_admission_prequeue_released_total").increment(order.len() as u64);
        Ok(())
    }

    /// After the placing: PostgreSQL's copy of the pre-queued tickets learns where each went.
    /// One the draw put on the waitlist waits there now; the others (queued, sold out) wait no
    /// more.
    async fn settle_waiting(&self, sale: Uuid) -> anyhow::Result<()> {
        let waiting = flash_core::waiting::of_sale(&self.db, sale).await?;
        let prequeued: Vec<Uuid> = waiting
            .iter()
            .filter(|w| w.kind == flash_core::waiting::Kind::Prequeued)
            .map(|w| w.ticket)
            .collect();
        for chunk in prequeued.chunks(CHUNK) {
            let statuses = prequeue::statuses(&self.redis, &self.keys, sale, chunk).await?;
            let (waitlisted, placed): (Vec<_>, Vec<_>) = chunk
                .iter()
                .zip(statuses)
                // Still pre-queued, or unknown to a Redis that lost it: it still waits.
                .filter(|(_, status)| status.is_some_and(|s| s != TicketStatus::Prequeued))
                .partition(|(_, status)| *status == Some(TicketStatus::Waitlisted));
            let ids = |found: Vec<(&Uuid, Option<TicketStatus>)>| -> Vec<Uuid> {
                found.into_iter().map(|(t, _)| *t).collect()
            };
            flash_core::waiting::moved_to_waitlist(&self.db, &ids(waitlisted)).await?;
            flash_core::waiting::left(&self.db, &ids(placed)).await?;
        }
        Ok(())
    }

    /// Records the drawn order for audit (a retry finds it recorded).
    async fn record(&self, sale: Uuid, order: &[Uuid]) -> anyhow::Result<()> {
        let mut members = Vec::with_capacity(order.len());
        for chunk in order.chunks(CHUNK) {
            members.extend(prequeue::members(&self.redis, &self.keys, sale, chunk).await?);
        }
        let positions: Vec<i32> = (1..=i32::try_from(order.len())?).collect();
        sqlx::query(
            "insert into prequeue_draws (flash_sale_id, position, ticket_id, member_id)
             select $1, p, t, m from unnest($2::int[], $3::uuid[], $4::uuid[]) as d(p, t, m)
             on conflict do nothing",
        )
        .bind(sale)
        .bind(&positions)
        .bind(order)
        .bind(&members)
        .execute(&self.db)
        .await?;
        Ok(())
    }

    /// Publishes the tickets a placing call gave units to, then confirms them `queued`.
    async fn queue_placed(&self, sale: Uuid, placed: &Placed) -> anyhow::Result<()> {
        let now = Utc::now().timestamp_millis();
        let messages: Vec<TicketMessage> = placed
            .promoted
            .iter()
            .map(
                |&Promoted {
                     ticket,
                     member,
                     seq,
                 }| TicketMessage {
                    ticket_id: ticket.into(),
                    sale_id: sale.into(),
                    member_id: member.into(),
                    seq,
                    admitted_at_ms: now,
                },
            )
            .collect();
        let published =
            futures::future::join_all(messages.iter().map(|m| self.queue.publish(m, None))).await;
        for outcome in published {
            outcome?;
        }
        let tickets: Vec<Uuid> = messages.iter().map(|m| m.ticket_id.get()).collect();
        waitlist::confirm(&self.redis, &self.keys, sale, &tickets).await?;
        Ok(())
    }

    async fn renew(&self, sale: Uuid) -> anyhow::Result<()> {
        let held = prequeue::renew(&self.redis, &self.keys, sale, &self.owner, LOCK_MS).await?;
        anyhow::ensure!(held, "lost the draw lock of sale {sale}");
        Ok(())
    }
}
