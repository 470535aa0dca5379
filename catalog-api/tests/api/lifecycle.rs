use flash_core::domain::Role;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{Caller, TestApp, problem};

/// Places a regular order of one unit of a new product; returns (order id, product).
async fn ordered(app: &TestApp, buyer: &Caller, sku: &str) -> (Uuid, Value) {
    let admin = app.caller(Role::Admin).await;
    let product = app.product(&admin, sku, 2500, 5).await;
    let body = json!({"items": [{"product_id": product["id"], "quantity": 1}]});
    let response = app.send("POST", "/orders", Some(buyer), Some(&body)).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let order: Value = response.json().await.unwrap();
    (order["id"].as_str().unwrap().parse().unwrap(), product)
}

/// Walks the order through the given states as the payment worker and the scheduler would.
async fn walk(app: &TestApp, order: Uuid, states: &[&str]) {
    for state in states {
        sqlx::query("update orders set status = $2 where order_id = $1")
            .bind(order)
            .bind(state)
            .execute(&app.db)
            .await
            .unwrap();
    }
}

async fn jobs(app: &TestApp, subject: &str) -> Vec<Value> {
    sqlx::query_scalar("select payload from outbox where subject = $1 order by created_at")
        .bind(subject)
        .fetch_all(&app.db)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn an_order_shows_every_state_it_entered_with_its_time(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let buyer = app.caller(Role::Buyer).await;
    let (order, _) = ordered(&app, &buyer, "L-HIST").await;
    walk(&app, order, &["paid", "preparing", "shipped"]).await;
    sqlx::query("update orders set tracking_ref = 'SIM123' where order_id = $1")
        .bind(order)
        .execute(&app.db)
        .await
        .unwrap();

    let read: Value = app
        .get(&format!("/orders/{order}"), Some(&buyer))
        .await
        .json()
        .await
        .unwrap();

    let states: Vec<&str> = read["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["status"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["pending_payment", "paid", "preparing", "shipped"]);
    assert!(
        read["history"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["at"].is_string())
    );
    assert_eq!(read["status"], "shipped");
    assert_eq!(read["tracking_ref"], "SIM123");
    let listed: Value = app.get("/orders", Some(&buyer)).await.json().await.unwrap();
    assert!(
        listed["items"][0].get("history").is_none(),
        "lists stay small"
    );
    app.teardown().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn a_paid_order_cancelled_before_shipping_is_refunded_and_restocked_once(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let buyer = app.caller(Role::Buyer).await;
    let (order, product) = ordered(&app, &buyer, "L-CANCEL").await;
    walk(&app, order, &["paid", "preparing"]).await;
    let path = format!("/orders/{order}/cancel");

    let answers =
        futures::future::join_all((0..4).map(|_| app.send("POST", &path, Some(&buyer), None)))
            .await;

    assert!(answers.iter().all(|r| r.status() == StatusCode::OK));
    assert_eq!(app.stock(&product).await, 5, "the unit is back once");
    assert_eq!(
        jobs(&app, "jobs.payment").await[1..],
        [json!({"kind": "refund", "order_id": order})],
        "one refund after the charge"
    );
    let emails = jobs(&app, "jobs.email").await;
    assert_eq!(emails.len(), 1);
    assert_eq!(
        (&emails[0]["kind"], &emails[0]["status"]),
        (&json!("order_progress"), &json!("cancelled"))
    );
    app.teardown().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn a_shipped_order_can_no_longer_be_cancelled(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let buyer = app.caller(Role::Buyer).await;
    let (order, product) = ordered(&app, &buyer, "L-SHIPPED").await;
    walk(&app, order, &["paid", "preparing", "shipped"]).await;

    let response = app
        .send(
            "POST",
            &format!("/orders/{order}/cancel"),
            Some(&buyer),
            None,
        )
        .await;

    let body = problem(response, StatusCode::CONFLICT).await;
    assert!(
        body["detail"].as_str().unwrap().contains("shipped"),
        "{body}"
    );
    assert_eq!(app.stock(&product).await, 4);
    assert_eq!(jobs(&app, "jobs.payment").await.len(), 1, "no refund");
    app.teardown().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn a_delivered_order_can_be_returned_within_the_window_once(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let buyer = app.caller(Role::Buyer).await;
    let (order, product) = ordered(&app, &buyer, "L-RETURN").await;
    let path = format!("/orders/{order}/return");
    let early = app.send("POST", &path, Some(&buyer), None).await;
    let early = problem(early, StatusCode::CONFLICT).await;
    assert!(
        early["detail"].as_str().unwrap().contains("only delivered"),
        "{early}"
    );
    walk(&app, order, &["paid", "preparing", "shipped", "delivered"]).await;
    let stranger = app.caller(Role::Buyer).await;
    problem(
        app.send("POST", &path, Some(&stranger), None).await,
        StatusCode::NOT_FOUND,
    )
    .await;

    let first = app.send("POST", &path, Some(&buyer), None).await;
    let again = app.send("POST", &path, Some(&buyer), None).await;

    assert_eq!(first.status(), StatusCode::OK);
    let body: Value = first.json().await.unwrap();
    assert_eq!(body["status"], "return_requested");
    assert_eq!(again.status(), StatusCode::OK, "asking twice is fine");
    let emails = jobs(&app, "jobs.email").await;
    assert_eq!(emails.len(), 1, "one email for one request");
    assert_eq!(emails[0]["status"], "return_requested");
    assert_eq!(
        app.stock(&product).await,
        4,
        "restocked only when the parcel is back (the scheduler's step)"
    );
    let cancel = app
        .send(
            "POST",
            &format!("/orders/{order}/cancel"),
            Some(&buyer),
            None,
        )
        .await;
    problem(cancel, StatusCode::CONFLICT).await;
    app.teardown().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn a_return_after_the_window_is_refused_with_its_deadline(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let buyer = app.caller(Role::Buyer).await;
    let (order, _) = ordered(&app, &buyer, "L-LATE").await;
    walk(&app, order, &["paid", "preparing", "shipped", "delivered"]).await;
    let delivered: chrono::DateTime<chrono::Utc> = sqlx::query_scalar(
        "update order_history set at = now() - interval '8 days'
         where order_id = $1 and status = 'delivered' returning at",
    )
    .bind(order)
    .fetch_one(&app.db)
    .await
    .unwrap();

    let response = app
        .send(
            "POST",
            &format!("/orders/{order}/return"),
            Some(&buyer),
            None,
        )
        .await;

    let body = problem(response, StatusCode::CONFLICT).await;
    assert_eq!(body["type"], "/problems/return-window-closed");
    let deadline: chrono::DateTime<chrono::Utc> =
        body["deadline"].as_str().unwrap().parse().unwrap();
    assert_eq!(deadline, delivered + chrono::TimeDelta::days(7));
    let status: String = sqlx::query_scalar("select status from orders where order_id = $1")
        .bind(order)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(status, "delivered");
    app.teardown().await;
}
