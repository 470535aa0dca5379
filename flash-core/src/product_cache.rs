//! The write side of the product cache, shared by catalog-api (which reads the cache) and the
//! workers (which change stock when an order is cancelled or returned), so every stock change
//! reaches readers at once, whoever made it.
//!
//! An entry is `<version>|<json>`; after a write, `<version>|` (a tombstone). Every product
//! write bumps `products.version` under the row lock; a Lua script stores an entry only when its
//! version is not older than the cached one, so a reader that fetched the row just before a
//! write can never put the old product back.

use std::{sync::LazyLock, time::Duration};

use redis::{Script, aio::ConnectionManager};
use uuid::Uuid;

use crate::redis::Keys;

/// Stores ARGV[2] under KEYS[1] with version ARGV[1] unless a newer version is cached.
static STORE_IF_NOT_OLDER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local current = redis.call('GET', KEYS[1])
if current then
  local cached = tonumber(string.match(current, '^(%d+)|'))
  if cached and cached > tonumber(ARGV[1]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. ARGV[2], 'EX', ARGV[3])
return 1
",
    )
});

/// How long a tombstone lives when written by a service that has no cache TTL of its own; it
/// only bounds what is left behind, readers replace it with the fresh row.
pub const TOMBSTONE_TTL: Duration = Duration::from_secs(300);

/// Caches `json` as `product` at `version` (an empty `json` is a tombstone), unless a newer
/// version is cached. Returns whether it was stored.
///
/// # Errors
/// When Redis is unreachable.
pub async fn store(
    redis: &ConnectionManager,
    keys: &Keys,
    product: Uuid,
    version: i64,
    json: &str,
    ttl: Duration,
) -> redis::RedisResult<bool> {
    let mut conn = redis.clone();
    STORE_IF_NOT_OLDER
        .key(keys.product(product))
        .arg(version)
        .arg(json)
        .arg(ttl.as_secs().max(1))
        .invoke_async::<i64>(&mut conn)
        .await
        .map(|stored| stored == 1)
}

/// Records, after the commit, that each product changed to its version: readers go to
/// PostgreSQL until one of them caches that version. Best effort: a failure is logged, and the
/// old entry expires within its TTL.
pub async fn invalidate(redis: &ConnectionManager, keys: &Keys, changed: &[(Uuid, i64)]) {
    for &(product, version) in changed {
        if let Err(err) = store(redis, keys, product, version, "", TOMBSTONE_TTL).await {
            tracing::warn!(error = %err, %product, version, "product cache invalidation failed");
        }
    }
}
