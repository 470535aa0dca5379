//! The pages in a real browser: headless Chromium (Debian's package) driven by playwright-core.
//! In the waiting room a buyer logs in, enters a sale that opens a moment later, waits and sees
//! its order; in the admin console an admin watches a running spike. member-api, catalog-api,
//! admission and workers all run in-process on their own ports, so what the pages show is real:
//! tickets drained from the queue into PostgreSQL. The waiting room reaches member-api and
//! catalog-api only through the door's gateway: neither service allows the door's origin.

use std::{path::PathBuf, process::Stdio, time::Duration};

use clap::Parser;
use futures::StreamExt;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::stack::{ADMIN, Services};

const BUYER: (&str, &str) = ("buyer@browser.test", "buyer password 123");

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
