//! The workers' side of a ticket: the drain's decisions written back after its commit, a
//! dead-lettered ticket, and the settlements of its order. Each write moves the ticket along
//! [`TicketStatus`]'s diagram.

use crate::redis::Redis;
use uuid::Uuid;

use super::{DRAIN_RATE_TTL, Keys, script};
use crate::domain::TicketStatus;

/// What the drain decided of a queued ticket, to show its buyer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision<'a> {
    /// An order was made of it.
    Ordered(Uuid),
    /// No unit was left.
    SoldOut,
    /// Refused, for this reason.
    Rejected(&'a str),
    /// Its buyer stopped polling: `expired`, and its unit back to the gate (`lua/expire.lua`).
    Expired,
}

/// What the drain reads of a ticket before it decides: its status and its buyer's last poll
/// (ms since the epoch), for each of `tickets` in order; `None` for a ticket Redis does not
/// hold or whose status it does not know. A `queued` ticket is claimed as it is read
/// (`lua/claim.lua`), so that the door's late undo leaves it to this worker.
///
/// # Errors
/// When Redis fails.
pub async fn claim(
    redis: &Redis,
    keys: &Keys,
    sale: Uuid,
    tickets: &[Uuid],
) -> redis::RedisResult<Vec<(Option<TicketStatus>, Option<i64>)>> {
    let script = script::CLAIM.redis();
    let mut pipe = redis::pipe();
    pipe.load_script(script).ignore();
    for ticket in tickets {
        pipe.invoke_script(&script.key(keys.ticket(sale, *ticket)));
    }
    let found: Vec<(Option<String>, Option<i64>)> = pipe.query_async(&mut redis.clone()).await?;
    Ok(found
        .into_iter()
        .map(|(status, seen)| (status.as_deref().and_then(TicketStatus::parse), seen))
        .collect())
}

/// A `queued` ticket no worker has claimed, as [`stranded`] finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stranded {
    /// The ticket.
    pub ticket: Uuid,
    /// Its buyer.
    pub member: Uuid,
    /// Its queue number.
    pub seq: i64,
}

/// A ticket's `status`, `member`, `seq` and `claimed`, as [`stranded`] reads them.
type StrandFields = (Option<String>, Option<String>, Option<i64>, Option<String>);

/// Keys read per `SCAN` step and per pipeline of [`stranded`].
const SCAN_STEP: usize = 1000;

/// Every ticket of `sale` that is `queued` and never claimed by a worker. Asked only of a quiet
/// sale (nothing in the queue, see the reconciler), where such a ticket was never published: its
/// door died between the entry script and the publish. Walks the sale's keys with `SCAN`, a
/// thousand at a time, so Redis is never blocked for long.
///
/// # Errors
/// When Redis fails.
pub async fn stranded(redis: &Redis, keys: &Keys, sale: Uuid) -> redis::RedisResult<Vec<Stranded>> {
    let pattern = keys.sale_tickets_pattern(sale);
    let mut conn = redis.clone();
    let mut cursor: u64 = 0;
    let mut found = Vec::new();
    loop {
        let (next, batch) = conn.scan_step(cursor, &pattern, SCAN_STEP).await?;
        if !batch.is_empty() {
            let mut pipe = redis::pipe();
            for key in &batch {
                pipe.cmd("HMGET")
                    .arg(key)
                    .arg(&["status", "member", "seq", "claimed"]);
            }
            let fields: Vec<StrandFields> = pipe.query_async(&mut conn).await?;
            for (key, (status, member, seq, claimed)) in batch.iter().zip(fields) {
                let ticket = key.rsplit(':').next().and_then(|id| id.parse().ok());
                let member = member.and_then(|m| m.parse().ok());
                let queued = status.as_deref() == Some(TicketStatus::Queued.as_str());
                if let (true, Some(ticket), Some(member), Some(seq), None) =
                    (queued, ticket, member, seq, claimed)
                {
                    found.push(Stranded {
                        ticket,
                        member,
                        seq,
                    });
                }
            }
        }
        if next == 0 {
            return Ok(found);
        }
        cursor = next;
    }
}

/// After the drain's commit, in one round trip: each ticket learns its decision, the sale's
/// served counter moves up to `highest_seq` (`lua/served.lua`), and `decided` tickets count
/// towards the measured drain rate (`lua/measure_rate.lua`).
///
/// # Errors
/// When Redis fails; the batch is then redelivered and reaches the same end.
pub async fn record_decisions(
    redis: &Redis,
    keys: &Keys,
    sale: Uuid,
    decisions: &[(Uuid, Decision<'_>)],
    highest_seq: i64,
    decided: usize,
) -> redis::RedisResult<()> {
    let mut pipe = redis::pipe();
    let expire = script::EXPIRE.redis();
    if decisions.iter().any(|(_, d)| *d == Decision::Expired) {
        pipe.load_script(expire).ignore();
    }
    for (ticket, decision) in decisions {
        let key = keys.ticket(sale, *ticket);
        match decision {
            Decision::Ordered(order) => {
                let order = order.to_string();
                pipe.hset_multiple(
                    &key,
                    &[
                        ("status", TicketStatus::Ordered.as_str()),
                        ("order_id", order.as_str()),
                    ],
                )
                .ignore();
            }
            Decision::SoldOut => {
                pipe.hset(&key, "status", TicketStatus::SoldOut.as_str())
                    .ignore();
            }
            Decision::Rejected(reason) => {
                pipe.hset_multiple(
                    &key,
                    &[
                        ("status", TicketStatus::Rejected.as_str()),
                        ("reason", reason),
                    ],
                )
                .ignore();
            }
            Decision::Expired => {
                pipe.invoke_script(expire.key(&key).key(keys.sale_gate(sale)))
                    .ignore();
            }
        }
    }
    pipe.load_script(script::SERVED.redis())
        .ignore()
        .invoke_script(
            script::SERVED
                .redis()
                .key(keys.sale_served(sale))
                .arg(highest_seq),
        )
        .ignore()
        .load_script(script::MEASURE_RATE.redis())
        .ignore()
        .invoke_script(
            script::MEASURE_RATE
                .redis()
                .key(keys.sale_drain_rate(sale))
                .key(keys.sale_drain_window(sale))
                .arg(decided)
                .arg(DRAIN_RATE_TTL.as_secs()),
        )
        .ignore();
    pipe.query_async(&mut redis.clone()).await
}

/// A ticket dead-lettered after its last delivery: `failed`, with why.
///
/// # Errors
/// When Redis fails.
pub async fn mark_failed(
    redis: &Redis,
    keys: &Keys,
    sale: Uuid,
    ticket: Uuid,
    reason: &str,
) -> redis::RedisResult<()> {
    redis::cmd("HSET")
        .arg(keys.ticket(sale, ticket))
        .arg("status")
        .arg(TicketStatus::Failed.as_str())
        .arg("reason")
        .arg(reason)
        .query_async(&mut redis.clone())
        .await
}

/// How an order of a ticket ended, for the buyer who polls it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// The charge went through.
    Paid,
    /// A declined charge, or the buyer cancelled.
    Cancelled,
}

impl Settled {
    fn status(self) -> TicketStatus {
        match self {
            Self::Paid => TicketStatus::Paid,
            Self::Cancelled => TicketStatus::Cancelled,
        }
    }
}

/// Tells a waiting buyer how their order ended: the ticket moves on from `ordered` (or `paid`,
/// for a cancellation; `lua/settle.lua`). A ticket Redis no longer holds stays gone; its poll
/// is answered from PostgreSQL.
///
/// # Errors
/// When Redis is unreachable.
pub async fn settle_ticket(
    redis: &Redis,
    keys: &Keys,
    sale: Uuid,
    ticket: Uuid,
    settled: Settled,
) -> redis::RedisResult<()> {
    settle_tickets(redis, keys, &[(sale, ticket, settled)]).await
}

/// [`settle_ticket`] for a batch of `(sale, ticket, how)`, in one round trip.
///
/// # Errors
/// When Redis is unreachable.
pub async fn settle_tickets(
    redis: &Redis,
    keys: &Keys,
    settled: &[(Uuid, Uuid, Settled)],
) -> redis::RedisResult<()> {
    if settled.is_empty() {
        return Ok(());
    }
    let script = script::SETTLE.redis();
    let mut pipe = redis::pipe();
    pipe.load_script(script).ignore();
    for (sale, ticket, how) in settled {
        pipe.invoke_script(
            script
                .key(keys.ticket(*sale, *ticket))
                .arg(how.status().as_str()),
        )
        .ignore();
    }
    let mut conn = redis.clone();
    pipe.query_async(&mut conn).await
}
