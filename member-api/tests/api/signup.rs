use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::{PASSWORD, TestApp, problem};

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn signup_returns_201_with_the_normalised_member(db: PgPool) {
    let app = TestApp::spawn(db).await;

    let response = app.signup("  Ann.Lee@Example.COM ").await;

    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()["location"], "/members/me");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["email"], "ann.lee@example.com");
    assert_eq!(body["role"], "buyer");
    assert_eq!(body["email_verified"], false);
    assert!(body.get("password_hash").is_none());
    let stored: (String,) =
        sqlx::query_as("select password_hash from members where email = 'ann.lee@example.com'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert!(
        stored.0.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{}",
        stored.0
    );
    app.teardown().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn signup_with_a_taken_email_in_any_case_returns_409(db: PgPool) {
    let app = TestApp::spawn(db).await;
    assert_eq!(
        app.signup("bob@example.com").await.status(),
        StatusCode::CREATED
    );

    let body = problem(app.signup("BOB@example.com").await, StatusCode::CONFLICT).await;

    assert_eq!(body["type"], "/problems/email-taken");
    app.teardown().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn concurrent_signups_with_the_same_email_create_exactly_one_member(db: PgPool) {
    let app = TestApp::spawn(db).await;

    let attempts = (0..16).map(|_| app.signup("race@example.com"));
    let statuses: Vec<StatusCode> = futures::future::join_all(attempts)
        .await
        .iter()
        .map(|r| r.status())
        .collect();

    let created = statuses
        .iter()
        .filter(|s| **s == StatusCode::CREATED)
        .count();
    let conflicts = statuses
        .iter()
        .filter(|s| **s == StatusCode::CONFLICT)
        .count();
    assert_eq!((created, conflicts), (1, 15), "{statuses:?}");
    let count: (i64,) =
        sqlx::query_as("select count(*) from members where email = 'race@example.com'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(count.0, 1);
    app.teardown().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn invalid_signups_get_422_naming_each_bad_field(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let long_name = "n".repeat(101);
    let long_password = "pass word ".repeat(13);
    let long_email = format!("{}@example.com", "a".repeat(250));
    let cases = [
        (
            json!({"email": "not-an-email", "password": PASSWORD, "name": "A"}),
            "email",
            "no @",
        ),
        (
            json!({"email": long_email, "password": PASSWORD, "name": "A"}),
            "email",
            "absurdly long email",
        ),
        (
            json!({"email": "a@example.com", "password": "short", "name": "A"}),
            "password",
            "short password",
        ),
        (
            json!({"email": "a@example.com", "password": long_password, "name": "A"}),
            "password",
            "long password",
        ),
        (
            json!({"email": "a@example.com", "password": "aaaaaaaaaaaa", "name": "A"}),
            "password",
            "one repeated character",
        ),
        (
            json!({"email": "a@example.com", "password": PASSWORD, "name": "   "}),
            "name",
            "blank name",
        ),
        (
            json!({"email": "a@example.com", "password": PASSWORD, "name": long_name}),
            "name",
            "long name",
        ),
        (
            json!({"email": "a@example.com", "password": PASSWORD, "name": "bad\u{0}name"}),
            "name",
            "control character",
        ),
    ];
    for (body, field, why) in cases {
        let response = app.post_json("/members", &body).await;
        let problem = problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(problem["type"], "/problems/validation", "{why}");
        let fields: Vec<&str> = problem["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        assert_eq!(fields, vec![field], "{why}: {problem}");
    }
    let count: (i64,) = sqlx::query_as("select count(*) from members where role = 'buyer'")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(count.0, 0);
    app.teardown().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn the_first_admin_is_created_once_from_the_config(db: PgPool) {
    let app = TestApp::spawn(db.clone()).await;
    // A second instance on the same database must not fail or duplicate the admin.
    let second = TestApp::spawn(db).await;

    let response = app
        .login(crate::helpers::ADMIN_EMAIL, crate::helpers::ADMIN_PASSWORD)
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let token: Value = response.json().await.unwrap();
    let me: Value = app
        .get_me(token["access_token"].as_str().unwrap())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["role"], "admin");
    let count: (i64,) = sqlx::query_as("select count(*) from members where role = 'admin'")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(count.0, 1);
    second.teardown().await;
    app.teardown().await;
}
