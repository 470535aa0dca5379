//! The pre-queue release: at a sale's start its pre-queue is drawn and released into the queue,
//! ahead of everyone who arrived after the start, who follow in arrival order.
//!
//! Every admission process looks for due sales a few times a second; a Redis lock lets one of
//! them release a sale, and every step can be repeated by whichever process takes over after a
//! crash:
//! 1. The seed is chosen once (`coalesce` on the sale row), so a retry draws the same order.
//! 2. The order is [`flash_core::prequeue::draw`] of the pre-queued tickets, recorded in
//!    `prequeue_draws` (`on conflict do nothing`) for audit.
//! 3. Tickets are placed in that order by one Lua call per chunk: a unit from the gate and the
//!    next queue number (status `promoting`, in the sale's promoting set), else the waitlist,
//!    else `sold_out`. A ticket no longer `prequeued` was placed before and is skipped.
//! 4. Then the arrivals held behind the pre-queue (the backlog), first come first served; the
//!    call that empties the backlog also marks the sale released in Redis, atomically with the
//!    door's script, so from then on entries take the gate directly and none is stranded.
//! 5. Promoted tickets are published like any door entry and confirmed `queued`; one left
//!    `promoting` by a crash is published by the workers' promoter.
//! 6. `released_at` and the `prequeue_drawn` event are written in one transaction.

use std::time::Duration;

use chrono::Utc;
use flash_core::{
    jobs::TicketMessage,
    redis::Keys,
    sale_events::{self, SaleEvent},
};
use redis::{Script, aio::ConnectionManager};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::queue::Queue;

/// Tickets placed per Lua call, so Redis is never blocked for long.
const CHUNK: usize = 500;

/// How long a releasing process holds the lock without renewing it.
const LOCK_MS: u64 = 30_000;

/// KEYS: gate, seq, waitlist, waitlist seq, promoting, meta, backlog.
/// ARGV: ticket key prefix, mode (`drawn`: the ticket ids follow; `backlog`: pop from KEYS[7]).
/// Returns `done` or `more`, then {ticket, member, seq} of each ticket that got a unit.
const PLACE: &str = r"
local out = {'more'}
local function place(t)
  local key = ARGV[1] .. t
  local ticket = redis.call('HMGET', key, 'member', 'status')
  if not ticket[1] or ticket[2] ~= 'prequeued' then return end
  if tonumber(redis.call('GET', KEYS[1]) or '0') > 0 then
    redis.call('DECR', KEYS[1])
    local seq = redis.call('INCR', KEYS[2])
    redis.call('HSET', key, 'status', 'promoting', 'seq', seq)
    redis.call('SADD', KEYS[5], t)
    redis.call('EXPIRE', KEYS[5], 691200)
    table.insert(out, t)
    table.insert(out, ticket[1])
    table.insert(out, tostring(seq))
  elseif redis.call('LLEN', KEYS[3]) < tonumber(redis.call('HGET', KEYS[6], 'waitlist') or '0') then
    local w = redis.call('INCR', KEYS[4])
    redis.call('RPUSH', KEYS[3], t)
    redis.call('EXPIRE', KEYS[3], 691200)
    redis.call('EXPIRE', KEYS[4], 691200)
    redis.call('HSET', key, 'status', 'waitlisted', 'wseq', w)
  else
    redis.call('HSET', key, 'status', 'sold_out')
  end
end
if ARGV[2] == 'drawn' then
  for i = 3, #ARGV do place(ARGV[i]) end
  return out
end
for _ = 1, 500 do
  local t = redis.call('LPOP', KEYS[7])
  if not t then break end
  place(t)
end
if redis.call('LLEN', KEYS[7]) == 0 then
  redis.call('HSET', KEYS[6], 'released', 1)
  out[1] = 'done'
end
return out
";

/// KEYS: lock. ARGV: owner, ms. Renews the lock only for its owner.
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
";

/// Releases pre-queues when their sale starts.
pub(crate) struct Drawer {
    db: PgPool,
    redis: ConnectionManager,
    keys: Keys,
    queue: Queue,
    owner: String,
    place: Script,
    renew: Script,
}

impl Drawer {
    pub(crate) fn new(db: PgPool, redis: ConnectionManager, keys: Keys, queue: Queue) -> Self {
        Self {
            db,
            redis,
            keys,
            queue,
            owner: Uuid::new_v4().to_string(),
            place: Script::new(PLACE),
            renew: Script::new(RENEW),
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
        let due: Vec<Uuid> = sqlx::query_scalar(
            "select flash_sale_id from flash_sales
             where prequeue_secs > 0 and released_at is null and cancelled_at is null
               and starts_at <= now() and ends_at > now()",
        )
        .fetch_all(&self.db)
        .await?;
        for sale in due {
            let mut conn = self.redis.clone();
            let locked: Option<String> = redis::cmd("SET")
                .arg(self.keys.sale_draw_lock(sale))
                .arg(&self.owner)
                .arg("NX")
                .arg("PX")
                .arg(LOCK_MS)
                .query_async(&mut conn)
                .await?;
            if locked.is_none() {
                continue;
            }
            let released = self.release(sale).await;
            let _: redis::RedisResult<i64> = redis::Script::new(
                "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
            )
            .key(self.keys.sale_draw_lock(sale))
            .arg(&self.owner)
            .invoke_async(&mut conn)
            .await;
            released?;
        }
        Ok(())
    }

    #[tracing::instrument(skip(self))]
    async fn release(&self, sale: Uuid) -> anyhow::Result<()> {
        let seed: i64 = sqlx::query_scalar(
            "update flash_sales set draw_seed = coalesce(draw_seed, $2) where flash_sale_id = $1
             returning draw_seed",
        )
        .bind(sale)
        .bind(rand::random::<i64>())
        .fetch_one(&self.db)
        .await?;
        let mut conn = self.redis.clone();
        let listed: Vec<String> = redis::cmd("LRANGE")
            .arg(self.keys.sale_prequeue(sale))
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await?;
        let entrants: Vec<Uuid> = listed.iter().filter_map(|t| t.parse().ok()).collect();
        let order = flash_core::prequeue::draw(&entrants, u64::from_ne_bytes(seed.to_ne_bytes()));
        self.record(sale, &order).await?;
        for chunk in order.chunks(CHUNK) {
            let mut call = self.place_call(sale, "drawn");
            for ticket in chunk {
                call.arg(ticket.to_string());
            }
            let placed: Vec<String> = call.invoke_async(&mut conn).await?;
            self.queue_placed(sale, &placed).await?;
            self.renew(sale).await?;
        }
        loop {
            let placed: Vec<String> = self
                .place_call(sale, "backlog")
                .invoke_async(&mut conn)
                .await?;
            self.queue_placed(sale, &placed).await?;
            if placed.first().map(String::as_str) == Some("done") {
                break;
            }
            self.renew(sale).await?;
        }
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

    fn place_call<'a>(&'a self, sale: Uuid, mode: &str) -> redis::ScriptInvocation<'a> {
        let mut call = self.place.prepare_invoke();
        call.key(self.keys.sale_gate(sale))
            .key(self.keys.sale_seq(sale))
            .key(self.keys.sale_waitlist(sale))
            .key(self.keys.sale_waitlist_seq(sale))
            .key(self.keys.sale_promoting(sale))
            .key(self.keys.sale_meta(sale))
            .key(self.keys.sale_backlog(sale))
            .arg(self.keys.ticket_prefix(sale))
            .arg(mode);
        call
    }

    /// Records the drawn order for audit (a retry finds it recorded).
    async fn record(&self, sale: Uuid, order: &[Uuid]) -> anyhow::Result<()> {
        let mut members = Vec::with_capacity(order.len());
        for chunk in order.chunks(CHUNK) {
            let mut pipe = redis::pipe();
            for ticket in chunk {
                pipe.cmd("HGET")
                    .arg(self.keys.ticket(sale, *ticket))
                    .arg("member");
            }
            let mut conn = self.redis.clone();
            let found: Vec<Option<String>> = pipe.query_async(&mut conn).await?;
            members.extend(
                found
                    .into_iter()
                    .map(|m| m.and_then(|m| m.parse::<Uuid>().ok()).unwrap_or_default()),
            );
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
    async fn queue_placed(&self, sale: Uuid, placed: &[String]) -> anyhow::Result<()> {
        let now = Utc::now().timestamp_millis();
        let mut messages = Vec::new();
        for triple in placed.get(1..).unwrap_or_default().chunks_exact(3) {
            messages.push(TicketMessage {
                ticket_id: triple[0].parse()?,
                sale_id: sale,
                member_id: triple[1].parse::<Uuid>()?.into(),
                seq: triple[2].parse()?,
                admitted_at_ms: now,
            });
        }
        let published =
            futures::future::join_all(messages.iter().map(|m| self.queue.publish(m, None))).await;
        for outcome in published {
            outcome?;
        }
        let mut pipe = redis::pipe();
        for message in &messages {
            pipe.cmd("EVAL")
                .arg(flash_core::sale_gate::CONFIRM_PROMOTED)
                .arg(2)
                .arg(self.keys.ticket(sale, message.ticket_id))
                .arg(self.keys.sale_promoting(sale))
                .arg(message.ticket_id.to_string())
                .ignore();
        }
        if !messages.is_empty() {
            let mut conn = self.redis.clone();
            pipe.query_async::<()>(&mut conn).await?;
        }
        Ok(())
    }

    async fn renew(&self, sale: Uuid) -> anyhow::Result<()> {
        let mut conn = self.redis.clone();
        let held: i64 = self
            .renew
            .key(self.keys.sale_draw_lock(sale))
            .arg(&self.owner)
            .arg(LOCK_MS)
            .invoke_async(&mut conn)
            .await?;
        anyhow::ensure!(held == 1, "lost the draw lock of sale {sale}");
        Ok(())
    }
}
