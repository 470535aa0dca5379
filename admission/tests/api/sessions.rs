//! A logout through the shop origin holds in every service behind it, even after Redis has lost
//! every key: the real door, member-api and catalog-api.

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::stack::{ADMIN, Services};

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn a_logout_through_the_door_outlives_redis_losing_everything(db: PgPool) {
    let stack = Services::start(&db).await;
    let client = reqwest::Client::new();
    let login = || async {
        let pair: Value = client
            .post(format!("{}/auth/login", stack.door))
            .json(&json!({"email": ADMIN.0, "password": ADMIN.1}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        pair["access_token"].as_str().unwrap().to_owned()
    };
    let get = |path: &'static str, token: String| {
        let request = client
            .get(format!("{}{path}", stack.door))
            .bearer_auth(token);
        async move { request.send().await.unwrap().status() }
    };
    let (gone, kept) = (login().await, login().await);
    let logout = client
        .post(format!("{}/auth/logout", stack.door))
        .bearer_auth(&gone)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);

    stack.iso.lose_redis().await;

    for path in ["/members/me", "/orders"] {
        assert_eq!(
            get(path, gone.clone()).await,
            StatusCode::UNAUTHORIZED,
            "{path} let a logged-out token in after Redis lost its keys"
        );
        assert_eq!(get(path, kept.clone()).await, StatusCode::OK, "{path}");
    }
    stack.stop().await;
}
