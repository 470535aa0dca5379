use std::net::SocketAddr;

use clap::Parser;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::helpers::{ADMIN_EMAIL, ADMIN_PASSWORD, TestApp};

/// Starts a real catalog-api on `addr` sharing the test's database, Redis prefix and keys.
/// catalog-api on `addr`, or on `bound` (a socket bound for it already) when given.
async fn start_catalog(
    app: &TestApp,
    addr: SocketAddr,
    bound: Option<std::sync::Arc<std::net::TcpListener>>,
) -> (SocketAddr, CancellationToken) {
    let mut config = catalog_api::Config::parse_from(["catalog-api"]);
    config.addr = addr;
    config.http.listener = bound;
    config.redis = app.iso.redis.clone();
    config.jwt.jwt_public_key = app.iso.public_key_path();
    let shutdown = CancellationToken::new();
    let catalog = catalog_api::App::build_with(config, app.db.clone(), shutdown.clone())
        .await
        .unwrap();
    let bound = catalog.local_addr().unwrap();
    tokio::spawn(catalog.run());
    (bound, shutdown)
}

async fn token_of(app: &TestApp, email: &str, password: &str) -> String {
    let body: Value = app.login(email, password).await.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

async fn profile(app: &TestApp, token: &str) -> Value {
    let response = app.get_me(token).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

async fn counter(app: &TestApp, line: &str) -> u64 {
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(line))
        .map_or(0, |v| v.trim().parse().unwrap())
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn the_profile_shows_orders_and_survives_catalog_going_away(db: PgPool) {
    // catalog-api's socket, bound first so member-api can be told its address up front.
    let (bound, catalog_addr) = flash_core::testing::listener();
    let app = TestApp::spawn_with(db, |c| {
        c.order_history.catalog_url = format!("http://{catalog_addr}");
        c.order_history.breaker_cooldown_ms = 300;
    })
    .await;
    let (_, catalog_stop) = start_catalog(&app, catalog_addr, Some(bound)).await;
    let admin = token_of(&app, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let (buyer, _) = app.new_session().await;
    let catalog = format!("http://{catalog_addr}");
    let product: Value = app.client.post(format!("{catalog}/products")).bearer_auth(&admin)
        .json(&json!({"sku": "P-1", "name": "Shoe", "price_cents": 100, "currency": "EUR", "stock": 5}))
        .send().await.unwrap().json().await.unwrap();
    let ordered = app
        .client
        .post(format!("{catalog}/orders"))
        .bearer_auth(&buyer)
        .json(&json!({"items": [{"product_id": product["id"], "quantity": 1}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(ordered.status(), StatusCode::CREATED);

    // Healthy: the member's own orders, through catalog-api's owner check.
    let me = profile(&app, &buyer).await;
    assert_eq!(me["orders_unavailable"], false);
    assert_eq!(me["orders"].as_array().unwrap().len(), 1);
    assert!(me["email"].as_str().unwrap().ends_with("@example.com"));

    // Metrics are per process and tests run in parallel, so compare before and after.
    let opened = r#"flash_member_order_history_breaker_transitions_total{to="open"} "#;
    let closed = r#"flash_member_order_history_breaker_transitions_total{to="closed"} "#;
    let rejected = r#"flash_member_order_history_calls_total{outcome="rejected"} "#;
    let (opened_before, closed_before, rejected_before) = (
        counter(&app, opened).await,
        counter(&app, closed).await,
        counter(&app, rejected).await,
    );

    // catalog-api goes away: within 10 calls the breaker opens and later calls skip it.
    catalog_stop.cancel();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let mut unavailable = 0;
    for _ in 0..10 {
        let me = profile(&app, &buyer).await;
        if me["orders_unavailable"] == true {
            assert!(me["orders"].as_array().unwrap().is_empty());
            unavailable += 1;
        }
    }
    assert_eq!(unavailable, 10, "every call without catalog-api says so");
    assert!(
        counter(&app, opened).await > opened_before,
        "the breaker opened"
    );
    assert!(
        counter(&app, rejected).await >= rejected_before + 5,
        "an open breaker answers without calling"
    );

    // catalog-api is back on its address (its socket closed when it stopped): after the
    // cool-down one call goes through and closes the breaker.
    let (_, catalog_stop) = start_catalog(&app, catalog_addr, None).await;
    let mut recovered = false;
    for _ in 0..30 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let me = profile(&app, &buyer).await;
        if me["orders_unavailable"] == false {
            assert_eq!(me["orders"].as_array().unwrap().len(), 1);
            recovered = true;
            break;
        }
    }
    assert!(
        recovered,
        "breaker never closed after catalog-api came back"
    );
    assert!(
        counter(&app, closed).await > closed_before,
        "the breaker closed"
    );
    catalog_stop.cancel();
    app.teardown().await;
}
