//! The pre-queue release's Redis side: the pre-queued tickets, their placement in drawn order
//! and then the backlog's (`lua/place.lua`), and the lock that lets one admission process
//! release a sale (`lua/lock_renew.lua`, `lua/lock_release.lua`).

use chrono::{DateTime, Utc};
use redis::aio::ConnectionManager;
use uuid::Uuid;

use super::{Keys, expire_at_ms, script, waitlist::Promoted};

/// What one placing call did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    /// Tickets that got a unit (status `promoting`), to be published.
    pub promoted: Vec<Promoted>,
    /// The backlog is empty and the sale released (backlog calls only).
    pub done: bool,
    /// The backlog's head changed since it was read: nothing was placed, read it again.
    pub stale: bool,
}

/// The tickets in `sale`'s pre-queue, in arrival order.
///
/// # Errors
/// When Redis fails.
pub async fn entrants(
    redis: &ConnectionManager,
    keys: &Keys,
    sale: Uuid,
) -> redis::RedisResult<Vec<Uuid>> {
    list(redis, &keys.sale_prequeue(sale), -1).await
}

async fn list(redis: &ConnectionManager, key: &str, last: i64) -> redis::RedisResult<Vec<Uuid>> {
    let listed: Vec<String> = redis::cmd("LRANGE")
        .arg(key)
        .arg(0)
        .arg(last)
        .query_async(&mut redis.clone())
        .await?;
    Ok(listed.iter().filter_map(|t| t.parse().ok()).collect())
}

/// The buyer of each of `tickets` (nil UUID for one Redis does not hold), a pipeline per call.
///
/// # Errors
/// When Redis fails.
pub async fn members(
    redis: &ConnectionManager,
    keys: &Keys,
    sale: Uuid,
    tickets: &[Uuid],
) -> redis::RedisResult<Vec<Uuid>> {
    let mut pipe = redis::pipe();
    for ticket in tickets {
        pipe.hget(keys.ticket(sale, *ticket), "member");
    }
    let found: Vec<Option<String>> = pipe.query_async(&mut redis.clone()).await?;
    Ok(found
        .into_iter()
        .map(|m| m.and_then(|m| m.parse().ok()).unwrap_or_default())
        .collect())
}

/// Places `drawn` tickets of `sale` (ending at `ends_at`) in that order: a unit and the next
/// queue number, else the waitlist, else `sold_out`. Tickets placed before are skipped.
///
/// # Errors
/// When Redis fails.
pub async fn place_drawn(
    redis: &ConnectionManager,
    keys: &Keys,
    sale: Uuid,
    ends_at: DateTime<Utc>,
    drawn: &[Uuid],
) -> redis::RedisResult<Placed> {
    place(redis, keys, sale, ends_at, "drawn", drawn).await
}

/// Places up to `n` tickets at the head of `sale`'s backlog, as [`place_drawn`] does, and takes
/// them out of it; the call that empties it marks the sale released.
///
/// # Errors
/// When Redis fails.
pub async fn place_backlog(
    redis: &ConnectionManager,
    keys: &Keys,
    sale: Uuid,
    ends_at: DateTime<Utc>,
    n: usize,
) -> redis::RedisResult<Placed> {
    let head = match i64::try_from(n) {
        Ok(0) => Vec::new(),
        Ok(n) => list(redis, &keys.sale_backlog(sale), n - 1).await?,
        Err(_) => list(redis, &keys.sale_backlog(sale), -1).await?,
    };
    place(redis, keys, sale, ends_at, "backlog", &head).await
}

async fn place(
    redis: &ConnectionManager,
    keys: &Keys,
    sale: Uuid,
    ends_at: DateTime<Utc>,
    mode: &str,
    tickets: &[Uuid],
) -> redis::RedisResult<Placed> {
    let mut call = script::PLACE.redis().prepare_invoke();
    call.key(keys.sale_gate(sale))
        .key(keys.sale_seq(sale))
        .key(keys.sale_waitlist(sale))
        .key(keys.sale_waitlist_seq(sale))
        .key(keys.sale_promoting(sale))
        .key(keys.sale_meta(sale))
        .key(keys.sale_backlog(sale))
        .arg(mode)
        .arg(expire_at_ms(ends_at));
    for ticket in tickets {
        call.key(keys.ticket(sale, *ticket)).arg(ticket.to_string());
    }
    let reply: Vec<String> = call.invoke_async(&mut redis.clone()).await?;
    let state = reply.first().map_or("", String::as_str);
    Ok(Placed {
        promoted: super::waitlist::promoted(reply.get(1..).unwrap_or_default()),
        done: state == "done",
        stale: state == "stale",
    })
}

/// Takes `sale`'s release lock for `owner` for `hold_ms`, if nobody holds it.
///
/// # Errors
/// When Redis fails.
pub async fn lock(
    redis: &ConnectionManager,
    keys: &Keys,
    sale: Uuid,
    owner: &str,
    hold_ms: u64,
) -> redis::RedisResult<bool> {
    let locked: Option<String> = redis::cmd("SET")
        .arg(keys.sale_draw_lock(sale))
        .arg(owner)
        .arg("NX")
        .arg("PX")
        .arg(hold_ms)
        .query_async(&mut redis.clone())
        .await?;
    Ok(locked.is_some())
}

/// Renews `owner`'s lock of `sale` for `hold_ms`; `false` when `owner` no longer holds it.
///
/// # Errors
/// When Redis fails.
pub async fn renew(
    redis: &ConnectionManager,
    keys: &Keys,
    sale: Uuid,
    owner: &str,
    hold_ms: u64,
) -> redis::RedisResult<bool> {
    let held: i64 = script::LOCK_RENEW
        .redis()
        .key(keys.sale_draw_lock(sale))
        .arg(owner)
        .arg(hold_ms)
        .invoke_async(&mut redis.clone())
        .await?;
    Ok(held == 1)
}

/// Releases `owner`'s lock of `sale` (another owner's is left alone).
///
/// # Errors
/// When Redis fails.
pub async fn unlock(
    redis: &ConnectionManager,
    keys: &Keys,
    sale: Uuid,
    owner: &str,
) -> redis::RedisResult<()> {
    script::LOCK_RELEASE
        .redis()
        .key(keys.sale_draw_lock(sale))
        .arg(owner)
        .invoke_async::<i64>(&mut redis.clone())
        .await
        .map(drop)
}
