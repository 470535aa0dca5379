use flash_core::domain::Role;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{Caller, TestApp, problem};

async fn put(app: &TestApp, buyer: &Caller, product: &Value, quantity: i64) -> reqwest::Response {
    let path = format!("/cart/items/{}", product["id"].as_str().unwrap());
    app.send(
        "PUT",
        &path,
        Some(buyer),
        Some(&json!({ "quantity": quantity })),
    )
    .await
}

async fn checkout(app: &TestApp, buyer: &Caller, key: Option<&str>) -> reqwest::Response {
    let mut request = app
        .client
        .post(app.url("/cart/checkout"))
        .bearer_auth(&buyer.token);
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    request.send().await.unwrap()
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn a_cart_holds_quantities_priced_live_and_lines_can_be_changed_and_removed(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let admin = app.caller(Role::Admin).await;
    let buyer = app.caller(Role::Buyer).await;
    let mug = app.product(&admin, "C-MUG", 1200, 10).await;
    let tea = app.product(&admin, "C-TEA", 450, 1).await;

    let empty: Value = app.get("/cart", Some(&buyer)).await.json().await.unwrap();
    assert_eq!(empty, json!({"items": []}));
    assert_eq!(put(&app, &buyer, &mug, 1).await.status(), StatusCode::OK);
    // PUT sets the quantity; it does not add to it.
    let response = put(&app, &buyer, &mug, 3).await;
    assert_eq!(response.status(), StatusCode::OK);
    let cart: Value = put(&app, &buyer, &tea, 2).await.json().await.unwrap();

    let lines = cart["items"].as_array().unwrap();
    assert_eq!(lines.len(), 2);
    let line = |p: &Value| {
        lines
            .iter()
            .find(|l| l["product_id"] == p["id"])
            .unwrap()
            .clone()
    };
    assert_eq!(line(&mug)["quantity"], 3);
    assert_eq!(line(&mug)["in_stock"], true);
    assert_eq!(line(&tea)["in_stock"], false, "2 asked, 1 in stock");
    assert_eq!(cart["total_cents"], 3 * 1200 + 2 * 450);
    assert_eq!(cart["currency"], "EUR");
    // Another member's cart is their own.
    let other = app.caller(Role::Buyer).await;
    let theirs: Value = app.get("/cart", Some(&other)).await.json().await.unwrap();
    assert_eq!(theirs["items"], json!([]));

    let path = format!("/cart/items/{}", tea["id"].as_str().unwrap());
    let deleted = app.send("DELETE", &path, Some(&buyer), None).await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let again = app.send("DELETE", &path, Some(&buyer), None).await;
    assert_eq!(
        again.status(),
        StatusCode::NO_CONTENT,
        "deleting twice is fine"
    );
    let cart: Value = app.get("/cart", Some(&buyer)).await.json().await.unwrap();
    assert_eq!(cart["items"].as_array().unwrap().len(), 1);
    app.teardown().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn bad_cart_changes_get_clear_4xx_problems(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let admin = app.caller(Role::Admin).await;
    let buyer = app.caller(Role::Buyer).await;
    let mug = app.product(&admin, "C-BAD", 100, 5).await;

    for quantity in [0, -1, 1001, i64::from(i32::MAX) + 1] {
        let body = problem(
            put(&app, &buyer, &mug, quantity).await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert_eq!(body["errors"][0]["field"], "quantity", "{quantity}");
    }
    let unknown = json!({"id": Uuid::new_v4()});
    problem(put(&app, &buyer, &unknown, 1).await, StatusCode::NOT_FOUND).await;
    let path = format!("/products/{}", mug["id"].as_str().unwrap());
    assert_eq!(
        app.send("DELETE", &path, Some(&admin), None).await.status(),
        StatusCode::NO_CONTENT
    );
    let body = problem(put(&app, &buyer, &mug, 1).await, StatusCode::CONFLICT).await;
    assert!(
        body["detail"].as_str().unwrap().contains("no longer sold"),
        "{body}"
    );
    let odd = app
        .send(
            "PUT",
            "/cart/items/not-a-uuid",
            Some(&buyer),
            Some(&json!({"quantity": 1})),
        )
        .await;
    problem(odd, StatusCode::BAD_REQUEST).await;
    let extra = app
        .send(
            "PUT",
            "/cart/items/00000000-0000-0000-0000-000000000000",
            Some(&buyer),
            Some(&json!({"quantity": 1, "price_cents": 1})),
        )
        .await;
    assert!(
        extra.status().is_client_error(),
        "unknown fields are refused"
    );
    let anonymous = app.get("/cart", None).await;
    problem(anonymous, StatusCode::UNAUTHORIZED).await;
    let empty = problem(checkout(&app, &buyer, None).await, StatusCode::CONFLICT).await;
    assert!(
        empty["detail"].as_str().unwrap().contains("empty"),
        "{empty}"
    );
    app.teardown().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn a_cart_holds_at_most_fifty_products(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let admin = app.caller(Role::Admin).await;
    let buyer = app.caller(Role::Buyer).await;
    let mut products = Vec::new();
    for i in 0..51 {
        products.push(app.product(&admin, &format!("C-FULL-{i}"), 100, 5).await);
    }
    for product in &products[..50] {
        assert_eq!(put(&app, &buyer, product, 1).await.status(), StatusCode::OK);
    }

    problem(
        put(&app, &buyer, &products[50], 1).await,
        StatusCode::CONFLICT,
    )
    .await;
    // Changing a line already in a full cart is still fine.
    assert_eq!(
        put(&app, &buyer, &products[0], 2).await.status(),
        StatusCode::OK
    );
    app.teardown().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn checkout_orders_the_cart_at_database_prices_and_empties_it_once(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let admin = app.caller(Role::Admin).await;
    let buyer = app.caller(Role::Buyer).await;
    let mug = app.product(&admin, "C-CO-MUG", 1200, 10).await;
    let tea = app.product(&admin, "C-CO-TEA", 450, 10).await;
    put(&app, &buyer, &mug, 2).await;
    put(&app, &buyer, &tea, 1).await;

    let first = checkout(&app, &buyer, Some("checkout-1")).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let order: Value = first.json().await.unwrap();
    assert_eq!(order["kind"], "regular");
    assert_eq!(order["total_cents"], 2 * 1200 + 450);
    assert_eq!((app.stock(&mug).await, app.stock(&tea).await), (8, 9));
    let cart: Value = app.get("/cart", Some(&buyer)).await.json().await.unwrap();
    assert_eq!(cart["items"], json!([]));

    // A retry of the same checkout answers with the same order and takes nothing more.
    let retry = checkout(&app, &buyer, Some("checkout-1")).await;
    assert_eq!(retry.status(), StatusCode::CREATED);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    let replayed: Value = retry.json().await.unwrap();
    assert_eq!(replayed["id"], order["id"]);
    assert_eq!((app.stock(&mug).await, app.stock(&tea).await), (8, 9));
    let jobs: i64 =
        sqlx::query_scalar("select count(*) from outbox where subject = 'jobs.payment'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(jobs, 1, "one payment job");
    app.teardown().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn checkout_names_every_line_that_cannot_be_sold_and_orders_nothing(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let admin = app.caller(Role::Admin).await;
    let buyer = app.caller(Role::Buyer).await;
    let fine = app.product(&admin, "C-X-FINE", 100, 10).await;
    let scarce = app.product(&admin, "C-X-SCARCE", 100, 1).await;
    let retired = app.product(&admin, "C-X-RETIRED", 100, 10).await;
    put(&app, &buyer, &fine, 2).await;
    put(&app, &buyer, &scarce, 3).await;
    put(&app, &buyer, &retired, 1).await;
    let path = format!("/products/{}", retired["id"].as_str().unwrap());
    app.send("DELETE", &path, Some(&admin), None).await;

    let body = problem(checkout(&app, &buyer, None).await, StatusCode::CONFLICT).await;

    assert_eq!(body["type"], "/problems/out-of-stock");
    let mut named: Vec<(String, String, i64, i64)> = body["unavailable"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["product_id"].as_str().unwrap().to_owned(),
                u["reason"].as_str().unwrap().to_owned(),
                u["requested"].as_i64().unwrap(),
                u["available"].as_i64().unwrap(),
            )
        })
        .collect();
    named.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(
        named,
        [
            (
                retired["id"].as_str().unwrap().to_owned(),
                "inactive".to_owned(),
                1,
                0
            ),
            (
                scarce["id"].as_str().unwrap().to_owned(),
                "out_of_stock".to_owned(),
                3,
                1
            ),
        ]
    );
    assert_eq!(app.stock(&fine).await, 10, "nothing was taken");
    let cart: Value = app.get("/cart", Some(&buyer)).await.json().await.unwrap();
    assert_eq!(
        cart["items"].as_array().unwrap().len(),
        3,
        "the cart is kept"
    );
    let orders: i64 = sqlx::query_scalar("select count(*) from orders")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(orders, 0);
    app.teardown().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn concurrent_checkouts_never_oversell(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let admin = app.caller(Role::Admin).await;
    let scarce = app.product(&admin, "C-RACE", 100, 7).await;
    let mut buyers = Vec::new();
    for _ in 0..20 {
        let buyer = app.caller(Role::Buyer).await;
        assert_eq!(put(&app, &buyer, &scarce, 1).await.status(), StatusCode::OK);
        buyers.push(buyer);
    }
    // One buyer also double-clicks: two checkouts of one cart make one order at most.
    let twice = &buyers[0];

    let mut attempts: Vec<_> = buyers.iter().map(|b| checkout(&app, b, None)).collect();
    attempts.push(checkout(&app, twice, None));
    let answers = futures::future::join_all(attempts).await;

    let created = answers
        .iter()
        .filter(|r| r.status() == StatusCode::CREATED)
        .count();
    assert!(
        answers
            .iter()
            .all(|r| [StatusCode::CREATED, StatusCode::CONFLICT].contains(&r.status())),
        "only 201 or 409"
    );
    assert_eq!(created, 7, "exactly the stock was sold");
    assert_eq!(app.stock(&scarce).await, 0);
    let twice_orders: i64 = sqlx::query_scalar("select count(*) from orders where member_id = $1")
        .bind(twice.id)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert!(twice_orders <= 1, "one cart, one order");
    app.teardown().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn a_front_end_on_an_allowed_origin_may_change_the_cart_and_others_may_not(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let preflight = |origin: &'static str| {
        app.client
            .request(
                reqwest::Method::OPTIONS,
                app.url("/cart/items/00000000-0000-0000-0000-000000000000"),
            )
            .header("origin", origin)
            .header("access-control-request-method", "PUT")
            .header(
                "access-control-request-headers",
                "authorization,content-type,idempotency-key",
            )
            .send()
    };

    let allowed = preflight("http://127.0.0.1:8080").await.unwrap();
    let stranger = preflight("https://elsewhere.example").await.unwrap();

    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "http://127.0.0.1:8080"
    );
    let methods = allowed.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap();
    assert!(
        methods.contains("PUT") && methods.contains("DELETE"),
        "{methods}"
    );
    let headers = allowed.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap();
    assert!(headers.contains("idempotency-key"), "{headers}");
    assert!(
        stranger
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    app.teardown().await;
}
