//! Waiting tickets (waitlisted, pre-queued) put back into a Redis that lost their sale
//! (`lua/restore_waiting.lua`), from PostgreSQL's copy ([`crate::waiting`]).

use crate::redis::Redis;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Keys, expire_at_ms, script};
use crate::waiting::Waiting;

/// Tickets restored per script call, so Redis is never blocked for long.
const CHUNK: usize = 500;

/// Restores `waiting` tickets of `sale` (ending at `ends_at`) in their order; tickets Redis
/// still holds are left as they are. Polls find them once the sale is listed under its tag
/// again ([`super::register_tag`], which the caller does).
/// Returns how many were restored.
///
/// # Errors
/// When Redis fails.
pub async fn restore(
    redis: &Redis,
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
    Ok(restored)
}
