//! The waiting room in a real browser: headless Chromium (Debian's package) driven by
//! playwright-core logs in, enters a sale that opens a moment later, waits and sees its order.
//! member-api, catalog-api, admission and workers all run in-process on their own ports, so the
//! order the page shows is a real one, drained from the queue into PostgreSQL.

use std::{path::PathBuf, process::Stdio, time::Duration};

use clap::Parser;
use flash_core::testing::Isolation;
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

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
#[ignore = "needs Debian's chromium and `npm ci` in admission/tests/browser; scripts/test provides both and runs it"]
async fn a_buyer_enters_waits_and_gets_an_order_in_the_waiting_room(db: PgPool) {
    let iso = Isolation::new();
    let (door, members, catalog) = (free_port(), free_port(), free_port());
    let door_origin = format!("http://127.0.0.1:{door}");
    let shutdown = CancellationToken::new();

    let mut member_config = member_api::Config::parse_from(["member-api"]);
    member_config.addr = format!("127.0.0.1:{members}").parse().unwrap();
    member_config.redis = iso.redis.clone();
    member_config.nats = iso.nats.clone();
    member_config.jwt.jwt_public_key = iso.public_key_path();
    member_config.jwt_private_key = iso.private_key_path();
    member_config.admin_email = Some(ADMIN.0.into());
    member_config.admin_password = Some(ADMIN.1.into());
    member_config.order_history.catalog_url = format!("http://127.0.0.1:{catalog}");
    member_config.http.cors_allowed_origins = vec![door_origin.clone()];
    let member_app = member_api::App::build_with(member_config, db.clone(), shutdown.clone())
        .await
        .unwrap();
    tokio::spawn(member_app.run());

    let mut catalog_config = catalog_api::Config::parse_from(["catalog-api"]);
    catalog_config.addr = format!("127.0.0.1:{catalog}").parse().unwrap();
    catalog_config.redis = iso.redis.clone();
    catalog_config.jwt.jwt_public_key = iso.public_key_path();
    catalog_config.http.cors_allowed_origins = vec![door_origin.clone()];
    let catalog_app = catalog_api::App::build_with(catalog_config, db.clone(), shutdown.clone())
        .await
        .unwrap();
    tokio::spawn(catalog_app.run());

    let mut door_config = admission::Config::parse_from(["admission"]);
    door_config.addr = format!("127.0.0.1:{door}").parse().unwrap();
    door_config.redis = iso.redis.clone();
    door_config.nats = iso.nats.clone();
    door_config.jwt.jwt_public_key = iso.public_key_path();
    door_config.member_public_url = format!("http://127.0.0.1:{members}");
    door_config.catalog_public_url = format!("http://127.0.0.1:{catalog}");
    let door_app = admission::App::build_with(door_config, db.clone(), shutdown.clone())
        .await
        .unwrap();
    tokio::spawn(door_app.run());

    // The shop: an admin creates a product and a sale opening in three seconds; a buyer signs up.
    let client = reqwest::Client::new();
    let login: Value = client
        .post(format!("http://127.0.0.1:{members}/auth/login"))
        .json(&json!({"email": ADMIN.0, "password": ADMIN.1}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let admin = login["access_token"].as_str().unwrap().to_owned();
    let product: Value = client
        .post(format!("http://127.0.0.1:{catalog}/products"))
        .bearer_auth(&admin)
        .json(&json!({"sku": "BROWSER-1", "name": "Sneaker", "price_cents": 12900, "currency": "EUR", "stock": 10}))
        .send().await.unwrap().json().await.unwrap();
    let starts = chrono::Utc::now() + chrono::Duration::seconds(3);
    let sale: Value = client
        .post(format!("http://127.0.0.1:{catalog}/flash-sales"))
        .bearer_auth(&admin)
        .json(&json!({"product_id": product["id"], "price_cents": 9900, "quantity": 5, "per_member_limit": 1,
                      "starts_at": starts, "ends_at": starts + chrono::Duration::hours(1)}))
        .send().await.unwrap().json().await.unwrap();
    let sale: Uuid = sale["id"].as_str().unwrap().parse().unwrap();
    let signup: Value = client
        .post(format!("http://127.0.0.1:{members}/members"))
        .json(&json!({"email": BUYER.0, "password": BUYER.1, "name": "Browser Buyer"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let buyer: Uuid = signup["id"].as_str().unwrap().parse().unwrap();

    let mut worker_config = workers::Config::parse_from(["workers"]);
    worker_config.addr = "127.0.0.1:0".parse().unwrap();
    worker_config.redis = iso.redis.clone();
    worker_config.nats = iso.nats.clone();
    let worker_app = workers::App::build_with(worker_config, db.clone(), shutdown.clone())
        .await
        .unwrap();
    tokio::spawn(worker_app.run());

    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let artifacts = here.join("../artifacts");
    let run = tokio::process::Command::new("node")
        .arg(here.join("tests/browser/waiting_room.mjs"))
        .env("PAGE_URL", format!("{door_origin}/sales/{sale}"))
        .env("EMAIL", BUYER.0)
        .env("PASSWORD", BUYER.1)
        .env("SCREENSHOT_DIR", &artifacts)
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
    assert!(artifacts.join("waiting-room.png").exists());
    let shown: Value = serde_json::from_slice(&output.stdout).unwrap();
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
    shutdown.cancel();
    iso.cleanup().await;
}
