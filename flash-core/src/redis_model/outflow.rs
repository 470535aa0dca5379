//! The outflow limit of a sale: a token bucket in Redis that every worker process draws from
//! (`lua/outflow_take.lua`, `lua/outflow_give_back.lua`), so `outflow_per_sec` holds for the
//! whole fleet, not per process.
//!
//! The bucket holds at most a fifth of a second of outflow: over any window of seconds the
//! drained count stays within a few percent of the limit, and a change of the limit takes
//! effect at the next pass. Time is Redis's own, so workers' clocks need not agree.

use crate::redis::Redis;
use uuid::Uuid;

use super::{Keys, OUTFLOW_BUCKET_TTL, millis, script};

/// Takes up to `want` tokens of `sale`'s bucket at `per_sec`; returns how many it got.
///
/// # Errors
/// When Redis is unreachable.
pub async fn take(
    redis: &Redis,
    keys: &Keys,
    sale: Uuid,
    per_sec: u32,
    want: usize,
) -> redis::RedisResult<usize> {
    let granted: i64 = script::OUTFLOW_TAKE
        .redis()
        .key(keys.sale_outflow(sale))
        .arg(per_sec)
        .arg(want)
        .arg(millis(OUTFLOW_BUCKET_TTL))
        .invoke_async(&mut redis.clone())
        .await?;
    Ok(usize::try_from(granted).unwrap_or(0))
}

/// Returns tokens a pass took but could not use (the queue held fewer tickets).
///
/// # Errors
/// When Redis is unreachable.
pub async fn give_back(
    redis: &Redis,
    keys: &Keys,
    sale: Uuid,
    unused: usize,
) -> redis::RedisResult<()> {
    script::OUTFLOW_GIVE_BACK
        .redis()
        .key(keys.sale_outflow(sale))
        .arg(unused)
        .invoke_async(&mut redis.clone())
        .await
}
