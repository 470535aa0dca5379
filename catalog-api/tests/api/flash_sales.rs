use chrono::{Duration, Utc};
use flash_core::domain::Role;
use redis::AsyncCommands;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{Caller, TestApp, problem};

fn sale_body(product: &Value, quantity: i64, starts_in: Duration) -> Value {
    let starts = Utc::now() + starts_in;
    json!({
        "product_id": product["id"], "price_cents": 4900, "quantity": quantity,
        "per_member_limit": 1, "starts_at": starts, "ends_at": starts + Duration::hours(1),
    })
}

async fn create_sale(app: &TestApp, admin: &Caller, body: &Value) -> Value {
    let response = app
        .send("POST", "/flash-sales", Some(admin), Some(body))
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    response.json().await.unwrap()
}

fn gate_key(app: &TestApp, sale: &Value) -> String {
    format!(
        "{}{{sale:{}}}:gate",
        app.iso.redis.redis_key_prefix,
        sale["id"].as_str().unwrap()
    )
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn creating_a_sale_reserves_stock_and_arms_the_gate(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let admin = app.caller(Role::Admin).await;
    let product = app.product(&admin, "FS-1", 12900, 100).await;

    let sale = create_sale(&app, &admin, &sale_body(&product, 30, Duration::minutes(5))).await;

    assert_eq!(
        (sale["quantity"].as_i64(), sale["remaining"].as_i64()),
        (Some(30), Some(30))
    );
    assert_eq!(sale["status"], "upcoming");
    assert_eq!(sale["currency"], "EUR");
    assert_eq!(app.stock(&product).await, 70);
    let mut redis = app.redis.clone();
    let gate: i64 = redis.get(gate_key(&app, &sale)).await.unwrap();
    assert_eq!(gate, 30);
    let meta_key = format!(
        "{}{{sale:{}}}:meta",
        app.iso.redis.redis_key_prefix,
        sale["id"].as_str().unwrap()
    );
    let limit: i64 = redis.hget(&meta_key, "per_member_limit").await.unwrap();
    assert_eq!(limit, 1);
    app.teardown().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn remaining_is_live_from_the_gate_and_falls_back_to_postgres(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let admin = app.caller(Role::Admin).await;
    let product = app.product(&admin, "FS-2", 12900, 100).await;
    let sale = create_sale(&app, &admin, &sale_body(&product, 20, Duration::minutes(5))).await;
    let path = format!("/flash-sales/{}", sale["id"].as_str().unwrap());
    let mut redis = app.redis.clone();

    // The front door admitted 13 buyers.
    let _: () = redis.set(gate_key(&app, &sale), 7).await.unwrap();
    let live: Value = app.get(&path, None).await.json().await.unwrap();
    // Redis lost the gate: PostgreSQL answers.
    let _: () = redis.del(gate_key(&app, &sale)).await.unwrap();
    let fallback: Value = app.get(&path, None).await.json().await.unwrap();

    assert_eq!(live["remaining"], 7);
    assert_eq!(fallback["remaining"], 20);
    app.teardown().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn invalid_sales_are_refused_with_the_field_named(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let admin = app.caller(Role::Admin).await;
    let product = app.product(&admin, "FS-3", 12900, 10).await;
    let inactive = app.product(&admin, "FS-OFF", 12900, 10).await;
    app.send(
        "DELETE",
        &format!("/products/{}", inactive["id"].as_str().unwrap()),
        Some(&admin),
        None,
    )
    .await;
    let good = sale_body(&product, 5, Duration::minutes(5));
    let with = |field: &str, value: Value| {
        let mut body = good.clone();
        body[field] = value;
        body
    };
    let cases = [
        (
            with("quantity", json!(11)),
            "quantity",
            "more than the stock",
        ),
        (with("quantity", json!(0)), "quantity", "zero units"),
        (
            with("waitlist_limit", json!(-1)),
            "waitlist_limit",
            "a negative waitlist",
        ),
        (
            with("prequeue_secs", json!(86_401)),
            "prequeue_secs",
            "a pre-queue open for more than a day",
        ),
        (
            with("pow_bits", json!(25)),
            "pow_bits",
            "a proof of work too hard",
        ),
        (
            with("abandon_after_secs", json!(-5)),
            "abandon_after_secs",
            "a negative abandonment time",
        ),
        (
            with("per_member_limit", json!(0)),
            "per_member_limit",
            "limit below 1",
        ),
        (
            with("ends_at", good["starts_at"].clone()),
            "ends_at",
            "ends when it starts",
        ),
        (
            with("product_id", json!(Uuid::new_v4())),
            "product_id",
            "unknown product",
        ),
        (
            with("product_id", inactive["id"].clone()),
            "product_id",
            "inactive product",
        ),
    ];
    for (body, field, why) in cases {
        let problem = problem(
            app.send("POST", "/flash-sales", Some(&admin), Some(&body))
                .await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert_eq!(problem["errors"][0]["field"], field, "{why}: {problem}");
    }
    assert_eq!(
        app.stock(&product).await,
        10,
        "no refused sale reserved stock"
    );
    let buyer = app.caller(Role::Buyer).await;
    problem(
        app.send("POST", "/flash-sales", Some(&buyer), Some(&good))
            .await,
        StatusCode::FORBIDDEN,
    )
    .await;
    app.teardown().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn a_sale_can_change_before_it_starts_and_not_after(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let admin = app.caller(Role::Admin).await;
    let product = app.product(&admin, "FS-4", 12900, 100).await;
    let upcoming = create_sale(&app, &admin, &sale_body(&product, 10, Duration::minutes(5))).await;
    let live = create_sale(
        &app,
        &admin,
        &sale_body(&product, 10, Duration::seconds(-5)),
    )
    .await;

    let changed = app
        .send(
            "PATCH",
            &format!("/flash-sales/{}", upcoming["id"].as_str().unwrap()),
            Some(&admin),
            Some(&json!({"quantity": 25})),
        )
        .await;
    assert_eq!(changed.status(), StatusCode::OK);
    let changed: Value = changed.json().await.unwrap();
    assert_eq!(changed["remaining"], 25);
    assert_eq!(app.stock(&product).await, 100 - 25 - 10);
    let gate: i64 = redis::AsyncCommands::get(&mut app.redis.clone(), gate_key(&app, &upcoming))
        .await
        .unwrap();
    assert_eq!(gate, 25);

    let refused = app
        .send(
            "PATCH",
            &format!("/flash-sales/{}", live["id"].as_str().unwrap()),
            Some(&admin),
            Some(&json!({"quantity": 5})),
        )
        .await;
    problem(refused, StatusCode::CONFLICT).await;
    app.teardown().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn cancelling_a_sale_returns_unsold_units_and_closes_the_gate(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let admin = app.caller(Role::Admin).await;
    let product = app.product(&admin, "FS-5", 12900, 100).await;
    let sale = create_sale(
        &app,
        &admin,
        &sale_body(&product, 40, Duration::seconds(-5)),
    )
    .await;
    let path = format!("/flash-sales/{}/cancel", sale["id"].as_str().unwrap());

    let cancelled: Value = app
        .send("POST", &path, Some(&admin), None)
        .await
        .json()
        .await
        .unwrap();
    let again = app.send("POST", &path, Some(&admin), None).await;

    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(
        app.stock(&product).await,
        100,
        "units returned exactly once"
    );
    let gate: i64 = redis::AsyncCommands::get(&mut app.redis.clone(), gate_key(&app, &sale))
        .await
        .unwrap();
    assert_eq!(gate, 0);
    let (quantity, left): (i32, i32) =
        sqlx::query_as("select quantity, quantity_left from flash_sales")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(
        (quantity, left),
        (0, 0),
        "quantity_left + live orders = quantity"
    );
    app.teardown().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn sales_are_listed_by_status(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let admin = app.caller(Role::Admin).await;
    let product = app.product(&admin, "FS-6", 12900, 100).await;
    create_sale(&app, &admin, &sale_body(&product, 1, Duration::minutes(5))).await;
    create_sale(&app, &admin, &sale_body(&product, 1, Duration::seconds(-5))).await;

    let upcoming: Value = app
        .get("/flash-sales?status=upcoming", None)
        .await
        .json()
        .await
        .unwrap();
    let live: Value = app
        .get("/flash-sales?status=live", None)
        .await
        .json()
        .await
        .unwrap();
    let all: Value = app.get("/flash-sales", None).await.json().await.unwrap();

    assert_eq!(upcoming["items"].as_array().unwrap().len(), 1);
    assert_eq!(live["items"][0]["status"], "live");
    assert_eq!(all["items"].as_array().unwrap().len(), 2);
    problem(
        app.get("/flash-sales?status=soon", None).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    app.teardown().await;
}

/// Item 6 of the hardening issue: a unit that comes back while buyers were refused must reach
/// one of them, so a sale has a waitlist unless its admin turns it off. Omitted, it holds as
/// many buyers as the sale has units (bounded by the field's maximum); 0 turns it off.
#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn a_sale_has_a_waitlist_unless_it_is_turned_off(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let admin = app.caller(Role::Admin).await;
    let product = app.product(&admin, "FS-W", 12900, 100).await;

    let default = create_sale(&app, &admin, &sale_body(&product, 30, Duration::minutes(5))).await;
    let mut off = sale_body(&product, 20, Duration::minutes(5));
    off["waitlist_limit"] = json!(0);
    let off = create_sale(&app, &admin, &off).await;

    assert_eq!(default["waitlist_limit"], 30);
    assert_eq!(off["waitlist_limit"], 0);
    let meta_key = format!(
        "{}{{sale:{}}}:meta",
        app.iso.redis.redis_key_prefix,
        default["id"].as_str().unwrap()
    );
    let waitlist: i64 = app.redis.clone().hget(&meta_key, "waitlist").await.unwrap();
    assert_eq!(waitlist, 30, "the door waitlists buyers past the last unit");
    app.teardown().await;
}
