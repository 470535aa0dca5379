//! The pages in a real browser: headless Chromium (Debian's package) driven by playwright-core.
//! In the waiting room a buyer logs in, enters a sale that opens a moment later, waits and sees
//! its order; in the admin console an admin watches a running spike. member-api, catalog-api,
//! admission and workers all run in-process on their own ports, so what the pages show is real:
//! tickets drained from the queue into PostgreSQL.

use std::{path::PathBuf, process::Stdio, time::Duration};

use clap::Parser;
use flash_core::testing::Isolation;
use futures::StreamExt;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const ADMIN: (&str, &str) = ("admin@browser.test", "admin password 123");
const BUYER: (&str, &str) = ("buyer@browser.test", "buyer password 123");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// member-api, catalog-api and admission on their own ports (the workers start later, when a
/// test wants them), against a database, key prefix and streams of the test's own.
struct Services {
    iso: Isolation,
    members: String,
    catalog: String,
    door: String,
    mail_dir: PathBuf,
    shutdown: CancellationToken,
}

impl Services {
    async fn start(db: &PgPool) -> Self {
        let iso = Isolation::new();
        let (door, members, catalog) = (free_port(), free_port(), free_port());
        let door_origin = format!("http://127.0.0.1:{door}");
        let catalog_origin = format!("http://127.0.0.1:{catalog}");
        let shutdown = CancellationToken::new();

        let mut member_config = member_api::Config::parse_from(["member-api"]);
        member_config.addr = format!("127.0.0.1:{members}").parse().unwrap();
        member_config.redis = iso.redis.clone();
        member_config.nats = iso.nats.clone();
        member_config.jwt.jwt_public_key = iso.public_key_path();
        member_config.jwt_private_key = iso.private_key_path();
        member_config.admin_email = Some(ADMIN.0.into());
        member_config.admin_password = Some(ADMIN.1.into());
        member_config.order_history.catalog_url = catalog_origin.clone();
        member_config.http.cors_allowed_origins = vec![door_origin.clone(), catalog_origin.clone()];
        let member_app = member_api::App::build_with(member_config, db.clone(), shutdown.clone())
            .await
            .unwrap();
        tokio::spawn(member_app.run());

        let mut catalog_config = catalog_api::Config::parse_from(["catalog-api"]);
        catalog_config.addr = format!("127.0.0.1:{catalog}").parse().unwrap();
        catalog_config.redis = iso.redis.clone();
        catalog_config.jwt.jwt_public_key = iso.public_key_path();
        catalog_config.http.cors_allowed_origins = vec![door_origin.clone()];
        catalog_config.member_public_url = format!("http://127.0.0.1:{members}");
        let catalog_app =
            catalog_api::App::build_with(catalog_config, db.clone(), shutdown.clone())
                .await
                .unwrap();
        tokio::spawn(catalog_app.run());

        let mut door_config = admission::Config::parse_from(["admission"]);
        door_config.addr = format!("127.0.0.1:{door}").parse().unwrap();
        door_config.redis = iso.redis.clone();
        door_config.nats = iso.nats.clone();
        door_config.jwt.jwt_public_key = iso.public_key_path();
        door_config.member_public_url = format!("http://127.0.0.1:{members}");
        door_config.catalog_public_url = catalog_origin.clone();
        let door_app = admission::App::build_with(door_config, db.clone(), shutdown.clone())
            .await
            .unwrap();
        tokio::spawn(door_app.run());
        Self {
            iso,
            members: format!("http://127.0.0.1:{members}"),
            catalog: catalog_origin,
            door: door_origin,
            mail_dir: std::env::temp_dir().join(format!("browser-mail-{}", Uuid::new_v4())),
            shutdown,
        }
    }

    async fn start_workers(&self, db: &PgPool) {
        let mut worker_config = workers::Config::parse_from(["workers"]);
        worker_config.addr = "127.0.0.1:0".parse().unwrap();
        worker_config.redis = self.iso.redis.clone();
        worker_config.nats = self.iso.nats.clone();
        worker_config.mail_dir = self.mail_dir.clone();
        // Every charge goes through: the pages' outcomes are not left to the simulated
        // provider's random declines.
        worker_config.payment_decline_rate = 0.0;
        worker_config.payment_transient_rate = 0.0;
        let worker_app = workers::App::build_with(worker_config, db.clone(), self.shutdown.clone())
            .await
            .unwrap();
        tokio::spawn(worker_app.run());
    }

    async fn admin_token(&self, client: &reqwest::Client) -> String {
        let login: Value = client
            .post(format!("{}/auth/login", self.members))
            .json(&json!({"email": ADMIN.0, "password": ADMIN.1}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        login["access_token"].as_str().unwrap().to_owned()
    }

    /// A product and a sale of `quantity` units opening `starts_in` from now, asking each
    /// entry for a proof of work of `pow_bits`.
    async fn sale(
        &self,
        client: &reqwest::Client,
        admin: &str,
        quantity: i64,
        starts_in: chrono::Duration,
        pow_bits: u32,
    ) -> Uuid {
        let product: Value = client
            .post(format!("{}/products", self.catalog))
            .bearer_auth(admin)
            .json(&json!({"sku": format!("BROWSER-{}", Uuid::new_v4()), "name": "Sneaker", "price_cents": 12900, "currency": "EUR", "stock": quantity}))
            .send().await.unwrap().json().await.unwrap();
        let starts = chrono::Utc::now() + starts_in;
        let sale: Value = client
            .post(format!("{}/flash-sales", self.catalog))
            .bearer_auth(admin)
            .json(&json!({"product_id": product["id"], "price_cents": 9900, "quantity": quantity, "per_member_limit": 1,
                          "starts_at": starts, "ends_at": starts + chrono::Duration::hours(1), "pow_bits": pow_bits}))
            .send().await.unwrap().json().await.unwrap();
        sale["id"].as_str().unwrap().parse().unwrap()
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.iso.cleanup().await;
        let _ = std::fs::remove_dir_all(&self.mail_dir);
    }
}

/// Runs a browser script and returns what it printed, failing the test with its output when
/// it fails.
async fn run_browser(script: &str, page_url: &str, email: &str, password: &str) -> Value {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let run = tokio::process::Command::new("node")
        .arg(here.join("tests/browser").join(script))
        .env("PAGE_URL", page_url)
        .env("EMAIL", email)
        .env("PASSWORD", password)
        .env("SCREENSHOT_DIR", artifacts())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("browser run timed out")
        .expect("node runs");
    assert!(
        output.status.success(),
        "browser run failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn artifacts() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../artifacts")
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
#[ignore = "needs Debian's chromium and `npm ci` in admission/tests/browser; scripts/test provides both and runs it"]
async fn a_buyer_enters_waits_and_gets_an_order_in_the_waiting_room(db: PgPool) {
    let services = Services::start(&db).await;
    // The shop: an admin creates a product and a sale opening in three seconds that asks each
    // entry for a small proof of work (the page solves it); a buyer signs up.
    let client = reqwest::Client::new();
    let admin = services.admin_token(&client).await;
    let sale = services
        .sale(&client, &admin, 5, chrono::Duration::seconds(3), 12)
        .await;
    let signup: Value = client
        .post(format!("{}/members", services.members))
        .json(&json!({"email": BUYER.0, "password": BUYER.1, "name": "Browser Buyer"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let buyer: Uuid = signup["id"].as_str().unwrap().parse().unwrap();
    services.start_workers(&db).await;

    let shown = run_browser(
        "waiting_room.mjs",
        &format!("{}/sales/{sale}", services.door),
        BUYER.0,
        BUYER.1,
    )
    .await;
    assert!(artifacts().join("waiting-room.png").exists());
    let order: Uuid = shown["outcome"]
        .as_str()
        .unwrap()
        .trim_start_matches("Order ")
        .parse()
        .unwrap();
    let (owner, ticket): (Uuid, Option<Uuid>) =
        sqlx::query_as("select member_id, ticket_id from orders where order_id = $1")
            .bind(order)
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(owner, buyer, "the page showed the buyer's own order");
    assert!(ticket.is_some(), "a flash order made from the ticket");
    services.stop().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
#[ignore = "needs Debian's chromium and `npm ci` in admission/tests/browser; scripts/test provides both and runs it"]
async fn the_admin_console_follows_a_running_spike(db: PgPool) {
    const BUYERS: usize = 3_000;
    let services = Services::start(&db).await;
    let client = reqwest::Client::new();
    let admin = services.admin_token(&client).await;
    let sale = services
        .sale(&client, &admin, 2_500, chrono::Duration::seconds(-1), 0)
        .await;
    // The buyers: member rows and tokens minted with the test's key (a spike, not a signup test).
    let claims = admission::Config::parse_from(["admission"]).jwt;
    let signer = flash_core::auth::keys::JwtSigner::from_pem(
        &std::fs::read(services.iso.private_key_path()).unwrap(),
        &claims.jwt_issuer,
        &claims.jwt_audience,
        3600,
    )
    .unwrap();
    let ids: Vec<Uuid> = (0..BUYERS).map(|_| Uuid::now_v7()).collect();
    sqlx::query(
        "insert into members (member_id, email, password_hash, name)
         select id, id::text || '@console.test', 'x', 'Buyer' from unnest($1::uuid[]) as t(id)",
    )
    .bind(&ids)
    .execute(&db)
    .await
    .unwrap();
    let tokens: Vec<String> = ids
        .iter()
        .map(|id| {
            signer
                .mint(
                    (*id).into(),
                    flash_core::domain::Role::Buyer,
                    Uuid::new_v4(),
                )
                .unwrap()
                .0
        })
        .collect();
    services.start_workers(&db).await;
    // About 250 entries a second over 4 connections, so the spike outlasts the page's warm-up.
    let spike = {
        let door = services.door.clone();
        let client = client.clone();
        tokio::spawn(async move {
            futures::stream::iter(tokens)
                .for_each_concurrent(4, |token| {
                    let (client, door) = (client.clone(), door.clone());
                    async move {
                        let _ = client
                            .post(format!("{door}/sales/{sale}/tickets"))
                            .bearer_auth(token)
                            .send()
                            .await;
                        tokio::time::sleep(Duration::from_millis(15)).await;
                    }
                })
                .await;
        })
    };

    let shown = run_browser(
        "console.mjs",
        &format!("{}/console?sale={sale}", services.catalog),
        ADMIN.0,
        ADMIN.1,
    )
    .await;
    spike.abort();

    assert!(artifacts().join("console.png").exists());
    assert!(shown["points"].as_u64().unwrap() >= 8, "{shown}");
    let served: u64 = shown["served"]
        .as_str()
        .unwrap()
        .replace(',', "")
        .parse()
        .unwrap();
    assert!(served > 0, "the console saw tickets drained: {shown}");
    services.stop().await;
}
