//! The outflow limit of a sale: a token bucket in Redis that every worker process draws from,
//! so `outflow_per_sec` holds for the whole fleet, not per process.
//!
//! The bucket holds at most a fifth of a second of outflow: over any window of seconds the
//! drained count stays within a few percent of the limit, and a change of the limit takes
//! effect at the next pass. Time is Redis's own, so workers' clocks need not agree.

use flash_core::redis::Keys;
use redis::aio::ConnectionManager;
use uuid::Uuid;

/// KEYS: bucket; ARGV: rate per second, tokens wanted. Returns the tokens granted.
const TAKE: &str = "
local rate = tonumber(ARGV[1])
local want = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local burst = math.max(1, rate / 5)
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(b[1]) or burst
local at = tonumber(b[2]) or now
if now > at then tokens = math.min(burst, tokens + (now - at) * rate / 1000) end
local take = math.min(want, math.floor(tokens))
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens - take), 'at', now)
redis.call('PEXPIRE', KEYS[1], 60000)
return take";

/// KEYS: bucket; ARGV: tokens to return.
const GIVE_BACK: &str = "
local tokens = tonumber(redis.call('HGET', KEYS[1], 'tokens'))
if tokens then redis.call('HSET', KEYS[1], 'tokens', tostring(tokens + tonumber(ARGV[1]))) end
return 0";

/// Takes up to `want` tokens of `sale`'s bucket at `per_sec`; returns how many it got.
///
/// # Errors
/// When Redis is unreachable.
pub(crate) async fn take(
    redis: &ConnectionManager,
    keys: &Keys,
    sale: Uuid,
    per_sec: u32,
    want: usize,
) -> redis::RedisResult<usize> {
    let mut conn = redis.clone();
    let granted: i64 = redis::Script::new(TAKE)
        .key(keys.sale_outflow(sale))
        .arg(per_sec)
        .arg(want)
        .invoke_async(&mut conn)
        .await?;
    Ok(usize::try_from(granted).unwrap_or(0))
}

/// Returns tokens a pass took but could not use (the queue held fewer tickets).
///
/// # Errors
/// When Redis is unreachable.
pub(crate) async fn give_back(
    redis: &ConnectionManager,
    keys: &Keys,
    sale: Uuid,
    unused: usize,
) -> redis::RedisResult<()> {
    let mut conn = redis.clone();
    redis::Script::new(GIVE_BACK)
        .key(keys.sale_outflow(sale))
        .arg(unused)
        .invoke_async(&mut conn)
        .await
}
