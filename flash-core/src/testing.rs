//! Test support (feature `test-util`, and flash-core's own unit tests): per-test Redis prefixes
//! and NATS names against the real servers, and clean-up so parallel tests leave nothing behind.

use std::path::PathBuf;

use clap::Parser;
use redis::AsyncCommands;
use uuid::Uuid;

use crate::{
    auth::keys::KeyPair,
    config::{NatsArgs, RedisArgs},
};

#[derive(Parser)]
struct ServerUrls {
    #[command(flatten)]
    redis: RedisArgs,
    #[command(flatten)]
    nats: NatsArgs,
}

/// Redis and NATS settings unique to one test: the real servers (from `REDIS_URL` / `NATS_URL`
/// or loopback), a key prefix, subject prefix and stream name nobody else uses.
pub struct Isolation {
    /// Redis settings with a unique key prefix.
    pub redis: RedisArgs,
    /// NATS settings with a unique subject prefix and stream names.
    pub nats: NatsArgs,
    /// A fresh Ed25519 pair for this test's tokens.
    pub keys: KeyPair,
    /// Folder holding the pair as files, for services that read key paths.
    key_dir: PathBuf,
}

impl Isolation {
    /// Fresh names for one test.
    ///
    /// # Panics
    /// When key generation fails, which would be a bug.
    pub fn new() -> Self {
        let id = Uuid::new_v4().simple().to_string();
        let mut urls = ServerUrls::parse_from(["test"]);
        urls.redis.redis_key_prefix = format!("test:{id}:");
        urls.nats.nats_subject_prefix = format!("t{id}.");
        urls.nats.nats_jobs_stream = format!("JOBS_{id}");
        urls.nats.nats_flash_stream = format!("FLASH_{id}");
        let keys = KeyPair::generate().expect("BUG: key generation failed");
        let key_dir = std::env::temp_dir().join(format!("flash-test-keys-{id}"));
        std::fs::create_dir_all(&key_dir).expect("creating the test key folder");
        std::fs::write(key_dir.join("private.pem"), &keys.private_pem)
            .expect("writing the test private key");
        std::fs::write(key_dir.join("public.pem"), &keys.public_pem)
            .expect("writing the test public key");
        Self {
            redis: urls.redis,
            nats: urls.nats,
            keys,
            key_dir,
        }
    }

    /// Path of this test's private key file (PKCS#8 PEM).
    pub fn private_key_path(&self) -> PathBuf {
        self.key_dir.join("private.pem")
    }

    /// Path of this test's public key file (SPKI PEM).
    pub fn public_key_path(&self) -> PathBuf {
        self.key_dir.join("public.pem")
    }

    /// Deletes every Redis key of this test: what a `FLUSHALL` or a restart without
    /// persistence does to it, without touching anyone else's keys.
    ///
    /// # Panics
    /// When Redis cannot be reached.
    pub async fn lose_redis(&self) {
        let client = redis::Client::open(self.redis.redis_url.as_str()).expect("REDIS_URL");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("redis connect");
        let pattern = format!("{}*", self.redis.redis_key_prefix);
        let keys = crate::redis::scan_keys(&mut conn, &pattern)
            .await
            .expect("redis scan");
        if !keys.is_empty() {
            conn.del::<_, ()>(keys).await.expect("redis del");
        }
    }

    /// Deletes this test's Redis keys, NATS streams and key files.
    ///
    /// # Panics
    /// When Redis or NATS cannot be reached, so a broken clean-up is visible.
    pub async fn cleanup(&self) {
        self.lose_redis().await;
        let nats = crate::nats::connect(&self.nats, "test-cleanup")
            .await
            .expect("nats connect");
        let js = async_nats::jetstream::new(nats);
        // The stream may never have been created by this test; that is fine.
        let _ = js.delete_stream(&self.nats.nats_jobs_stream).await;
        let _ = js.delete_stream(&self.nats.nats_flash_stream).await;
        let _ = js
            .delete_stream(format!("{}_DEAD", self.nats.nats_flash_stream))
            .await;
        let _ = js
            .delete_stream(crate::nats::events_stream_name(&self.nats))
            .await;
        let _ = std::fs::remove_dir_all(&self.key_dir);
    }
}

impl Default for Isolation {
    fn default() -> Self {
        Self::new()
    }
}
