//! Cache-aside for product reads, safe against the stale-reader race: entries carry the
//! product's version and an older version never replaces a newer one (the write side is
//! `flash_core::redis_model::product_cache`, shared with the workers, who restock products too). Once a
//! writer got its 200, readers see the new row.

use std::time::Duration;

use redis::aio::ConnectionManager;
use uuid::Uuid;

use flash_core::redis_model::{Keys, product_cache};

/// What a cache lookup found.
pub(crate) enum Lookup {
    /// A current copy of the product, as JSON.
    Hit(String),
    /// Nothing usable (absent, or a tombstone left by a write).
    Miss,
}

/// The product cache.
#[derive(Clone)]
pub(crate) struct ProductCache {
    redis: ConnectionManager,
    keys: Keys,
    ttl: Duration,
}

impl ProductCache {
    pub(crate) fn new(redis: ConnectionManager, keys: Keys, ttl: Duration) -> Self {
        Self { redis, keys, ttl }
    }

    /// Looks a product up. A Redis failure counts as a miss: the cache must never make a read
    /// fail that PostgreSQL can answer.
    pub(crate) async fn get(&self, product: Uuid) -> Lookup {
        let mut conn = self.redis.clone();
        let found: redis::RedisResult<Option<String>> = redis::cmd("GET")
            .arg(self.keys.product(product))
            .query_async(&mut conn)
            .await;
        match found {
            Ok(Some(entry)) => match entry.split_once('|') {
                Some((_, json)) if !json.is_empty() => {
                    metrics::counter!("flash_catalog_product_cache_total", "result" => "hit")
                        .increment(1);
                    Lookup::Hit(json.to_owned())
                }
                _ => self.miss("miss"),
            },
            Ok(None) => self.miss("miss"),
            Err(err) => {
                tracing::warn!(error = %err, "product cache unavailable; reading PostgreSQL");
                self.miss("error")
            }
        }
    }

    fn miss(&self, result: &'static str) -> Lookup {
        metrics::counter!("flash_catalog_product_cache_total", "result" => result).increment(1);
        Lookup::Miss
    }

    /// Caches the product read at `version` (unless a newer version is already cached).
    pub(crate) async fn fill(&self, product: Uuid, version: i64, json: &str) {
        self.store(product, version, json).await;
    }

    /// Records that the product changed to `version`; readers go to PostgreSQL until one of them
    /// caches that version. Call after the writing transaction committed.
    pub(crate) async fn invalidate(&self, product: Uuid, version: i64) {
        self.store(product, version, "").await;
    }

    async fn store(&self, product: Uuid, version: i64, json: &str) {
        let stored =
            product_cache::store(&self.redis, &self.keys, product, version, json, self.ttl).await;
        if let Err(err) = stored {
            // The entry expires within the TTL; nothing else can be done without Redis.
            tracing::warn!(error = %err, %product, version, "product cache write failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use flash_core::testing::Isolation;

    use super::*;

    async fn cache() -> (ProductCache, Isolation) {
        let iso = Isolation::new();
        let redis = flash_core::redis::connect(&iso.redis).await.expect("redis");
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
