//! Spawns member-api on port 0 against a per-test database, Redis prefix and NATS stream.

use std::net::SocketAddr;

use clap::Parser;
use flash_core::testing::Isolation;
use member_api::{App, Config};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// Password that satisfies the rules.
pub(crate) const PASSWORD: &str = "correct horse battery";
pub(crate) const ADMIN_EMAIL: &str = "admin@flash.test";
pub(crate) const ADMIN_PASSWORD: &str = "admin password 123";

pub(crate) struct TestApp {
    pub(crate) base: String,
    pub(crate) client: reqwest::Client,
    pub(crate) db: PgPool,
    pub(crate) iso: Isolation,
    pub(crate) config: Config,
    shutdown: CancellationToken,
    /// Where member-api looks for catalog-api unless a test starts one: a port that refuses.
    _no_catalog: tokio::net::TcpSocket,
}

impl TestApp {
    pub(crate) async fn spawn(db: PgPool) -> Self {
        Self::spawn_with(db, |_| {}).await
    }

    /// Spawns the app after `tweak` adjusted its config.
    pub(crate) async fn spawn_with(db: PgPool, tweak: impl FnOnce(&mut Config)) -> Self {
        let iso = Isolation::new();

        let mut config = Config::parse_from(["member-api"]);
        config.addr = "127.0.0.1:0".parse().unwrap();
        config.redis = iso.redis.clone();
        config.nats = iso.nats.clone();
        config.jwt.jwt_public_key = iso.public_key_path();
        config.jwt_private_key = iso.private_key_path();
        config.admin_email = Some(ADMIN_EMAIL.into());
        config.admin_password = Some(ADMIN_PASSWORD.into());
        // No catalog-api unless a test starts one: a port held without listening refuses at
        // once.
        let (no_catalog, refusing) = flash_core::testing::refusing_port();
        config.order_history.catalog_url = format!("http://{refusing}");
        tweak(&mut config);

        let shutdown = CancellationToken::new();
        let app = App::build_with(config.clone(), db.clone(), shutdown.clone())
            .await
            .expect("app starts");
        let addr: SocketAddr = app.local_addr().unwrap();
        tokio::spawn(app.run());
        Self {
            base: format!("http://{addr}"),
            client: reqwest::Client::new(),
            db,
            iso,
            config,
            shutdown,
            _no_catalog: no_catalog,
        }
    }

    /// Starts a graceful shutdown (as SIGTERM would).
    pub(crate) fn stop(&self) {
        self.shutdown.cancel();
    }

    /// Stops the server and removes this test's Redis keys, NATS stream and key files.
    pub(crate) async fn teardown(self) {
        self.shutdown.cancel();
        self.iso.cleanup().await;
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub(crate) async fn post_json(&self, path: &str, body: &Value) -> Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub(crate) async fn signup(&self, email: &str) -> Response {
        self.post_json(
            "/members",
            &json!({"email": email, "password": PASSWORD, "name": "Test Buyer"}),
        )
        .await
    }

    pub(crate) async fn login(&self, email: &str, password: &str) -> Response {
        self.post_json(
            "/auth/login",
            &json!({"email": email, "password": password}),
        )
        .await
    }

    /// Signs up and logs in a fresh buyer; returns (access, refresh).
    pub(crate) async fn new_session(&self) -> (String, String) {
        let email = format!("buyer-{}@example.com", uuid::Uuid::new_v4().simple());
        assert_eq!(self.signup(&email).await.status(), StatusCode::CREATED);
        let response = self.login(&email, PASSWORD).await;
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.unwrap();
        (
            body["access_token"].as_str().unwrap().to_owned(),
            body["refresh_token"].as_str().unwrap().to_owned(),
        )
    }

    pub(crate) async fn get_me(&self, token: &str) -> Response {
        self.client
            .get(self.url("/members/me"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    pub(crate) async fn post_bearer(&self, path: &str, token: &str) -> Response {
        self.client
            .post(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }
}

/// Reads a problem+json body, checking its content type and status field.
pub(crate) async fn problem(response: Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status.as_u16());
    body
}
