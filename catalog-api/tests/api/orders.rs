use flash_core::domain::Role;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{Caller, PrivateRedis, TestApp, problem};

fn order_of(lines: &[(&Value, i64)]) -> Value {
    json!({"items": lines.iter().map(|(p, q)| json!({"product_id": p["id"], "quantity": q})).collect::<Vec<_>>()})
}

async fn post_order(
    app: &TestApp,
    buyer: &Caller,
    body: &Value,
    key: Option<&str>,
) -> reqwest::Response {
    let mut request = app
        .client
        .post(app.url("/orders"))
        .bearer_auth(&buyer.token)
        .json(body);
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    request.send().await.unwrap()
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn an_order_takes_stock_at_database_prices_and_queues_a_payment_job(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let admin = app.caller(Role::Admin).await;
    let buyer = app.caller(Role::Buyer).await;
    let shoe = app.product(&admin, "O-SHOE", 5000, 10).await;
    let hat = app.product(&admin, "O-HAT", 1500, 10).await;

    let response = post_order(&app, &buyer, &order_of(&[(&shoe, 2), (&hat, 1)]), None).await;

    assert_eq!(response.status(), StatusCode::CREATED);
    let order: Value = response.json().await.unwrap();
    assert_eq!(
        (order["status"].as_str(), order["kind"].as_str()),
        (Some("pending_payment"), Some("regular"))
    );
    assert_eq!(order["total_cents"], 2 * 5000 + 1500);
    assert_eq!(order["items"].as_array().unwrap().len(), 2);
    assert_eq!((app.stock(&shoe).await, app.stock(&hat).await), (8, 9));
    let (job,): (Value,) =
        sqlx::query_as("select payload from outbox where subject = 'jobs.payment'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(
        job,
        json!({"kind": "charge", "order_id": order["id"], "amount_cents": 11500, "currency": "EUR"})
    );
    app.teardown().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn an_out_of_stock_line_refuses_the_whole_order_and_names_the_product(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let admin = app.caller(Role::Admin).await;
    let buyer = app.caller(Role::Buyer).await;
    let plenty = app.product(&admin, "O-PLENTY", 100, 10).await;
    let scarce = app.product(&admin, "O-SCARCE", 100, 1).await;

    let response = post_order(&app, &buyer, &order_of(&[(&plenty, 3), (&scarce, 2)]), None).await;

    let body = problem(response, StatusCode::CONFLICT).await;
    assert_eq!(body["type"], "/problems/out-of-stock");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains(scarce["id"].as_str().unwrap()),
        "{body}"
    );
    assert_eq!(
        (app.stock(&plenty).await, app.stock(&scarce).await),
        (10, 1),
        "nothing partial left behind"
    );
    let (orders,): (i64,) = sqlx::query_as("select count(*) from orders")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(orders, 0);
    app.teardown().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn many_buyers_racing_for_little_stock_never_oversell(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let admin = app.caller(Role::Admin).await;
    let product = app.product(&admin, "O-RACE", 100, 10).await;
    let mut buyers = Vec::new();
    for _ in 0..40 {
        buyers.push(app.caller(Role::Buyer).await);
    }
    let body = order_of(&[(&product, 1)]);

    let statuses: Vec<StatusCode> =
        futures::future::join_all(buyers.iter().map(|b| post_order(&app, b, &body, None)))
            .await
            .iter()
            .map(|r| r.status())
            .collect();

    let created = statuses
        .iter()
        .filter(|s| **s == StatusCode::CREATED)
        .count();
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::CONFLICT)
        .count();
    assert_eq!((created, refused), (10, 30), "{statuses:?}");
    assert_eq!(app.stock(&product).await, 0);
    let (units,): (i64,) = sqlx::query_as("select coalesce(sum(quantity), 0) from order_items")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(units, 10, "no lost update");
    app.teardown().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn a_retried_order_with_the_same_idempotency_key_is_made_once(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let admin = app.caller(Role::Admin).await;
    let buyer = app.caller(Role::Buyer).await;
    let product = app.product(&admin, "O-IDEM", 100, 10).await;
    let body = order_of(&[(&product, 2)]);

    let first: Value = post_order(&app, &buyer, &body, Some("retry-1"))
        .await
        .json()
        .await
        .unwrap();
    let retry = post_order(&app, &buyer, &body, Some("retry-1")).await;
    assert_eq!(retry.status(), StatusCode::CREATED);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    let retry: Value = retry.json().await.unwrap();
    let racing =
        futures::future::join_all((0..5).map(|_| post_order(&app, &buyer, &body, Some("retry-2"))))
            .await;

    assert_eq!(first["id"], retry["id"]);
    assert!(racing.iter().all(|r| r.status() == StatusCode::CREATED));
    assert_eq!(
        app.stock(&product).await,
        10 - 2 - 2,
        "each key took stock once"
    );
    let changed = post_order(&app, &buyer, &order_of(&[(&product, 1)]), Some("retry-1")).await;
    problem(changed, StatusCode::CONFLICT).await;
    // Keys are per member: another buyer's "retry-1" is a new order.
    let other = app.caller(Role::Buyer).await;
    let theirs: Value = post_order(&app, &other, &body, Some("retry-1"))
        .await
        .json()
        .await
        .unwrap();
    assert_ne!(theirs["id"], first["id"]);
    app.teardown().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn orders_are_visible_to_their_owner_and_admins_only(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let admin = app.caller(Role::Admin).await;
    let owner = app.caller(Role::Buyer).await;
    let stranger = app.caller(Role::Buyer).await;
    let product = app.product(&admin, "O-OWN", 100, 10).await;
    let order: Value = post_order(&app, &owner, &order_of(&[(&product, 1)]), None)
        .await
        .json()
        .await
        .unwrap();
    let path = format!("/orders/{}", order["id"].as_str().unwrap());

    assert_eq!(app.get(&path, Some(&owner)).await.status(), StatusCode::OK);
    assert_eq!(app.get(&path, Some(&admin)).await.status(), StatusCode::OK);
    problem(app.get(&path, Some(&stranger)).await, StatusCode::NOT_FOUND).await;
    problem(
        app.send("POST", &format!("{path}/cancel"), Some(&stranger), None)
            .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    problem(app.get(&path, None).await, StatusCode::UNAUTHORIZED).await;
    let theirs: Value = app
        .get("/orders", Some(&stranger))
        .await
        .json()
        .await
        .unwrap();
    assert!(theirs["items"].as_array().unwrap().is_empty());
    assert_eq!(
        app.stock(&product).await,
        9,
        "the stranger's cancel changed nothing"
    );
    app.teardown().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn my_orders_are_listed_newest_first_in_pages_including_flash_orders(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let admin = app.caller(Role::Admin).await;
    let buyer = app.caller(Role::Buyer).await;
    let product = app.product(&admin, "O-LIST", 100, 10).await;
    for _ in 0..3 {
        post_order(&app, &buyer, &order_of(&[(&product, 1)]), None).await;
    }
    // A flash-sale order as the workers write it.
    let sale = Uuid::new_v4();
    let product_id: Uuid = product["id"].as_str().unwrap().parse().unwrap();
    sqlx::query("insert into flash_sales (flash_sale_id, product_id, price_cents, currency, quantity, quantity_left, starts_at, ends_at) values ($1, $2, 50, 'EUR', 1, 0, now(), now() + interval '1 hour')")
        .bind(sale).bind(product_id).execute(&app.db).await.unwrap();
    let flash_order = Uuid::now_v7();
    sqlx::query("insert into orders (order_id, member_id, kind, total_cents, currency, flash_sale_id, ticket_id) values ($1, $2, 'flash', 50, 'EUR', $3, $4)")
        .bind(flash_order).bind(buyer.id).bind(sale).bind(Uuid::new_v4()).execute(&app.db).await.unwrap();
    sqlx::query("insert into order_items values ($1, $2, 1, 50)")
        .bind(flash_order)
        .bind(product_id)
        .execute(&app.db)
        .await
        .unwrap();

    let first: Value = app
        .get("/orders?limit=3", Some(&buyer))
        .await
        .json()
        .await
        .unwrap();
    let cursor = first["next_cursor"].as_str().unwrap();
    let second: Value = app
        .get(&format!("/orders?limit=3&cursor={cursor}"), Some(&buyer))
        .await
        .json()
        .await
        .unwrap();

    assert_eq!(first["items"][0]["kind"], "flash");
    assert_eq!(first["items"][0]["flash_sale_id"], sale.to_string());
    assert_eq!(second["items"].as_array().unwrap().len(), 1);
    assert!(second["next_cursor"].is_null());
    app.teardown().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn cancelling_restores_stock_exactly_once(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let admin = app.caller(Role::Admin).await;
    let buyer = app.caller(Role::Buyer).await;
    let product = app.product(&admin, "O-CANCEL", 100, 10).await;
    let order: Value = post_order(&app, &buyer, &order_of(&[(&product, 4)]), None)
        .await
        .json()
        .await
        .unwrap();
    let path = format!("/orders/{}/cancel", order["id"].as_str().unwrap());

    let cancels =
        futures::future::join_all((0..4).map(|_| app.send("POST", &path, Some(&buyer), None)))
            .await;

    assert!(cancels.iter().all(|r| r.status() == StatusCode::OK));
    assert_eq!(app.stock(&product).await, 10);
    let read: Value = app
        .get(
            &format!("/orders/{}", order["id"].as_str().unwrap()),
            Some(&buyer),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(read["status"], "cancelled");
    app.teardown().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn bad_orders_get_clear_4xx_problems(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let admin = app.caller(Role::Admin).await;
    let buyer = app.caller(Role::Buyer).await;
    let product = app.product(&admin, "O-BAD", 100, 10).await;
    let cases = [
        (
            json!({"items": []}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "no lines",
        ),
        (
            order_of(&[(&product, 0)]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "zero units",
        ),
        (
            order_of(&[(&product, 1001)]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "too many units",
        ),
        (
            order_of(&[(&product, 1), (&product, 2)]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "product twice",
        ),
        (
            json!({"items": [{"product_id": Uuid::new_v4(), "quantity": 1}]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown product",
        ),
        (
            json!({"items": [{"product_id": "nope", "quantity": 1}]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "malformed id",
        ),
        (
            json!({"items": [{"product_id": product["id"], "quantity": 1, "unit_price_cents": 1}]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "client-chosen price",
        ),
    ];
    for (body, status, why) in cases {
        let response = post_order(&app, &buyer, &body, None).await;
        assert_eq!(response.status(), status, "{why}");
        problem(response, status).await;
    }
    let bad_key = app
        .client
        .post(app.url("/orders"))
        .bearer_auth(&buyer.token)
        .header("idempotency-key", "a".repeat(300))
        .json(&order_of(&[(&product, 1)]))
        .send()
        .await
        .unwrap();
    problem(bad_key, StatusCode::BAD_REQUEST).await;
    assert_eq!(app.stock(&product).await, 10);
    app.teardown().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn cancelling_a_flash_order_gives_its_unit_back_to_the_sale_and_gate(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let flash = flash_order(&app).await;
    let buyer = &flash.buyer;
    let path = format!("/orders/{}/cancel", flash.order);
    assert_eq!(
        app.send("POST", &path, Some(buyer), None).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        app.send("POST", &path, Some(buyer), None).await.status(),
        StatusCode::OK
    );
    assert_cancelled_once(&app, &flash).await;
    app.teardown().await;
}

/// The cancel commits in PostgreSQL and then gives the unit back to the Redis gate. A request
/// dropped between the two (here: the request timeout, while Redis holds writes back) must not
/// leave the gate a unit short: the Redis step runs whether or not the request survives.
#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn a_cancel_dropped_after_its_commit_still_gives_the_unit_back(db: PgPool) {
    let redis = PrivateRedis::start().await;
    let url = redis.url.clone();
    let app = TestApp::spawn_with(db, |iso, config| {
        iso.redis.redis_url = url;
        config.http.http_request_timeout_ms = 200;
    })
    .await;
    let flash = flash_order(&app).await;
    let buyer = &flash.buyer;
    // Any check that refills the denylist writes; do it before writes are held back.
    assert_eq!(
        app.send("GET", "/orders", Some(buyer), None).await.status(),
        StatusCode::OK
    );

    redis
        .pause_writes(std::time::Duration::from_millis(400))
        .await;
    let path = format!("/orders/{}/cancel", flash.order);
    let answer = app.send("POST", &path, Some(buyer), None).await;
    assert_eq!(
        answer.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "the request timed out after its commit"
    );
    // The unit reaches the gate once Redis takes writes again.
    for _ in 0..60 {
        let units: i64 = redis::AsyncCommands::get(&mut app.redis.clone(), &flash.gate)
            .await
            .unwrap();
        if units == 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    assert_cancelled_once(&app, &flash).await;
    app.teardown().await;
}

/// A flash order of one unit, its buyer, its product and its sale's gate key.
struct FlashOrder {
    order: Uuid,
    buyer: Caller,
    product: Value,
    gate: String,
}

/// A flash order of one unit, as the door and a worker would have made it: the gate and
/// `quantity_left` are one down.
async fn flash_order(app: &TestApp) -> FlashOrder {
    let admin = app.caller(Role::Admin).await;
    let buyer = app.caller(Role::Buyer).await;
    let product = app.product(&admin, "O-FLASH", 100, 10).await;
    let starts = chrono::Utc::now() - chrono::Duration::seconds(5);
    let sale: Value = app
        .send(
            "POST",
            "/flash-sales",
            Some(&admin),
            Some(&json!({
                "product_id": product["id"], "price_cents": 50, "quantity": 3,
                "starts_at": starts, "ends_at": starts + chrono::Duration::hours(1),
            })),
        )
        .await
        .json()
        .await
        .unwrap();
    let sale_id: Uuid = sale["id"].as_str().unwrap().parse().unwrap();
    let product_id: Uuid = product["id"].as_str().unwrap().parse().unwrap();
    // The door admitted the buyer (gate 3 -> 2) and a worker made the order (3 -> 2 left).
    let gate = format!("{}{{sale:{sale_id}}}:gate", app.iso.redis.redis_key_prefix);
    let _: () = redis::AsyncCommands::set(&mut app.redis.clone(), &gate, 2)
        .await
        .unwrap();
    let order = Uuid::now_v7();
    sqlx::query("update flash_sales set quantity_left = 2")
        .execute(&app.db)
        .await
        .unwrap();
    sqlx::query("insert into orders (order_id, member_id, kind, total_cents, currency, flash_sale_id, ticket_id) values ($1, $2, 'flash', 50, 'EUR', $3, $4)")
        .bind(order).bind(buyer.id).bind(sale_id).bind(Uuid::new_v4()).execute(&app.db).await.unwrap();
    sqlx::query("insert into order_items values ($1, $2, 1, 50)")
        .bind(order)
        .bind(product_id)
        .execute(&app.db)
        .await
        .unwrap();

    FlashOrder {
        order,
        buyer,
        product,
        gate,
    }
}

/// The order is cancelled, and its unit is back once in PostgreSQL and in the gate.
async fn assert_cancelled_once(app: &TestApp, flash: &FlashOrder) {
    let (left,): (i32,) = sqlx::query_as("select quantity_left from flash_sales")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(left, 3, "quantity_left + live orders = quantity, once");
    let gate_units: i64 = redis::AsyncCommands::get(&mut app.redis.clone(), &flash.gate)
        .await
        .unwrap();
    assert_eq!(gate_units, 3);
    let (slots,): (i32,) = sqlx::query_as("select live_orders from flash_sale_entitlements")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(slots, 0, "the member may buy again");
    assert_eq!(
        app.stock(&flash.product).await,
        7,
        "a flash unit goes back to the sale, not the product"
    );
}
