use std::sync::Arc;

use axum::{Router, routing::get};
use flash_core::{
    auth::{AuthMember, Authenticator, Denylist, JwtVerifier},
    redis_model::Keys,
};
use reqwest::StatusCode;
use serde_json::json;
use sqlx::PgPool;

use crate::helpers::{TestApp, problem};

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn logout_stops_the_access_token_and_the_refresh_family(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (access, refresh) = app.new_session().await;

    let response = app.post_bearer("/auth/logout", &access).await;

    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let body = problem(app.get_me(&access).await, StatusCode::UNAUTHORIZED).await;
    assert_eq!(body["type"], "/problems/unauthorized");
    problem(
        app.post_json("/auth/refresh", &json!({"refresh_token": refresh}))
            .await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    // Logging out twice with the same token is refused like any other use of it.
    problem(
        app.post_bearer("/auth/logout", &access).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    app.teardown().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn logout_without_a_token_is_401(db: PgPool) {
    let app = TestApp::spawn(db).await;

    let response = app
        .client
        .post(app.url("/auth/logout"))
        .send()
        .await
        .unwrap();

    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    problem(response, StatusCode::UNAUTHORIZED).await;
    app.teardown().await;
}

/// Another service (its own verifier, Redis connection and router, sharing only the public key
/// and the Redis prefix, as admission or catalog-api do) refuses a token logged out here.
#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn a_second_service_refuses_a_logged_out_token(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let other = spawn_other_service(&app).await;
    let (access, _) = app.new_session().await;
    let client = reqwest::Client::new();
    let call = || client.get(&other).bearer_auth(&access).send();
    assert_eq!(call().await.unwrap().status(), StatusCode::OK);

    assert_eq!(
        app.post_bearer("/auth/logout", &access).await.status(),
        StatusCode::NO_CONTENT
    );

    problem(call().await.unwrap(), StatusCode::UNAUTHORIZED).await;
    app.teardown().await;
}

/// Redis losing every key (a restart without persistence, a `FLUSHALL`) must not bring a
/// logged-out session back: PostgreSQL knows which sessions ended, and the denylist is rebuilt
/// from it before any token is let through. The same goes for a session revoked because its
/// refresh token was used twice.
#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn a_logout_outlives_redis_losing_everything(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let other = spawn_other_service(&app).await;
    let client = reqwest::Client::new();
    let (logged_out, _) = app.new_session().await;
    let (reused, reused_refresh) = app.new_session().await;
    let (kept, _) = app.new_session().await;
    assert_eq!(
        app.post_bearer("/auth/logout", &logged_out).await.status(),
        StatusCode::NO_CONTENT
    );
    let refresh = json!({"refresh_token": reused_refresh});
    assert_eq!(
        app.post_json("/auth/refresh", &refresh).await.status(),
        StatusCode::OK
    );
    problem(
        app.post_json("/auth/refresh", &refresh).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;

    app.iso.lose_redis().await;

    for token in [&logged_out, &reused] {
        problem(app.get_me(token).await, StatusCode::UNAUTHORIZED).await;
        let elsewhere = client.get(&other).bearer_auth(token).send().await.unwrap();
        problem(elsewhere, StatusCode::UNAUTHORIZED).await;
    }
    assert_eq!(app.get_me(&kept).await.status(), StatusCode::OK);
    app.iso.lose_redis().await;
    let elsewhere = client.get(&other).bearer_auth(&kept).send().await.unwrap();
    assert_eq!(elsewhere.status(), StatusCode::OK);
    app.teardown().await;
}

async fn spawn_other_service(app: &TestApp) -> String {
    let verifier = JwtVerifier::from_args(&app.config.jwt).unwrap();
    let redis = flash_core::redis::connect(&app.iso.redis).await.unwrap();
    let denylist = Denylist::new(
        redis,
        Keys::new(&app.iso.redis.redis_key_prefix),
        app.db.clone(),
    );
    let auth = Arc::new(Authenticator::new(verifier, denylist));
    let router = Router::new()
        .route(
            "/whoami",
            get(|member: AuthMember| async move { member.member_id.to_string() }),
        )
        .with_state(auth);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}/whoami")
}
