//! The waitlist promoter: a unit that comes back to a sold-out sale goes to the first
//! waitlisted buyer.
//!
//! Units come back to the gate from several places (a failed payment, a cancelled order, stock
//! an admin added); the door sends newcomers to the waitlist while anyone waits on it, so the
//! gate's units are the waitlist's. A pass moves them a chunk of tickets per script call
//! ([`flash_core::redis_model::waitlist`]), each atomically: take the unit, pop the first
//! waitlisted ticket, give it the next queue number and mark it `promoting` in the sale's
//! promoting set. Then the ticket is published to the queue exactly as
//! the door would (`Nats-Msg-Id` = ticket id) and confirmed `queued`. A promoter that dies in
//! between leaves the ticket in the promoting set and the next pass, of any worker process,
//! publishes it again (JetStream drops the duplicate): a promoted buyer is never lost. At the
//! end of the sale every ticket still waitlisted becomes `sold_out`. PostgreSQL's copy of the
//! waiting tickets ([`flash_core::waiting`]) loses a ticket once it is queued, and the whole
//! sale once its waitlist is closed.
//!
//! The same promoting set carries the tickets admission's pre-queue release hands out, so a
//! release cut short by a crash is finished here too.

use async_nats::jetstream;
use chrono::{DateTime, Utc};
use flash_core::redis::Redis;
use flash_core::{
    jobs::TicketMessage,
    nats::Subjects,
    redis_model::{
        Keys,
        waitlist::{self, Promoted},
    },
};
use sqlx::PgPool;
use uuid::Uuid;

/// Most tickets one pass promotes per sale, so one sale cannot hold up the others.
const MAX_PER_PASS: usize = 1_000;

/// Tickets at the head of a waitlist one script call looks at.
const CHUNK: usize = 100;

/// Moves returned units to waitlisted buyers.
pub struct Promoter {
    db: PgPool,
    redis: Redis,
    keys: Keys,
    js: jetstream::Context,
    subjects: Subjects,
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Promotions {
    /// Waitlisted tickets that got a unit and are now queued.
    pub promoted: usize,
    /// Waitlisted tickets of ended sales that became `sold_out`.
    pub closed: usize,
}

impl Promoter {
    /// A promoter for the sales in `db`, their waitlists in `redis`, the queue behind `js`.
    pub fn new(
        db: PgPool,
        redis: Redis,
        keys: Keys,
        js: jetstream::Context,
        subjects: Subjects,
    ) -> Self {
        Self {
            db,
            redis,
            keys,
            js,
            subjects,
        }
    }

    /// One pass over every sale with a waitlist that has not been over for a day.
    ///
    /// # Errors
    /// When PostgreSQL, Redis or NATS fail; what was half done is finished by the next pass.
    pub async fn promote_once(&self) -> anyhow::Result<Promotions> {
        let sales: Vec<(Uuid, DateTime<Utc>, Option<DateTime<Utc>>)> = sqlx::query_as(
            "select flash_sale_id, ends_at, cancelled_at from flash_sales
             where (waitlist_limit > 0 or prequeue_secs > 0) and ends_at > now() - interval '1 day'",
        )
        .fetch_all(&self.db)
        .await?;
        let mut done = Promotions::default();
        for (sale, ends_at, cancelled_at) in sales {
            done.promoted += self.finish_promotions(sale).await?;
            if cancelled_at.is_some() || ends_at <= Utc::now() {
                done.closed += self.close_waitlist(sale).await?;
                continue;
            }
            let mut budget = MAX_PER_PASS;
            while budget > 0 {
                let taken =
                    waitlist::promote(&self.redis, &self.keys, sale, ends_at, budget.min(CHUNK))
                        .await?;
                for promoted in &taken.promoted {
                    self.queue(sale, promoted).await?;
                }
                done.promoted += taken.promoted.len();
                if taken.popped == 0 {
                    break;
                }
                budget = budget.saturating_sub(taken.popped);
            }
        }
        if done.promoted > 0 {
            metrics::counter!("flash_workers_waitlist_promoted_total")
                .increment(done.promoted as u64);
        }
        Ok(done)
    }

    /// Publishes the tickets a pass promoted but did not confirm (it failed or its process
    /// died); returns how many were confirmed now.
    async fn finish_promotions(&self, sale: Uuid) -> anyhow::Result<usize> {
        let pending = waitlist::unconfirmed(&self.redis, &self.keys, sale).await?;
        for promoted in &pending {
            self.queue(sale, promoted).await?;
        }
        Ok(pending.len())
    }

    /// Publishes a promoted ticket to the queue, as the door does, then confirms it `queued`.
    async fn queue(&self, sale: Uuid, promoted: &Promoted) -> anyhow::Result<()> {
        let ticket = promoted.ticket.to_string();
        let message = TicketMessage {
            ticket_id: promoted.ticket.into(),
            sale_id: sale.into(),
            member_id: promoted.member.into(),
            seq: promoted.seq,
            admitted_at_ms: Utc::now().timestamp_millis(),
        };
        flash_core::nats::publish_ticket(&self.js, &self.subjects, &message, None).await?;
        waitlist::confirm(&self.redis, &self.keys, sale, &[promoted.ticket]).await?;
        // Queued now: it holds a unit and a message, and waits no more.
        flash_core::waiting::left(&self.db, &[promoted.ticket]).await?;
        tracing::info!(%sale, ticket_id = %ticket, "waitlisted ticket promoted to the queue");
        Ok(())
    }

    /// Every ticket still waitlisted in an ended or cancelled sale becomes `sold_out`.
    async fn close_waitlist(&self, sale: Uuid) -> anyhow::Result<usize> {
        let mut closed = 0;
        loop {
            let taken = waitlist::close(&self.redis, &self.keys, sale, CHUNK).await?;
            closed += taken.closed;
            if taken.popped == 0 {
                flash_core::waiting::close(&self.db, sale).await?;
                return Ok(closed);
            }
        }
    }
}
