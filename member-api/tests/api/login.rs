use reqwest::StatusCode;
use serde_json::Value;
use sqlx::PgPool;

use crate::helpers::{PASSWORD, TestApp, problem};

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn login_returns_a_token_pair_that_opens_the_profile(db: PgPool) {
    let app = TestApp::spawn(db).await;
    app.signup("carol@example.com").await;

    let response = app.login("  CAROL@example.com", PASSWORD).await;

    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    let me = app.get_me(body["access_token"].as_str().unwrap()).await;
    assert_eq!(me.status(), StatusCode::OK);
    let me: Value = me.json().await.unwrap();
    assert_eq!(me["email"], "carol@example.com");
    app.teardown().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn unknown_email_and_wrong_password_get_the_same_401(db: PgPool) {
    let app = TestApp::spawn(db).await;
    app.signup("dave@example.com").await;

    let wrong_password = problem(
        app.login("dave@example.com", "not the password").await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    let unknown_email = problem(
        app.login("nobody@example.com", "not the password").await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    let malformed_email = problem(
        app.login("nobody", "not the password").await,
        StatusCode::UNAUTHORIZED,
    )
    .await;

    assert_eq!(wrong_password, unknown_email);
    assert_eq!(wrong_password, malformed_email);
    app.teardown().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn login_attempts_are_limited_per_email_with_retry_after(db: PgPool) {
    let app = TestApp::spawn_with(db, |c| c.limits.login_per_minute_per_email = 3).await;
    app.signup("erin@example.com").await;

    for _ in 0..3 {
        assert_eq!(
            app.login("erin@example.com", "wrong password!")
                .await
                .status(),
            StatusCode::UNAUTHORIZED
        );
    }
    // Even the right password is refused now: guessing cannot continue by luck.
    let response = app.login("Erin@Example.com", PASSWORD).await;

    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let body = problem(response, StatusCode::TOO_MANY_REQUESTS).await;
    assert_eq!(body["type"], "/problems/rate-limited");
    // Another email is unaffected.
    app.signup("frank@example.com").await;
    assert_eq!(
        app.login("frank@example.com", PASSWORD).await.status(),
        StatusCode::OK
    );
    app.teardown().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn login_attempts_are_limited_per_client_address(db: PgPool) {
    let app = TestApp::spawn_with(db, |c| c.limits.login_per_minute_per_ip = 4).await;

    for n in 0..4 {
        let status = app
            .login(&format!("user{n}@example.com"), "whatever pass")
            .await
            .status();
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let response = app.login("user9@example.com", "whatever pass").await;

    problem(response, StatusCode::TOO_MANY_REQUESTS).await;
    app.teardown().await;
}
