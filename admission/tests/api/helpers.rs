//! Spawns the front door on port 0 with a per-test database, Redis prefix and NATS streams,
//! arms sales through the same shared function catalog-api uses, and mints buyer tokens.

use std::net::SocketAddr;

use admission::{App, Config};
use chrono::{DateTime, Duration, Utc};
use clap::Parser;
use flash_core::{
    auth::keys::JwtSigner,
    domain::{MemberId, Role},
    redis_model::Keys,
    redis_model::sale_gate::{self, Arm, SaleMeta},
    testing::Isolation,
};
use reqwest::{Response, StatusCode};
use serde_json::Value;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub(crate) struct TestApp {
    pub(crate) base: String,
    /// The ops address's base URL, when the test set `OPS_ADDR`.
    pub(crate) ops_base: Option<String>,
    pub(crate) client: reqwest::Client,
    pub(crate) db: PgPool,
    pub(crate) iso: Isolation,
    pub(crate) redis: flash_core::redis::Redis,
    pub(crate) keys: Keys,
    signer: JwtSigner,
    shutdown: CancellationToken,
}

/// A buyer with a valid token.
pub(crate) struct Buyer {
    pub(crate) id: MemberId,
    pub(crate) token: String,
}

impl TestApp {
    pub(crate) async fn spawn(db: PgPool) -> Self {
        Self::spawn_with(db, |_| {}).await
    }

    pub(crate) async fn spawn_with(db: PgPool, tweak: impl FnOnce(&mut Config)) -> Self {
        let iso = Isolation::new();
        let mut config = door_config(&iso);
        tweak(&mut config);
        let signer = JwtSigner::from_pem(
            iso.keys.private_pem.as_bytes(),
            &config.jwt.jwt_issuer,
            &config.jwt.jwt_audience,
            900,
        )
        .unwrap();
        let shutdown = CancellationToken::new();
        let app = App::build_with(config, db.clone(), shutdown.clone())
            .await
            .expect("app starts");
        let addr: SocketAddr = app.local_addr().unwrap();
        let ops_base = app.ops_addr().unwrap().map(|ops| format!("http://{ops}"));
        tokio::spawn(app.run());
        let redis = flash_core::redis::connect(&iso.redis).await.unwrap();
        let keys = Keys::new(&iso.redis.redis_key_prefix);
        Self {
            base: format!("http://{addr}"),
            ops_base,
            client: reqwest::Client::new(),
            db,
            iso,
            redis,
            keys,
            signer,
            shutdown,
        }
    }

    /// A second door process on the same Redis, NATS and database, with its own memory: its
    /// base URL. It stops with this one.
    pub(crate) async fn another_door(&self) -> String {
        let app = App::build_with(
            door_config(&self.iso),
            self.db.clone(),
            self.shutdown.clone(),
        )
        .await
        .expect("the second door starts");
        let addr: SocketAddr = app.local_addr().unwrap();
        tokio::spawn(app.run());
        format!("http://{addr}")
    }

    /// Starts a graceful shutdown, as SIGTERM would.
    pub(crate) fn stop(&self) {
        self.shutdown.cancel();
    }

    pub(crate) async fn teardown(self) {
        self.shutdown.cancel();
        self.iso.cleanup().await;
    }

    pub(crate) fn buyer(&self) -> Buyer {
        let id = MemberId::new();
        let (token, _) = self.signer.mint(id, Role::Buyer, Uuid::new_v4()).unwrap();
        Buyer { id, token }
    }

    /// Arms a sale of `units` in Redis, open from `starts_at` for an hour.
    pub(crate) async fn arm(&self, units: i64, starts_at: DateTime<Utc>) -> Uuid {
        let sale = Uuid::now_v7();
        let meta = SaleMeta::open(starts_at, starts_at + Duration::hours(1), 1);
        sale_gate::arm(&self.redis, &self.keys, sale, units, &meta, Arm::IfAbsent)
            .await
            .unwrap();
        sale
    }

    pub(crate) async fn enter(&self, sale: Uuid, buyer: &Buyer) -> Response {
        self.client
            .post(format!("{}/sales/{sale}/tickets", self.base))
            .bearer_auth(&buyer.token)
            .send()
            .await
            .unwrap()
    }

    /// The waiting room's question on arrival: the buyer's ticket in `sale`, if any.
    pub(crate) async fn mine(&self, sale: Uuid, buyer: &Buyer) -> Response {
        self.client
            .get(format!("{}/sales/{sale}/tickets/mine", self.base))
            .bearer_auth(&buyer.token)
            .send()
            .await
            .unwrap()
    }

    pub(crate) async fn poll(
        &self,
        ticket: &str,
        buyer: &Buyer,
        query: &str,
        etag: Option<&str>,
    ) -> Response {
        let mut request = self
            .client
            .get(format!("{}/tickets/{ticket}{query}", self.base))
            .bearer_auth(&buyer.token);
        if let Some(etag) = etag {
            request = request.header("if-none-match", etag);
        }
        request.send().await.unwrap()
    }

    pub(crate) async fn gate(&self, sale: Uuid) -> i64 {
        redis::AsyncCommands::get(&mut self.redis.clone(), self.keys.sale_gate(sale))
            .await
            .unwrap()
    }

    /// Deletes this test's flash stream, so every publish fails as with NATS unable to store
    /// it; the returned context makes it again (`ensure_flash_queue`).
    pub(crate) async fn lose_the_queue(&self) -> async_nats::jetstream::Context {
        let nats = flash_core::nats::connect(&self.iso.nats, "test")
            .await
            .unwrap();
        let js = async_nats::jetstream::new(nats);
        js.delete_stream(&self.iso.nats.nats_flash_stream)
            .await
            .unwrap();
        js
    }

    /// The door's `/metrics` text.
    pub(crate) async fn metrics(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Messages waiting in this test's flash queue.
    pub(crate) async fn queued_messages(&self) -> u64 {
        let nats = flash_core::nats::connect(&self.iso.nats, "test")
            .await
            .unwrap();
        let js = async_nats::jetstream::new(nats);
        let mut stream = js
            .get_stream(&self.iso.nats.nats_flash_stream)
            .await
            .unwrap();
        stream.info().await.unwrap().state.messages
    }
}

/// A door on port 0 using this test's Redis prefix, NATS names and key.
fn door_config(iso: &Isolation) -> Config {
    let mut config = Config::parse_from(["admission"]);
    config.addr = "127.0.0.1:0".parse().unwrap();
    config.redis = iso.redis.clone();
    config.nats = iso.nats.clone();
    config.jwt.jwt_public_key = iso.public_key_path();
    config
}

pub(crate) async fn json(response: Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status);
    response.json().await.unwrap()
}

/// A refusal the buyer should retry: `Retry-After` and a problem body with `status`.
pub(crate) async fn retry_later(response: Response, status: StatusCode) -> Value {
    assert!(response.headers().contains_key("retry-after"));
    problem(response, status).await
}

pub(crate) async fn problem(response: Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    response.json().await.unwrap()
}
