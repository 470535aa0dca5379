//! The pre-queue release's Redis side: the pre-queued tickets, their placement in drawn order
//! and then the backlog's (`lua/place.lua`), and the lock that lets one admission process
//! release a sale (`lua/lock_renew.lua`, `lua/lock_release.lua`).

use crate::redis::Redis;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Keys, expire_at_ms, script, waitlist::Promoted};
use crate::domain::TicketStatus;

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

/// The tickets in `sale`'s pre-queue, in arrival order, closing it (`lua/close_prequeue.lua`):
/// a later entry goes behind it, whatever its door's clock says, so none is left out of the draw.
///
/// # Errors
/// When Redis fails.
pub async fn entrants(redis: &Redis, keys: &Keys, sale: Uuid) -> redis::RedisResult<Vec<Uuid>> {
    let listed: Vec<String> = script::CLOSE_PREQUEUE
        .redis()
        .key(keys.sale_meta(sale))
        .key(keys.sale_prequeue(sale))
        .invoke_async(&mut redis.clone())
        .await?;
    Ok(listed.iter().filter_map(|t| t.parse().ok()).collect())
}

async fn list(redis: &Redis, key: &str, last: i64) -> redis::RedisResult<Vec<Uuid>> {
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
    redis: &Redis,
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

/// The status of each of `tickets` (`None` for one Redis does not hold), a pipeline per call.
///
/// # Errors
/// When Redis fails.
pub async fn statuses(
    redis: &Redis,
    keys: &Keys,
    sale: Uuid,
    tickets: &[Uuid],
) -> redis::RedisResult<Vec<Option<TicketStatus>>> {
    let mut pipe = redis::pipe();
    for ticket in tickets {
        pipe.hget(keys.ticket(sale, *ticket), "status");
    }
    let found: Vec<Option<String>> = pipe.query_async(&mut redis.clone()).await?;
    Ok(found
        .into_iter()
        .map(|s| s.as_deref().and_then(TicketStatus::parse))
        .collect())
}

/// Places `drawn` tickets of `sale` (ending at `ends_at`) in that order: a unit and the next
/// queue number, else the waitlist, else `sold_out`. Tickets placed before are skipped.
///
/// # Errors
/// When Redis fails.
pub async fn place_drawn(
    redis: &Redis,
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
    redis: &Redis,
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
    redis: &Redis,
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
    redis: &Redis,
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
    redis: &Redis,
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
pub async fn unlock(redis: &Redis, keys: &Keys, sale: Uuid, owner: &str) -> redis::RedisResult<()> {
    script::LOCK_RELEASE
        .redis()
        .key(keys.sale_draw_lock(sale))
        .arg(owner)
        .invoke_async::<i64>(&mut redis.clone())
        .await
        .map(drop)
}

#[cfg(test)]
mod tests {
    use chrono::Duration as Span;

    use super::*;
    use crate::{
        domain::MemberId,
        redis_model::{
            entry::{Entry, EntryCall},
            sale_gate::{self, Arm, SaleMeta},
        },
        testing::Isolation,
    };

    /// `member`'s entry into `sale` by a door whose clock reads `now`.
    async fn enter(redis: &Redis, keys: &Keys, sale: Uuid, now: DateTime<Utc>) -> Uuid {
        let call = EntryCall::new(keys, sale, MemberId::new(), Uuid::now_v7(), now, 0);
        match call.run(redis).await.unwrap() {
            Entry::Queued { ticket, .. } | Entry::Prequeued { ticket } => ticket,
            other => panic!("an entry at {now}: {other:?}"),
        }
    }

    async fn status(redis: &Redis, keys: &Keys, sale: Uuid, ticket: Uuid) -> String {
        redis::cmd("HGET")
            .arg(keys.ticket(sale, ticket))
            .arg("status")
            .query_async(&mut redis.clone())
            .await
            .unwrap()
    }

    /// Item 8 of the hardening issue: the door decides "before the start" from its own clock.
    /// An entry whose door clock still reads before the start, arriving after the release read
    /// the pre-queue (or after the release), must still be placed, never left `prequeued`.
    #[tokio::test]
    async fn an_entry_after_the_draw_read_the_prequeue_is_still_placed() {
        let iso = Isolation::new();
        let redis = crate::redis::connect(&iso.redis).await.unwrap();
        let keys = Keys::new(&iso.redis.redis_key_prefix);
        let sale = Uuid::now_v7();
        let starts_at = Utc::now();
        let ends_at = starts_at + Span::hours(1);
        let meta = SaleMeta {
            prequeue_at: Some(starts_at - Span::minutes(5)),
            ..SaleMeta::open(starts_at, ends_at, 1)
        };
        sale_gate::arm(&redis, &keys, sale, 10, &meta, Arm::IfAbsent)
            .await
            .unwrap();
        let early = enter(&redis, &keys, sale, starts_at - Span::seconds(30)).await;

        let drawn = entrants(&redis, &keys, sale).await.unwrap();
        let late = enter(&redis, &keys, sale, starts_at - Span::milliseconds(1)).await;
        place_drawn(&redis, &keys, sale, ends_at, &drawn)
            .await
            .unwrap();
        while !place_backlog(&redis, &keys, sale, ends_at, 100)
            .await
            .unwrap()
            .done
        {}
        let after_release = enter(&redis, &keys, sale, starts_at - Span::milliseconds(1)).await;

        assert_eq!(drawn, vec![early]);
        for (name, ticket) in [("late", late), ("after the release", after_release)] {
            assert_ne!(
                status(&redis, &keys, sale, ticket).await,
                "prequeued",
                "the {name} entry was never placed"
            );
        }
        iso.cleanup().await;
    }
}
