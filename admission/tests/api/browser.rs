//! The pages in a real browser: Debian's headless Chromium driven over WebDriver by Debian's
//! chromedriver (see `webdriver.rs`). In the waiting room a buyer logs in, enters a sale that
//! opens a moment later, waits and sees its order; in the admin console an admin watches a
//! running spike. member-api, catalog-api, admission and workers all run in-process on their own
//! ports, so what the pages show is real: tickets drained from the queue into PostgreSQL. The
//! waiting room reaches member-api and catalog-api only through the door's gateway: neither
//! service allows the door's origin.

use std::{
    path::PathBuf,
    time::{Duration, SystemTime},
};

use anyhow::{Result, ensure};
use clap::Parser;
use futures::StreamExt;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    stack::{ADMIN, Services},
    webdriver::{Page, Viewport},
};

const BUYER: (&str, &str) = ("buyer@browser.test", "buyer password 123");
/// A phone, as the waiting room's buyers mostly are.
const PHONE: Viewport = Viewport {
    width: 390,
    height: 844,
    scale: 2.0,
};
/// A laptop's window, for the admin console.
const LAPTOP: Viewport = Viewport {
    width: 1100,
    height: 720,
    scale: 1.0,
};

fn artifacts() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../artifacts")
}

/// Whether `file` among the artifacts is a PNG this run wrote (written at or after `since`): a
/// screenshot left by an earlier run must not pass for this one's.
fn png_written_since(file: &str, since: SystemTime) -> bool {
    let path = artifacts().join(file);
    let fresh = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .is_ok_and(|modified| modified >= since);
    let png = std::fs::read(&path).is_ok_and(|bytes| bytes.starts_with(b"\x89PNG\r\n\x1a\n"));
    fresh && png
}

/// Drives the waiting-room page like a buyer on a phone: log in, enter the sale (which opens a
/// few seconds later, so the page must wait out a 425), wait in the queue, see the outcome.
/// Returns the outcome line, `Order <id>`.
async fn wait_in_the_waiting_room(page: &Page, url: &str) -> Result<String> {
    page.goto(url).await?;
    page.wait_for_text(&["left"], Duration::from_secs(10))
        .await?;
    page.fill("Email", BUYER.0).await?;
    page.fill("Password", BUYER.1).await?;
    page.click("Log in").await?;
    page.click("Enter the sale").await?;
    // The order may already be paid by the time the page looks again.
    let got_one = ["You got one!", "Paid — it's yours!"];
    let queued_or_got_one = ["You're in the queue", got_one[0], got_one[1]];
    page.wait_for_text(&queued_or_got_one, Duration::from_secs(30))
        .await?;
    page.screenshot("waiting-room-queued.png").await?;
    page.wait_for_text(&got_one, Duration::from_secs(30))
        .await?;
    let outcome = page.text("#eta").await?;
    let id = outcome.strip_prefix("Order ").unwrap_or_default();
    ensure!(
        id.len() == 36
            && id
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f' | b'-')),
        "unexpected outcome text: {outcome}"
    );
    page.screenshot("waiting-room.png").await?;
    Ok(outcome)
}

/// What the console showed.
#[derive(Debug)]
struct Console {
    status: String,
    served: String,
    remaining: String,
    points: usize,
}

/// Watches the admin console during a running spike: log in as the admin, let the figures and
/// the chart fill for a few seconds, read them, save a screenshot.
async fn watch_the_console(page: &Page, url: &str) -> Result<Console> {
    page.goto(url).await?;
    page.fill("Email", ADMIN.0).await?;
    page.fill("Password", ADMIN.1).await?;
    page.click("Log in").await?;
    // Figures arrive, then the chart needs a few seconds of samples.
    page.wait_until(
        "figures shown",
        Duration::from_secs(15),
        r#"return document.getElementById("f-served").textContent !== "–";"#,
    )
    .await?;
    page.wait_until(
        "8 points in the chart",
        Duration::from_secs(20),
        r#"return (document.getElementById("line-in").getAttribute("points") || "").split(" ").length >= 8;"#,
    )
    .await?;
    let shown = Console {
        status: page.text("#f-status").await?,
        served: page.text("#f-served").await?,
        remaining: page.text("#f-remaining").await?,
        points: page
            .attr("#line-in", "points")
            .await?
            .unwrap_or_default()
            .split(' ')
            .count(),
    };
    page.screenshot("console.png").await?;
    Ok(shown)
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
#[ignore = "needs Debian's chromium and chromium-driver; scripts/test installs both and runs it"]
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

    let started = SystemTime::now();
    let page = Page::open("waiting-room", PHONE, artifacts()).await;
    let url = format!("{}/sales/{sale}", services.door);
    let outcome = wait_in_the_waiting_room(&page, &url).await;
    let outcome = page.finish(outcome).await;
    assert!(png_written_since("waiting-room.png", started));
    let order: Uuid = outcome.trim_start_matches("Order ").parse().unwrap();
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
#[ignore = "needs Debian's chromium and chromium-driver; scripts/test installs both and runs it"]
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

    let started = SystemTime::now();
    let page = Page::open("console", LAPTOP, artifacts()).await;
    let url = format!("{}/console?sale={sale}", services.catalog);
    let shown = watch_the_console(&page, &url).await;
    let shown = page.finish(shown).await;
    spike.abort();
    println!(
        "the console showed: status {}, served {}, remaining {}, {} points",
        shown.status, shown.served, shown.remaining, shown.points
    );

    assert!(png_written_since("console.png", started));
    assert!(shown.points >= 8, "{shown:?}");
    let served: u64 = shown.served.replace(',', "").parse().unwrap();
    assert!(served > 0, "the console saw tickets drained: {shown:?}");
    services.stop().await;
}
