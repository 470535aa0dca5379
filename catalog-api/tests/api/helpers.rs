//! Spawns catalog-api on port 0 against a per-test database and Redis prefix, and mints
//! tokens for members it inserts (catalog-api only verifies tokens; member-api mints them).

use std::net::SocketAddr;

use catalog_api::{App, Config};
use clap::Parser;
use flash_core::{
    auth::keys::JwtSigner,
    domain::{MemberId, Role},
    testing::Isolation,
};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub(crate) struct TestApp {
    pub(crate) base: String,
    pub(crate) client: reqwest::Client,
    pub(crate) db: PgPool,
    pub(crate) iso: Isolation,
    pub(crate) redis: flash_core::redis::Redis,
    signer: JwtSigner,
    shutdown: CancellationToken,
}

/// A member with a valid access token.
pub(crate) struct Caller {
    pub(crate) id: MemberId,
    pub(crate) token: String,
}

impl TestApp {
    pub(crate) async fn spawn(db: PgPool) -> Self {
        Self::spawn_with(db, |_, _| {}).await
    }

    /// [`Self::spawn`], with the isolation (its Redis, say) and the settings tweaked first.
    pub(crate) async fn spawn_with(
        db: PgPool,
        tweak: impl FnOnce(&mut Isolation, &mut Config),
    ) -> Self {
        let mut iso = Isolation::new();
        let mut config = Config::parse_from(["catalog-api"]);
        config.addr = "127.0.0.1:0".parse().unwrap();
        tweak(&mut iso, &mut config);
        config.redis = iso.redis.clone();
        config.jwt.jwt_public_key = iso.public_key_path();
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
        tokio::spawn(app.run());
        let redis = flash_core::redis::connect(&iso.redis).await.unwrap();
        Self {
            base: format!("http://{addr}"),
            client: reqwest::Client::new(),
            db,
            iso,
            redis,
            signer,
            shutdown,
        }
    }

    pub(crate) async fn teardown(self) {
        self.shutdown.cancel();
        self.iso.cleanup().await;
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Inserts a member with `role` and mints their token.
    pub(crate) async fn caller(&self, role: Role) -> Caller {
        let id = MemberId::new();
        sqlx::query("insert into members (member_id, email, password_hash, name, role) values ($1, $2, 'x', 'Test', $3)")
            .bind(id)
            .bind(format!("{id}@example.com"))
            .bind(if role == Role::Admin { "admin" } else { "buyer" })
            .execute(&self.db)
            .await
            .unwrap();
        let (token, _) = self.signer.mint(id, role, Uuid::new_v4()).unwrap();
        Caller { id, token }
    }

    pub(crate) async fn get(&self, path: &str, caller: Option<&Caller>) -> Response {
        let mut request = self.client.get(self.url(path));
        if let Some(caller) = caller {
            request = request.bearer_auth(&caller.token);
        }
        request.send().await.unwrap()
    }

    pub(crate) async fn send(
        &self,
        method: &str,
        path: &str,
        caller: Option<&Caller>,
        body: Option<&Value>,
    ) -> Response {
        let mut request = self.client.request(method.parse().unwrap(), self.url(path));
        if let Some(caller) = caller {
            request = request.bearer_auth(&caller.token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        request.send().await.unwrap()
    }

    /// Creates an active product as `admin`; returns its JSON.
    pub(crate) async fn product(
        &self,
        admin: &Caller,
        sku: &str,
        price_cents: i64,
        stock: i64,
    ) -> Value {
        let body = json!({"sku": sku, "name": format!("Product {sku}"), "price_cents": price_cents, "currency": "EUR", "stock": stock});
        let response = self
            .send("POST", "/products", Some(admin), Some(&body))
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        response.json().await.unwrap()
    }

    pub(crate) async fn stock(&self, product: &Value) -> i32 {
        let id: Uuid = product["id"].as_str().unwrap().parse().unwrap();
        let (stock,): (i32,) = sqlx::query_as("select stock from products where product_id = $1")
            .bind(id)
            .fetch_one(&self.db)
            .await
            .unwrap();
        stock
    }
}

/// Reads a problem+json body, checking its content type and status.
pub(crate) async fn problem(response: Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status.as_u16());
    body
}

/// A `redis-server` of this test's own on a free port, for faults the shared one must not see;
/// killed (by its own handle) when dropped.
pub(crate) struct PrivateRedis {
    pub(crate) url: String,
    server: std::process::Child,
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

impl PrivateRedis {
    pub(crate) async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server starts");
        let url = format!("redis://127.0.0.1:{port}");
        let client = redis::Client::open(url.as_str()).unwrap();
        for _ in 0..200 {
            if client.get_multiplexed_async_connection().await.is_ok() {
                return Self { url, server };
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        let _ = server.kill();
        let _ = server.wait();
        panic!("the private redis-server did not come up on port {port}");
    }

    /// Holds back every write (reads still answer) for `how_long`: `CLIENT PAUSE … WRITE`.
    pub(crate) async fn pause_writes(&self, how_long: std::time::Duration) {
        let client = redis::Client::open(self.url.as_str()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let millis = u64::try_from(how_long.as_millis()).unwrap();
        redis::cmd("CLIENT")
            .arg("PAUSE")
            .arg(millis)
            .arg("WRITE")
            .query_async::<()>(&mut conn)
            .await
            .unwrap();
    }
}
