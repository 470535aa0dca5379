use flash_core::domain::Role;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::{TestApp, problem};

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn an_admin_creates_reads_updates_and_soft_deletes_a_product(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let admin = app.caller(Role::Admin).await;

    let created = app.product(&admin, "SNEAKER-1", 12900, 50).await;
    let id = created["id"].as_str().unwrap();
    let path = format!("/products/{id}");

    let read: Value = app.get(&path, None).await.json().await.unwrap();
    assert_eq!(read["price_cents"], 12900);
    assert_eq!(read["active"], true);
    let updated = app
        .send(
            "PATCH",
            &path,
            Some(&admin),
            Some(&json!({"price_cents": 9900, "name": "Renamed"})),
        )
        .await;
    assert_eq!(updated.status(), StatusCode::OK);
    let read: Value = app.get(&path, None).await.json().await.unwrap();
    assert_eq!(
        (read["price_cents"].as_i64(), read["name"].as_str()),
        (Some(9900), Some("Renamed"))
    );

    assert_eq!(
        app.send("DELETE", &path, Some(&admin), None).await.status(),
        StatusCode::NO_CONTENT
    );
    problem(app.get(&path, None).await, StatusCode::NOT_FOUND).await;
    let list: Value = app.get("/products", None).await.json().await.unwrap();
    assert!(list["items"].as_array().unwrap().is_empty(), "{list}");
    app.teardown().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn writes_need_an_admin(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let buyer = app.caller(Role::Buyer).await;
    let body = json!({"sku": "X", "name": "X", "price_cents": 1, "currency": "EUR", "stock": 1});

    problem(
        app.send("POST", "/products", None, Some(&body)).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    let forbidden = problem(
        app.send("POST", "/products", Some(&buyer), Some(&body))
            .await,
        StatusCode::FORBIDDEN,
    )
    .await;

    assert_eq!(forbidden["type"], "/problems/forbidden");
    app.teardown().await;
}

/// Every read after a write's 200 sees the write, although the product was cached before.
#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn the_cache_never_serves_a_stale_price_after_a_write(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let admin = app.caller(Role::Admin).await;
    let created = app.product(&admin, "CACHED-1", 1000, 5).await;
    let path = format!("/products/{}", created["id"].as_str().unwrap());
    app.get(&path, None).await;
    app.get(&path, None).await;

    for price in [1100, 1200, 1300] {
        app.send(
            "PATCH",
            &path,
            Some(&admin),
            Some(&json!({"price_cents": price})),
        )
        .await;
        let read: Value = app.get(&path, None).await.json().await.unwrap();
        assert_eq!(read["price_cents"], price);
    }
    let metrics = app.get("/metrics", None).await.text().await.unwrap();
    assert!(
        metrics.contains(r#"flash_catalog_product_cache_total{result="hit"}"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"flash_catalog_product_cache_total{result="miss"}"#),
        "{metrics}"
    );
    app.teardown().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn pages_stay_stable_when_products_are_added_between_them(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let admin = app.caller(Role::Admin).await;
    for n in 0..5 {
        app.product(&admin, &format!("PAGE-{n}"), 100, 1).await;
    }

    let mut seen = Vec::new();
    let mut path = "/products?limit=2".to_owned();
    loop {
        let page: Value = app.get(&path, None).await.json().await.unwrap();
        seen.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["sku"].as_str().unwrap().to_owned()),
        );
        if seen.len() == 2 {
            app.product(&admin, "PAGE-new", 100, 1).await;
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/products?limit=2&cursor={cursor}"),
            None => break,
        }
    }

    assert_eq!(
        seen,
        ["PAGE-0", "PAGE-1", "PAGE-2", "PAGE-3", "PAGE-4", "PAGE-new"]
    );
    app.teardown().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn the_text_filter_matches_literally(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let admin = app.caller(Role::Admin).await;
    app.product(&admin, "RED-SHOE", 100, 1).await;
    app.product(&admin, "BLUE-HAT", 100, 1).await;

    let red: Value = app.get("/products?q=red", None).await.json().await.unwrap();
    let percent: Value = app.get("/products?q=%25", None).await.json().await.unwrap();

    assert_eq!(red["items"].as_array().unwrap().len(), 1);
    assert!(
        percent["items"].as_array().unwrap().is_empty(),
        "% must not be a wildcard"
    );
    app.teardown().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn bad_product_input_gets_clear_4xx_problems(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let admin = app.caller(Role::Admin).await;
    app.product(&admin, "TAKEN", 100, 1).await;
    let base =
        json!({"sku": "OK-1", "name": "Name", "price_cents": 100, "currency": "EUR", "stock": 1});
    let with = |field: &str, value: Value| {
        let mut body = base.clone();
        body[field] = value;
        body
    };
    let invalid = [
        (with("sku", json!("has space")), "sku"),
        (with("sku", json!("")), "sku"),
        (with("name", json!("   ")), "name"),
        (with("price_cents", json!(-1)), "price_cents"),
        (with("currency", json!("euro")), "currency"),
        (with("stock", json!(-5)), "stock"),
        (with("stock", json!(10_000_000_000i64)), "stock"),
    ];
    for (body, field) in invalid {
        let problem = problem(
            app.send("POST", "/products", Some(&admin), Some(&body))
                .await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert_eq!(problem["errors"][0]["field"], field, "{problem}");
    }
    let conflict = problem(
        app.send(
            "POST",
            "/products",
            Some(&admin),
            Some(&with("sku", json!("TAKEN"))),
        )
        .await,
        StatusCode::CONFLICT,
    )
    .await;
    assert_eq!(conflict["type"], "/problems/conflict");
    problem(
        app.send(
            "POST",
            "/products",
            Some(&admin),
            Some(&with("extra", json!(1))),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    problem(
        app.send(
            "POST",
            "/products",
            Some(&admin),
            Some(&with("price_cents", json!(1.5))),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    problem(
        app.get("/products/not-a-uuid", None).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    problem(
        app.get("/products?limit=0", None).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    problem(
        app.get("/products?limit=abc", None).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    problem(
        app.get("/products?cursor=garbage", None).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    let missing = format!("/products/{}", uuid::Uuid::new_v4());
    problem(app.get(&missing, None).await, StatusCode::NOT_FOUND).await;
    problem(
        app.send("PATCH", &missing, Some(&admin), Some(&json!({"name": "x"})))
            .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    app.teardown().await;
}
