//! The write side of the product cache, shared by catalog-api (which reads the cache) and the
//! workers (which change stock when an order is cancelled or returned), so every stock change
//! reaches readers at once, whoever made it.
//!
//! An entry is `<version>|<json>`; after a write, `<version>|` (a tombstone). Every product
//! write bumps `products.version` under the row lock; the script stores an entry only when its
//! version is not older than the cached one (`lua/store_product.lua`), so a reader that fetched the row just before a
//! write can never put the old product back.

use std::time::Duration;

use redis::aio::ConnectionManager;
use uuid::Uuid;

use super::{Keys, script};

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
    script::STORE_PRODUCT
        .redis()
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
