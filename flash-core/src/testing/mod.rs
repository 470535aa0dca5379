//! Test support (feature `test-util`, and flash-core's own unit tests): per-test Redis prefixes
//! and NATS names against the real servers, clean-up so parallel tests leave nothing behind,
//! and a [`Proxy`] that takes a server away from the processes under test.

mod proxy;
mod servers;

pub use proxy::Proxy;
pub use servers::{OwnServer, find_program, free_port};

use std::{
    path::PathBuf,
    sync::atomic::{AtomicBool, Ordering},
};

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
    /// Set by [`Isolation::cleanup`]; otherwise dropping cleans up (a test that failed).
    cleaned: AtomicBool,
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
            cleaned: AtomicBool::new(false),
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
        delete_keys(&self.redis).await;
    }

    /// Deletes this test's Redis keys, NATS streams and key files.
    ///
    /// # Panics
    /// When Redis or NATS cannot be reached, so a broken clean-up is visible.
    pub async fn cleanup(&self) {
        self.cleaned.store(true, Ordering::Relaxed);
        clean(&self.redis, &self.nats, &self.key_dir).await;
    }
}

/// Deletes every key under `redis`'s prefix.
async fn delete_keys(redis: &RedisArgs) {
    let mut conn = crate::redis::connect(redis).await.expect("redis connect");
    let pattern = format!("{}*", redis.redis_key_prefix);
    let keys = crate::redis::scan_keys(&conn, &pattern)
        .await
        .expect("redis scan");
    if !keys.is_empty() {
        conn.del::<_, ()>(keys).await.expect("redis del");
    }
}

/// Deletes one test's Redis keys (those under `redis`'s prefix), NATS streams and key files.
async fn clean(redis: &RedisArgs, nats: &NatsArgs, key_dir: &std::path::Path) {
    delete_keys(redis).await;
    let client = crate::nats::connect(nats, "test-cleanup")
        .await
        .expect("nats connect");
    let js = async_nats::jetstream::new(client);
    // The stream may never have been created by this test; that is fine.
    let _ = js.delete_stream(&nats.nats_jobs_stream).await;
    let _ = js.delete_stream(&nats.nats_flash_stream).await;
    let _ = js
        .delete_stream(format!("{}_DEAD", nats.nats_flash_stream))
        .await;
    let _ = js
        .delete_stream(crate::nats::events_stream_name(nats))
        .await;
    let _ = std::fs::remove_dir_all(key_dir);
}

/// A loopback socket on a port of its own, for a service's `http.listener`: bound here and
/// kept, so no other test takes the port before the service serves on it; and its address.
///
/// # Panics
/// When the OS has no free port, which would end the test run anyway.
pub fn listener() -> (std::sync::Arc<std::net::TcpListener>, std::net::SocketAddr) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
    let addr = listener.local_addr().expect("the bound address");
    (std::sync::Arc::new(listener), addr)
}

/// A loopback port that refuses connections for as long as the returned socket lives: bound,
/// never listening, so nothing else can listen there meanwhile.
///
/// # Panics
/// When the OS has no free port.
pub fn refusing_port() -> (tokio::net::TcpSocket, std::net::SocketAddr) {
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket
        .bind("127.0.0.1:0".parse().expect("a socket address"))
        .expect("a free loopback port");
    let addr = socket.local_addr().expect("the bound address");
    (socket, addr)
}

/// A test that panicked never reached its `cleanup`: its keys and streams go when its
/// isolation is dropped (while the panic unwinds), so failed runs leave no residue on the shared
/// servers either. Runs on a thread of its own, since a drop cannot await.
impl Drop for Isolation {
    fn drop(&mut self) {
        if self.cleaned.swap(true, Ordering::Relaxed) {
            return;
        }
        let (redis, nats, key_dir) = (self.redis.clone(), self.nats.clone(), self.key_dir.clone());
        let cleaned = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the clean-up");
            runtime.block_on(async {
                let within = std::time::Duration::from_secs(10);
                let _ = tokio::time::timeout(within, clean(&redis, &nats, &key_dir)).await;
            });
        })
        .join();
        if cleaned.is_err() {
            eprintln!(
                "cleaning up after test prefix {} failed",
                self.redis.redis_key_prefix
            );
        }
    }
}

impl Default for Isolation {
    fn default() -> Self {
        Self::new()
    }
}
