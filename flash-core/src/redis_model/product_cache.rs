//! The product cache, both sides: catalog-api reads it (cache-aside, [`ProductCache`]); catalog-api
//! and the workers write it (the workers change stock when an order is cancelled or returned), so
//! every stock change reaches readers at once, whoever made it.
//!
//! An entry is `<version>|<json>`; after a write, `<version>|` (a tombstone). Every product
//! write bumps `products.version` under the row lock; the script stores an entry only when its
//! version is not older than the cached one (`lua/store_product.lua`), so a reader that fetched
//! the row just before a write can never put the old product back: once a writer got its 200,
//! readers see the new row.

use std::time::Duration;

use crate::redis::Redis;
use uuid::Uuid;

use super::{Keys, script};

/// How long a tombstone lives when written by a service that has no cache TTL of its own; it
/// only bounds what is left behind, readers replace it with the fresh row.
pub const TOMBSTONE_TTL: Duration = Duration::from_secs(300);

/// What a cache lookup found.
pub enum Lookup {
    /// A current copy of the product, as JSON.
    Hit(String),
    /// Nothing usable (absent, or a tombstone left by a write).
    Miss,
}

/// The reader's handle: lookups, fills after a PostgreSQL read, and invalidation after its own
/// writes, all with the reader's TTL. Counts `flash_catalog_product_cache_total{result}`.
#[derive(Clone)]
pub struct ProductCache {
    redis: Redis,
    keys: Keys,
    ttl: Duration,
}

impl ProductCache {
    /// A cache on `redis` whose entries live `ttl`.
    #[must_use]
    pub fn new(redis: Redis, keys: Keys, ttl: Duration) -> Self {
        Self { redis, keys, ttl }
    }

    /// Looks a product up. A Redis failure counts as a miss: the cache must never make a read
    /// fail that PostgreSQL can answer.
    pub async fn get(&self, product: Uuid) -> Lookup {
        let mut conn = self.redis.clone();
        let found: redis::RedisResult<Option<String>> = redis::cmd("GET")
            .arg(self.keys.product(product))
            .query_async(&mut conn)
            .await;
        match found {
            Ok(Some(entry)) => match entry.split_once('|') {
                Some((_, json)) if !json.is_empty() => {
                    count("hit");
                    Lookup::Hit(json.to_owned())
                }
                _ => miss("miss"),
            },
            Ok(None) => miss("miss"),
            Err(err) => {
                tracing::warn!(error = %err, "product cache unavailable; reading PostgreSQL");
                miss("error")
            }
        }
    }

    /// Caches the product read at `version` (unless a newer version is already cached).
    pub async fn fill(&self, product: Uuid, version: i64, json: &str) {
        self.store_logged(product, version, json).await;
    }

    /// Records that the product changed to `version`; readers go to PostgreSQL until one of them
    /// caches that version. Call after the writing transaction committed.
    pub async fn invalidate(&self, product: Uuid, version: i64) {
        self.store_logged(product, version, "").await;
    }

    async fn store_logged(&self, product: Uuid, version: i64, json: &str) {
        let stored = store(&self.redis, &self.keys, product, version, json, self.ttl).await;
        if let Err(err) = stored {
            // The entry expires within the TTL; nothing else can be done without Redis.
            tracing::warn!(error = %err, %product, version, "product cache write failed");
        }
    }
}

fn count(result: &'static str) {
    metrics::counter!("flash_catalog_product_cache_total", "result" => result).increment(1);
}

fn miss(result: &'static str) -> Lookup {
    count(result);
    Lookup::Miss
}

/// Caches `json` as `product` at `version` (an empty `json` is a tombstone), unless a newer
/// version is cached. Returns whether it was stored.
///
/// # Errors
/// When Redis is unreachable.
pub async fn store(
    redis: &Redis,
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
pub async fn invalidate(redis: &Redis, keys: &Keys, changed: &[(Uuid, i64)]) {
    for &(product, version) in changed {
        if let Err(err) = store(redis, keys, product, version, "", TOMBSTONE_TTL).await {
            tracing::warn!(error = %err, %product, version, "product cache invalidation failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::Isolation;

    use super::*;

    async fn cache() -> (ProductCache, Isolation) {
        let iso = Isolation::new();
        let redis = crate::redis::connect(&iso.redis).await.expect("redis");
        let cache = ProductCache::new(
            redis,
            Keys::new(&iso.redis.redis_key_prefix),
            Duration::from_secs(60),
        );
        (cache, iso)
    }

    /// The race the versions exist for: a reader fetched version 1, a writer committed
    /// version 2 and invalidated, then the slow reader tries to cache version 1.
    #[tokio::test]
    async fn a_slow_reader_cannot_cache_a_version_older_than_a_write() {
        let (cache, iso) = cache().await;
        let product = Uuid::new_v4();

        cache.invalidate(product, 2).await;
        cache.fill(product, 1, r#"{"price_cents":100}"#).await;
        let after_stale_fill = cache.get(product).await;
        cache.fill(product, 2, r#"{"price_cents":200}"#).await;
        let after_fresh_fill = cache.get(product).await;
        cache.fill(product, 1, r#"{"price_cents":100}"#).await;
        let after_second_stale_fill = cache.get(product).await;

        assert!(matches!(after_stale_fill, Lookup::Miss));
        assert!(matches!(after_fresh_fill, Lookup::Hit(ref json) if json.contains("200")));
        assert!(matches!(after_second_stale_fill, Lookup::Hit(ref json) if json.contains("200")));
        iso.cleanup().await;
    }
}
