use chrono::{Duration, Utc};
use flash_core::domain::Role;
use redis::AsyncCommands;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{Caller, TestApp, problem};

/// A sale of `quantity` units that started a second ago (or starts in an hour).
async fn sale(app: &TestApp, admin: &Caller, stock: i64, quantity: i64, live: bool) -> Value {
    let product = app
        .product(admin, &format!("SC-{}", Uuid::new_v4()), 12900, stock)
        .await;
    let starts = if live {
        Utc::now() - Duration::seconds(1)
    } else {
        Utc::now() + Duration::hours(1)
    };
    let body = json!({
        "product_id": product["id"], "price_cents": 4900, "quantity": quantity,
        "per_member_limit": 1, "starts_at": starts, "ends_at": starts + Duration::hours(2),
    });
    let response = app
        .send("POST", "/flash-sales", Some(admin), Some(&body))
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    response.json().await.unwrap()
}

fn id(sale: &Value) -> Uuid {
    sale["id"].as_str().unwrap().parse().unwrap()
}

fn key(app: &TestApp, sale: &Value, suffix: &str) -> String {
    format!(
        "{}{{sale:{}}}:{suffix}",
        app.iso.redis.redis_key_prefix,
        id(sale)
    )
}

/// The sale's events in the outbox, oldest first.
async fn events(app: &TestApp, sale: &Value) -> Vec<Value> {
    sqlx::query_scalar::<_, Value>(
        "select payload from outbox where subject = $1 order by created_at, outbox_id",
    )
    .bind(format!("events.sales.{}", id(sale)))
    .fetch_all(&app.db)
    .await
    .unwrap()
}

async fn event_names(app: &TestApp, sale: &Value) -> Vec<String> {
    events(app, sale)
        .await
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_owned())
        .collect()
}

async fn audit_actions(app: &TestApp, sale: &Value) -> Vec<String> {
    sqlx::query_scalar(
        "select action from flash_sale_audit where flash_sale_id = $1 order by at, audit_id",
    )
    .bind(id(sale))
    .fetch_all(&app.db)
    .await
    .unwrap()
}

async fn post(app: &TestApp, sale: &Value, action: &str, admin: &Caller) -> reqwest::Response {
    app.send(
        "POST",
        &format!("/flash-sales/{}/{action}", id(sale)),
        Some(admin),
        None,
    )
    .await
}

/// INVARIANT: quantity_left + live orders = quantity.
async fn assert_accounting(app: &TestApp, sale: &Value) {
    let (quantity, left, live): (i32, i32, i64) = sqlx::query_as(
        "select s.quantity, s.quantity_left,
                (select count(*) from orders o where o.flash_sale_id = s.flash_sale_id and o.status <> 'cancelled')
         from flash_sales s where s.flash_sale_id = $1",
    )
    .bind(id(sale))
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(i64::from(left) + live, i64::from(quantity));
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn pause_and_resume_reach_redis_and_are_audited_once(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let admin = app.caller(Role::Admin).await;
    let sale = sale(&app, &admin, 100, 30, true).await;
    let mut redis = app.redis.clone();

    let paused: Value = post(&app, &sale, "pause", &admin)
        .await
        .json()
        .await
        .unwrap();
    let flag_paused: u8 = redis
        .hget(key(&app, &sale, "meta"), "paused")
        .await
        .unwrap();
    let again = post(&app, &sale, "pause", &admin).await;
    assert_eq!(again.status(), StatusCode::OK);
    let resumed: Value = post(&app, &sale, "resume", &admin)
        .await
        .json()
        .await
        .unwrap();
    let flag_resumed: u8 = redis
        .hget(key(&app, &sale, "meta"), "paused")
        .await
        .unwrap();

    assert_eq!((paused["paused"].as_bool(), flag_paused), (Some(true), 1));
    assert_eq!(
        (resumed["paused"].as_bool(), flag_resumed),
        (Some(false), 0)
    );
    assert_eq!(audit_actions(&app, &sale).await, ["paused", "resumed"]);
    assert_eq!(
        event_names(&app, &sale).await,
        ["armed", "paused", "resumed"]
    );
    let admin_id: Uuid = sqlx::query_scalar(
        "select admin_id from flash_sale_audit where flash_sale_id = $1 limit 1",
    )
    .bind(id(&sale))
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(admin_id, admin.id.get());
    app.teardown().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn only_admins_control_a_sale_and_only_while_it_runs(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let admin = app.caller(Role::Admin).await;
    let buyer = app.caller(Role::Buyer).await;
    let sale = sale(&app, &admin, 100, 30, true).await;
    let path = format!("/flash-sales/{}/pause", id(&sale));

    let anonymous = app.send("POST", &path, None, None).await;
    problem(anonymous, StatusCode::UNAUTHORIZED).await;
    problem(
        post(&app, &sale, "pause", &buyer).await,
        StatusCode::FORBIDDEN,
    )
    .await;
    let stock = app
        .send(
            "POST",
            &format!("/flash-sales/{}/stock", id(&sale)),
            Some(&buyer),
            Some(&json!({"delta": 5})),
        )
        .await;
    problem(stock, StatusCode::FORBIDDEN).await;
    let audit = app
        .get(&format!("/flash-sales/{}/audit", id(&sale)), Some(&buyer))
        .await;
    problem(audit, StatusCode::FORBIDDEN).await;
    let unknown = app
        .send(
            "POST",
            &format!("/flash-sales/{}/pause", Uuid::new_v4()),
            Some(&admin),
            None,
        )
        .await;
    problem(unknown, StatusCode::NOT_FOUND).await;
    let cancelled = post(&app, &sale, "cancel", &admin).await;
    assert_eq!(cancelled.status(), StatusCode::OK);
    problem(
        post(&app, &sale, "pause", &admin).await,
        StatusCode::CONFLICT,
    )
    .await;
    problem(post(&app, &sale, "end", &admin).await, StatusCode::CONFLICT).await;
    assert!(audit_actions(&app, &sale).await.is_empty());
    app.teardown().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn outflow_is_validated_stored_and_pushed_to_the_workers(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let admin = app.caller(Role::Admin).await;
    let sale = sale(&app, &admin, 100, 30, true).await;
    let path = format!("/flash-sales/{}/outflow", id(&sale));
    let mut redis = app.redis.clone();

    for bad in [json!({"per_second": -1}), json!({"per_second": 2_000_000})] {
        let response = app.send("PUT", &path, Some(&admin), Some(&bad)).await;
        problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    }
    let response = app
        .send("PUT", &path, Some(&admin), Some(&json!({"per_second": 50})))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    let pushed: u32 = redis
        .hget(key(&app, &sale, "meta"), "outflow")
        .await
        .unwrap();

    assert_eq!((body["outflow_per_sec"].as_i64(), pushed), (Some(50), 50));
    let detail: Value = sqlx::query_scalar(
        "select detail from flash_sale_audit where flash_sale_id = $1 and action = 'outflow_changed'",
    )
    .bind(id(&sale))
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(detail, json!({"from": 0, "to": 50}));
    let last = events(&app, &sale).await.pop().unwrap();
    assert_eq!(
        (
            last["event"].as_str(),
            last["from"].as_i64(),
            last["to"].as_i64()
        ),
        (Some("outflow_changed"), Some(0), Some(50))
    );
    app.teardown().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn added_stock_comes_from_the_product_and_opens_the_gate(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let admin = app.caller(Role::Admin).await;
    let sale = sale(&app, &admin, 100, 30, true).await;
    let path = format!("/flash-sales/{}/stock", id(&sale));
    let mut redis = app.redis.clone();

    let response = app
        .send("POST", &path, Some(&admin), Some(&json!({"delta": 20})))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    let too_many = app
        .send("POST", &path, Some(&admin), Some(&json!({"delta": 51})))
        .await;
    let zero = app
        .send("POST", &path, Some(&admin), Some(&json!({"delta": 0})))
        .await;

    assert_eq!(
        (body["quantity"].as_i64(), body["remaining"].as_i64()),
        (Some(50), Some(50))
    );
    let gate: i64 = redis.get(key(&app, &sale, "gate")).await.unwrap();
    assert_eq!(gate, 50);
    let (stock,): (i32,) = sqlx::query_as(
        "select stock from products p join flash_sales s using (product_id) where s.flash_sale_id = $1",
    )
    .bind(id(&sale))
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(stock, 50);
    problem(too_many, StatusCode::UNPROCESSABLE_ENTITY).await;
    problem(zero, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_accounting(&app, &sale).await;
    assert_eq!(audit_actions(&app, &sale).await, ["stock_added"]);
    let last = events(&app, &sale).await.pop().unwrap();
    assert_eq!(
        (
            last["event"].as_str(),
            last["delta"].as_i64(),
            last["quantity"].as_i64()
        ),
        (Some("stock_changed"), Some(20), Some(50))
    );
    app.teardown().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn withdrawal_never_takes_units_already_promised(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let admin = app.caller(Role::Admin).await;
    let sale = sale(&app, &admin, 100, 30, true).await;
    let path = format!("/flash-sales/{}/stock", id(&sale));
    let mut redis = app.redis.clone();
    // The door admitted 10 buyers: their units left the gate and wait in the queue.
    let _: () = redis.set(key(&app, &sale, "gate"), 20).await.unwrap();

    let greedy = app
        .send("POST", &path, Some(&admin), Some(&json!({"delta": -25})))
        .await;
    let body = problem(greedy, StatusCode::CONFLICT).await;
    assert!(body["detail"].as_str().unwrap().contains("20"), "{body}");
    let gate_after_refusal: i64 = redis.get(key(&app, &sale, "gate")).await.unwrap();
    let response = app
        .send("POST", &path, Some(&admin), Some(&json!({"delta": -15})))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();

    assert_eq!(gate_after_refusal, 20);
    let gate: i64 = redis.get(key(&app, &sale, "gate")).await.unwrap();
    assert_eq!(gate, 5);
    let (quantity, left, stock): (i32, i32, i32) = sqlx::query_as(
        "select s.quantity, s.quantity_left, p.stock
         from flash_sales s join products p using (product_id) where s.flash_sale_id = $1",
    )
    .bind(id(&sale))
    .fetch_one(&app.db)
    .await
    .unwrap();
    // The 10 queued buyers' units stay in quantity_left for the workers.
    assert_eq!((quantity, left, stock), (15, 15, 85));
    assert_eq!(body["quantity"], 15);
    assert_accounting(&app, &sale).await;
    assert_eq!(audit_actions(&app, &sale).await, ["stock_withdrawn"]);
    app.teardown().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn a_stock_change_without_a_gate_changes_nothing(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let admin = app.caller(Role::Admin).await;
    let sale = sale(&app, &admin, 100, 30, true).await;
    let path = format!("/flash-sales/{}/stock", id(&sale));
    let mut redis = app.redis.clone();
    let _: () = redis.del(key(&app, &sale, "gate")).await.unwrap();

    let added = app
        .send("POST", &path, Some(&admin), Some(&json!({"delta": 5})))
        .await;
    let withdrawn = app
        .send("POST", &path, Some(&admin), Some(&json!({"delta": -5})))
        .await;

    problem(added, StatusCode::SERVICE_UNAVAILABLE).await;
    problem(withdrawn, StatusCode::SERVICE_UNAVAILABLE).await;
    let quantity: i32 =
        sqlx::query_scalar("select quantity from flash_sales where flash_sale_id = $1")
            .bind(id(&sale))
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(quantity, 30);
    assert!(audit_actions(&app, &sale).await.is_empty());
    app.teardown().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn ending_early_closes_the_door_and_is_announced_once(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let admin = app.caller(Role::Admin).await;
    let upcoming = sale(&app, &admin, 100, 30, false).await;
    let live = sale(&app, &admin, 100, 30, true).await;
    let mut redis = app.redis.clone();

    let too_soon = post(&app, &upcoming, "end", &admin).await;
    let ended = post(&app, &live, "end", &admin).await;
    assert_eq!(ended.status(), StatusCode::OK);
    let body: Value = ended.json().await.unwrap();
    let again = post(&app, &live, "end", &admin).await;

    problem(too_soon, StatusCode::CONFLICT).await;
    problem(again, StatusCode::CONFLICT).await;
    assert_eq!(body["status"], "ended");
    let ends_at: i64 = redis
        .hget(key(&app, &live, "meta"), "ends_at")
        .await
        .unwrap();
    assert!(ends_at <= Utc::now().timestamp_millis());
    let last = events(&app, &live).await.pop().unwrap();
    assert_eq!(
        (last["event"].as_str(), last["early"].as_bool()),
        (Some("ended"), Some(true))
    );
    let announced: bool = sqlx::query_scalar(
        "select ended_announced_at is not null from flash_sales where flash_sale_id = $1",
    )
    .bind(id(&live))
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert!(announced, "the reconciler must not announce the end again");
    app.teardown().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn the_audit_trail_lists_each_change_with_its_admin(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let admin = app.caller(Role::Admin).await;
    let sale = sale(&app, &admin, 100, 30, true).await;
    post(&app, &sale, "pause", &admin).await;
    app.send(
        "POST",
        &format!("/flash-sales/{}/stock", id(&sale)),
        Some(&admin),
        Some(&json!({"delta": 3})),
    )
    .await;
    post(&app, &sale, "resume", &admin).await;
    let path = format!("/flash-sales/{}/audit", id(&sale));

    let trail: Value = app.get(&path, Some(&admin)).await.json().await.unwrap();
    let newest: Value = app
        .get(&format!("{path}?limit=1"), Some(&admin))
        .await
        .json()
        .await
        .unwrap();
    let bad_limit = app.get(&format!("{path}?limit=0"), Some(&admin)).await;

    let actions: Vec<&str> = trail["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["paused", "stock_added", "resumed"]);
    assert_eq!(trail["items"][1]["detail"], json!({"delta": 3}));
    assert_eq!(trail["items"][0]["admin_id"], admin.id.get().to_string());
    assert_eq!(newest["items"][0]["action"], "resumed");
    problem(bad_limit, StatusCode::BAD_REQUEST).await;
    app.teardown().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn stats_show_the_live_figures_to_admins_only(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let admin = app.caller(Role::Admin).await;
    let buyer = app.caller(Role::Buyer).await;
    let sale = sale(&app, &admin, 100, 30, true).await;
    let mut redis = app.redis.clone();
    // The door admitted 12 buyers, the workers decided 5 of them.
    let _: () = redis.set(key(&app, &sale, "gate"), 18).await.unwrap();
    let _: () = redis.set(key(&app, &sale, "seq"), 12).await.unwrap();
    let _: () = redis.set(key(&app, &sale, "served"), 5).await.unwrap();
    let path = format!("/flash-sales/{}/stats", id(&sale));

    let stats: Value = app.get(&path, Some(&admin)).await.json().await.unwrap();
    let refused = app.get(&path, Some(&buyer)).await;
    let unknown = app
        .get(
            &format!("/flash-sales/{}/stats", Uuid::new_v4()),
            Some(&admin),
        )
        .await;

    assert_eq!(
        (
            stats["remaining"].as_i64(),
            stats["admitted"].as_i64(),
            stats["served"].as_i64(),
            stats["queue_depth"].as_i64(),
        ),
        (Some(18), Some(12), Some(5), Some(7)),
        "{stats}"
    );
    assert_eq!(stats["quantity"], 30);
    assert_eq!(stats["status"], "live");
    assert_eq!(stats["waitlist_length"], 0);
    assert_eq!(stats["orders"], json!({}));
    problem(refused, StatusCode::FORBIDDEN).await;
    problem(unknown, StatusCode::NOT_FOUND).await;
    app.teardown().await;
}
