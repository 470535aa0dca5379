//! The ops address (`OPS_ADDR`): `/readyz` and `/metrics` off the public address.

use reqwest::StatusCode;
use sqlx::PgPool;

use crate::helpers::{TestApp, json};

async fn status(app: &TestApp, url: String) -> StatusCode {
    app.client.get(url).send().await.unwrap().status()
}

/// Item 15 of the hardening issue: with an ops address, the door's public address keeps
/// `/healthz` (a balancer's liveness check) and answers 404 for `/readyz` and `/metrics`, which
/// the ops address serves, counting the public address's entries.
#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn readiness_and_metrics_are_served_only_on_the_ops_address(db: PgPool) {
    let app = TestApp::spawn_with(db, |config| {
        config.http.ops_addr = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let ops = app.ops_base.clone().expect("an ops address");
    let sale = app
        .arm(3, chrono::Utc::now() - chrono::Duration::minutes(1))
        .await;
    json(app.enter(sale, &app.buyer()).await, StatusCode::ACCEPTED).await;

    for path in ["/readyz", "/metrics"] {
        assert_eq!(
            status(&app, format!("{}{path}", app.base)).await,
            StatusCode::NOT_FOUND,
            "public {path}"
        );
    }
    assert_eq!(
        status(&app, format!("{}/healthz", app.base)).await,
        StatusCode::OK
    );
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(
            status(&app, format!("{ops}{path}")).await,
            StatusCode::OK,
            "ops {path}"
        );
    }
    let metrics = app
        .client
        .get(format!("{ops}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("flash_admission_tickets_total{outcome=\"queued\"}"),
        "{metrics}"
    );
    assert_eq!(
        status(&app, format!("{ops}/sales/{sale}/tickets")).await,
        StatusCode::NOT_FOUND,
        "the ops address serves nothing else"
    );
    app.teardown().await;
}
