//! The waitlist's moves: units that came back go to the first waitlisted buyers
//! (`lua/promote.lua`), a promoted ticket is confirmed once queued (`lua/confirm_promoted.lua`),
//! and at the end of the sale the rest become `sold_out` (`lua/close_waitlist.lua`).
//!
//! Both scripts that take tickets off the waitlist are handed the waitlist's first tickets as
//! read just before (Redis Cluster needs every key in KEYS); they stop at the first one that no
//! longer heads it, so two promoters at once never take one ticket twice.

use crate::redis::Redis;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Keys, expire_at_ms, script};

/// A ticket handed a unit (status `promoting`), to be published to the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Promoted {
    /// The ticket.
    pub ticket: Uuid,
    /// Its buyer.
    pub member: Uuid,
    /// Its place in the queue.
    pub seq: i64,
}

/// What one call of a waitlist script did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Taken {
    /// Tickets taken off the head of the waitlist (0: nothing more to do now).
    pub popped: usize,
    /// Those of them promoted (by [`promote`]).
    pub promoted: Vec<Promoted>,
    /// Those of them closed (by [`close`]).
    pub closed: usize,
}

/// The first `n` tickets of `sale`'s waitlist.
async fn head(redis: &Redis, keys: &Keys, sale: Uuid, n: usize) -> redis::RedisResult<Vec<Uuid>> {
    let listed: Vec<String> = redis::cmd("LRANGE")
        .arg(keys.sale_waitlist(sale))
        .arg(0)
        .arg(n.saturating_sub(1))
        .query_async(&mut redis.clone())
        .await?;
    Ok(listed.iter().filter_map(|t| t.parse().ok()).collect())
}

/// Gives units in `sale`'s gate to up to `n` tickets at the head of its waitlist, in order.
///
/// # Errors
/// When Redis fails.
pub async fn promote(
    redis: &Redis,
    keys: &Keys,
    sale: Uuid,
    ends_at: DateTime<Utc>,
    n: usize,
) -> redis::RedisResult<Taken> {
    let first = head(redis, keys, sale, n).await?;
    if first.is_empty() {
        return Ok(Taken::default());
    }
    let mut call = script::PROMOTE.redis().prepare_invoke();
    call.key(keys.sale_gate(sale))
        .key(keys.sale_waitlist(sale))
        .key(keys.sale_waitlist_left(sale))
        .key(keys.sale_seq(sale))
        .key(keys.sale_promoting(sale))
        .arg(expire_at_ms(ends_at));
    for ticket in &first {
        call.key(keys.ticket(sale, *ticket)).arg(ticket.to_string());
    }
    let reply: Vec<String> = call.invoke_async(&mut redis.clone()).await?;
    Ok(Taken {
        popped: reply.first().and_then(|p| p.parse().ok()).unwrap_or(0),
        promoted: promoted(reply.get(1..).unwrap_or_default()),
        closed: 0,
    })
}

/// Turns `ticket, member, seq` triples of a script's reply into [`Promoted`]s; a triple that
/// does not parse (a ticket written by hand) is left out.
pub(crate) fn promoted(triples: &[String]) -> Vec<Promoted> {
    triples
        .chunks_exact(3)
        .filter_map(|t| {
            Some(Promoted {
                ticket: t[0].parse().ok()?,
                member: t[1].parse().ok()?,
                seq: t[2].parse().ok()?,
            })
        })
        .collect()
}

/// Makes up to `n` tickets at the head of `sale`'s waitlist `sold_out` (the sale is over).
///
/// # Errors
/// When Redis fails.
pub async fn close(redis: &Redis, keys: &Keys, sale: Uuid, n: usize) -> redis::RedisResult<Taken> {
    let first = head(redis, keys, sale, n).await?;
    if first.is_empty() {
        return Ok(Taken::default());
    }
    let mut call = script::CLOSE_WAITLIST.redis().prepare_invoke();
    call.key(keys.sale_waitlist(sale))
        .key(keys.sale_waitlist_left(sale));
    for ticket in &first {
        call.key(keys.ticket(sale, *ticket)).arg(ticket.to_string());
    }
    let (popped, closed): (usize, usize) = call.invoke_async(&mut redis.clone()).await?;
    Ok(Taken {
        popped,
        promoted: Vec::new(),
        closed,
    })
}

/// Tickets of `sale` handed a unit but not yet confirmed queued (their promoter or release
/// failed or died), with their buyer and place.
///
/// # Errors
/// When Redis fails.
pub async fn unconfirmed(
    redis: &Redis,
    keys: &Keys,
    sale: Uuid,
) -> redis::RedisResult<Vec<Promoted>> {
    let mut conn = redis.clone();
    let pending: Vec<String> = redis::cmd("SMEMBERS")
        .arg(keys.sale_promoting(sale))
        .query_async(&mut conn)
        .await?;
    let mut found = Vec::new();
    for ticket in pending.iter().filter_map(|t| t.parse::<Uuid>().ok()) {
        let (member, seq): (Option<String>, Option<i64>) = redis::cmd("HMGET")
            .arg(keys.ticket(sale, ticket))
            .arg("member")
            .arg("seq")
            .query_async(&mut conn)
            .await?;
        if let (Some(member), Some(seq)) = (member.and_then(|m| m.parse().ok()), seq) {
            found.push(Promoted {
                ticket,
                member,
                seq,
            });
        }
    }
    Ok(found)
}

/// Confirms promoted tickets `queued` once their messages are in the queue, unless a worker
/// decided them already, and takes them out of the promoting set: one round trip.
///
/// # Errors
/// When Redis fails.
pub async fn confirm(
    redis: &Redis,
    keys: &Keys,
    sale: Uuid,
    tickets: &[Uuid],
) -> redis::RedisResult<()> {
    if tickets.is_empty() {
        return Ok(());
    }
    let confirm = script::CONFIRM_PROMOTED.redis();
    let mut pipe = redis::pipe();
    pipe.load_script(confirm).ignore();
    for ticket in tickets {
        pipe.invoke_script(
            confirm
                .key(keys.ticket(sale, *ticket))
                .key(keys.sale_promoting(sale))
                .arg(ticket.to_string()),
        )
        .ignore();
    }
    pipe.query_async(&mut redis.clone()).await
}
