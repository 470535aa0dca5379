//! Waiting tickets (waitlisted, pre-queued) put back into a Redis that lost their sale
//! (`lua/restore_waiting.lua`), from PostgreSQL's copy ([`crate::waiting`]).

use chrono::{DateTime, Utc};
use redis::aio::ConnectionManager;
use uuid::Uuid;

use super::{Keys, TAG_TTL, expire_at_ms, sale_tag, script};
use crate::waiting::Waiting;

/// Tickets restored per script call, so Redis is never blocked for long.
const CHUNK: usize = 500;

/// Restores `waiting` tickets of `sale` (ending at `ends_at`) in their order, and registers the
/// sale under its tag so polls find them; tickets Redis still holds are left as they are.
/// Returns how many were restored.
///
/// # Errors
/// When Redis fails.
pub async fn restore(
    redis: &ConnectionManager,
    keys: &Keys,
    sale: Uuid,
    ends_at: DateTime<Utc>,
    waiting: &[Waiting],
) -> redis::RedisResult<u64> {
    let expire_at = expire_at_ms(ends_at);
    let now = Utc::now().timestamp_millis();
    let mut restored = 0;
    for chunk in waiting.chunks(CHUNK) {
        let mut call = script::RESTORE_WAITING.redis().prepare_invoke();
        call.key(keys.sale_waitlist(sale))
            .key(keys.sale_waitlist_seq(sale))
            .key(keys.sale_prequeue(sale))
            .arg(expire_at)
            .arg(now);
        for ticket in chunk {
            call.key(keys.ticket(sale, ticket.ticket))
                .key(keys.member_ticket(sale, ticket.member))
                .arg(ticket.ticket.to_string())
                .arg(ticket.member.to_string())
                .arg(ticket.kind.as_str());
        }
        restored += call.invoke_async::<u64>(&mut redis.clone()).await?;
    }
    if !waiting.is_empty() {
        let tag = keys.sale_tag(sale_tag(sale));
        redis::pipe()
            .cmd("SADD")
            .arg(&tag)
            .arg(sale.to_string())
            .ignore()
            .cmd("EXPIRE")
            .arg(&tag)
            .arg(TAG_TTL.as_secs())
            .ignore()
            .query_async::<()>(&mut redis.clone())
            .await?;
    }
    Ok(restored)
}
