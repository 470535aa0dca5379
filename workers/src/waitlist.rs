//! The waitlist promoter: a unit that comes back to a sold-out sale goes to the first
//! waitlisted buyer.
//!
//! Units come back to the gate from several places (a failed payment, a cancelled order, stock
//! an admin added); the door sends newcomers to the waitlist while anyone waits on it, so the
//! gate's units are the waitlist's. A pass moves them, one script call per ticket, atomically:
//! take the unit, pop the first waitlisted ticket, give it the next queue number and mark it
//! `promoting` in the sale's promoting set. Then the ticket is published to the queue exactly as
//! the door would (`Nats-Msg-Id` = ticket id) and confirmed `queued`. A promoter that dies in
//! between leaves the ticket in the promoting set and the next pass, of any worker process,
//! publishes it again (JetStream drops the duplicate): a promoted buyer is never lost. At the
//! end of the sale every ticket still waitlisted becomes `sold_out`.
//!
//! The same promoting set carries the tickets admission's pre-queue release hands out, so a
//! release cut short by a crash is finished here too.

use async_nats::jetstream;
use chrono::{DateTime, Utc};
use flash_core::{jobs::TicketMessage, nats::Subjects, redis::Keys};
use redis::{Script, aio::ConnectionManager};
use sqlx::PgPool;
use uuid::Uuid;

/// Most tickets one pass promotes per sale, so one sale cannot hold up the others.
const MAX_PER_PASS: usize = 1_000;

/// KEYS: gate, waitlist, waitlist left, seq, promoting. ARGV: ticket key prefix.
/// Returns {ticket, member, seq} or nil when there is no unit or nobody waiting.
const PROMOTE: &str = r"
while true do
  if tonumber(redis.call('GET', KEYS[1]) or '0') <= 0 then return false end
  local t = redis.call('LPOP', KEYS[2])
  if not t then return false end
  redis.call('INCR', KEYS[3])
  redis.call('EXPIRE', KEYS[3], 691200)
  local key = ARGV[1] .. t
  local ticket = redis.call('HMGET', key, 'member', 'status')
  if ticket[1] and ticket[2] == 'waitlisted' then
    redis.call('DECR', KEYS[1])
    local seq = redis.call('INCR', KEYS[4])
    redis.call('HSET', key, 'status', 'promoting', 'seq', seq)
    redis.call('SADD', KEYS[5], t)
    redis.call('EXPIRE', KEYS[5], 691200)
    return {t, ticket[1], tostring(seq)}
  end
end
";

/// KEYS: waitlist, waitlist left. ARGV: ticket key prefix. Returns the tickets closed.
const CLOSE: &str = r"
local closed = 0
while true do
  local t = redis.call('LPOP', KEYS[1])
  if not t then return closed end
  redis.call('INCR', KEYS[2])
  local key = ARGV[1] .. t
  if redis.call('HGET', key, 'status') == 'waitlisted' then
    redis.call('HSET', key, 'status', 'sold_out')
    closed = closed + 1
  end
end
";

/// Moves returned units to waitlisted buyers.
pub struct Promoter {
    db: PgPool,
    redis: ConnectionManager,
    keys: Keys,
    js: jetstream::Context,
    subjects: Subjects,
    promote: Script,
    confirm: Script,
    close: Script,
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
        redis: ConnectionManager,
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
            promote: Script::new(PROMOTE),
            confirm: Script::new(flash_core::sale_gate::CONFIRM_PROMOTED),
            close: Script::new(CLOSE),
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
            for _ in 0..MAX_PER_PASS {
                let mut conn = self.redis.clone();
                let promoted: Option<(String, String, String)> = self
                    .promote
                    .key(self.keys.sale_gate(sale))
                    .key(self.keys.sale_waitlist(sale))
                    .key(self.keys.sale_waitlist_left(sale))
                    .key(self.keys.sale_seq(sale))
                    .key(self.keys.sale_promoting(sale))
                    .arg(self.keys.ticket_prefix(sale))
                    .invoke_async(&mut conn)
                    .await?;
                let Some((ticket, member, seq)) = promoted else {
                    break;
                };
                self.queue(sale, &ticket, &member, &seq).await?;
                done.promoted += 1;
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
        let mut conn = self.redis.clone();
        let pending: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.keys.sale_promoting(sale))
            .query_async(&mut conn)
            .await?;
        let mut finished = 0;
        for ticket in pending {
            let Ok(id) = ticket.parse::<Uuid>() else {
                continue;
            };
            let (member, seq): (Option<String>, Option<String>) = redis::cmd("HMGET")
                .arg(self.keys.ticket(sale, id))
                .arg("member")
                .arg("seq")
                .query_async(&mut conn)
                .await?;
            if let (Some(member), Some(seq)) = (member, seq) {
                self.queue(sale, &ticket, &member, &seq).await?;
                finished += 1;
            }
        }
        Ok(finished)
    }

    /// Publishes a promoted ticket to the queue, as the door does, then confirms it `queued`.
    async fn queue(&self, sale: Uuid, ticket: &str, member: &str, seq: &str) -> anyhow::Result<()> {
        let ticket_id: Uuid = ticket.parse()?;
        let message = TicketMessage {
            ticket_id,
            sale_id: sale,
            member_id: member.parse::<Uuid>()?.into(),
            seq: seq.parse()?,
            admitted_at_ms: Utc::now().timestamp_millis(),
        };
        flash_core::nats::publish_durably(
            &self.js,
            self.subjects.flash_tickets(sale),
            ticket,
            serde_json::to_vec(&message)?.into(),
            None,
        )
        .await?;
        let mut conn = self.redis.clone();
        self.confirm
            .key(self.keys.ticket(sale, ticket_id))
            .key(self.keys.sale_promoting(sale))
            .arg(ticket)
            .invoke_async::<i64>(&mut conn)
            .await?;
        tracing::info!(%sale, ticket_id = %ticket, "waitlisted ticket promoted to the queue");
        Ok(())
    }

    /// Every ticket still waitlisted in an ended or cancelled sale becomes `sold_out`.
    async fn close_waitlist(&self, sale: Uuid) -> anyhow::Result<usize> {
        let mut conn = self.redis.clone();
        let closed: i64 = self
            .close
            .key(self.keys.sale_waitlist(sale))
            .key(self.keys.sale_waitlist_left(sale))
            .arg(self.keys.ticket_prefix(sale))
            .invoke_async(&mut conn)
            .await?;
        Ok(usize::try_from(closed).unwrap_or(0))
    }
}
