//! Item 14 of the hardening issue: what a stranger's made-up ids cost the door.

use reqwest::StatusCode;
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{TestApp, problem, retry_later};

/// The keys under this test's prefix, but the denylist's marker (written at the first
/// authenticated request, whatever it asks).
async fn keys_of(app: &TestApp) -> Vec<String> {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}*", app.iso.redis.redis_key_prefix))
        .query_async(&mut app.redis.clone())
        .await
        .unwrap();
    keys.into_iter()
        .filter(|k| *k != app.keys.denylist_whole())
        .collect()
}

/// An id shaped like the door's (version 8, a random sale tag), which is the costliest to miss.
fn made_up_ticket() -> Uuid {
    Uuid::new_v8(Uuid::new_v4().into_bytes())
}

/// Entries to sales that do not exist are 404 and leave nothing in Redis (they used to register
/// each made-up sale under its tag for 30 days).
#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn entries_to_made_up_sales_leave_no_keys(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let before = keys_of(&app).await;
    for _ in 0..3 {
        let buyer = app.buyer();
        for _ in 0..10 {
            let response = app.enter(Uuid::now_v7(), &buyer).await;
            problem(response, StatusCode::NOT_FOUND).await;
        }
    }
    assert_eq!(keys_of(&app).await, before);
    app.teardown().await;
}

/// A member who keeps polling tickets that do not exist is told to slow down once past
/// `POLL_MISSES_PER_MEMBER_PER_MIN`, without the lookups (Redis, then PostgreSQL) a miss costs;
/// other members, and the member's real ticket before the bar, are unaffected.
#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn a_member_polling_made_up_tickets_is_slowed_down(db: PgPool) {
    let app = TestApp::spawn_with(db, |config| config.poll_misses_per_member_per_min = 5).await;
    let sale = app
        .arm(3, chrono::Utc::now() - chrono::Duration::minutes(1))
        .await;
    let (prober, other) = (app.buyer(), app.buyer());
    let entered = app.enter(sale, &prober).await;
    assert_eq!(entered.status(), StatusCode::ACCEPTED);
    let real = entered.headers()["location"].to_str().unwrap().to_owned();
    let real = real.trim_start_matches("/tickets/").to_owned();

    for i in 0..5 {
        let response = app
            .poll(&made_up_ticket().to_string(), &prober, "", None)
            .await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "miss {i}");
    }
    let barred = app
        .poll(&made_up_ticket().to_string(), &prober, "", None)
        .await;
    retry_later(barred, StatusCode::TOO_MANY_REQUESTS).await;
    let own = app.poll(&real, &prober, "", None).await;
    assert_eq!(
        own.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "barred from every lookup"
    );
    let response = app
        .poll(&made_up_ticket().to_string(), &other, "", None)
        .await;
    assert_eq!(
        response.status(),
        StatusCode::NOT_FOUND,
        "another member is not barred"
    );
    app.teardown().await;
}
