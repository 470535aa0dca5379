use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::{TestApp, problem};

async fn refresh(app: &TestApp, token: &str) -> reqwest::Response {
    app.post_json("/auth/refresh", &json!({"refresh_token": token}))
        .await
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn refresh_rotates_the_pair_and_the_new_access_token_works(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (access, refresh_token) = app.new_session().await;

    let response = refresh(&app, &refresh_token).await;

    assert_eq!(response.status(), StatusCode::OK);
    let pair: Value = response.json().await.unwrap();
    let new_access = pair["access_token"].as_str().unwrap();
    assert_ne!(new_access, access);
    assert_ne!(pair["refresh_token"].as_str().unwrap(), refresh_token);
    assert_eq!(app.get_me(new_access).await.status(), StatusCode::OK);
    app.teardown().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn reusing_a_refresh_token_revokes_the_whole_family(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (first_access, first_refresh) = app.new_session().await;
    let pair: Value = refresh(&app, &first_refresh).await.json().await.unwrap();
    let second_refresh = pair["refresh_token"].as_str().unwrap().to_owned();
    let second_access = pair["access_token"].as_str().unwrap().to_owned();
    // Another session of the same member must survive.
    let (other_access, _) = app.new_session().await;

    // A thief replays the first (already used) refresh token.
    let body = problem(
        refresh(&app, &first_refresh).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;

    assert!(
        body["detail"].as_str().unwrap().contains("already used"),
        "{body}"
    );
    // The legitimate holder's newer refresh token is dead too...
    problem(
        refresh(&app, &second_refresh).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    // ...and so are the family's access tokens.
    problem(app.get_me(&first_access).await, StatusCode::UNAUTHORIZED).await;
    let revoked = problem(app.get_me(&second_access).await, StatusCode::UNAUTHORIZED).await;
    // Nobody logged out: the answer must not say so.
    assert!(
        !revoked["detail"].as_str().unwrap().contains("logout"),
        "{revoked}"
    );
    assert_eq!(app.get_me(&other_access).await.status(), StatusCode::OK);
    app.teardown().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn concurrent_refreshes_with_one_token_rotate_it_exactly_once(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (_, refresh_token) = app.new_session().await;

    let attempts = (0..8).map(|_| refresh(&app, &refresh_token));
    let statuses: Vec<StatusCode> = futures::future::join_all(attempts)
        .await
        .iter()
        .map(|r| r.status())
        .collect();

    let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    assert_eq!(ok, 1, "{statuses:?}");
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::OK || *s == StatusCode::UNAUTHORIZED),
        "{statuses:?}"
    );
    app.teardown().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn unknown_or_expired_refresh_tokens_get_401(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (_, refresh_token) = app.new_session().await;
    sqlx::query("update refresh_tokens set expires_at = now() - interval '1 second'")
        .execute(&app.db)
        .await
        .unwrap();

    problem(
        refresh(&app, &refresh_token).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    problem(
        refresh(&app, "made-up-token").await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    problem(
        refresh(&app, &"x".repeat(10_000)).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    app.teardown().await;
}

/// A refresh racing a logout of the same session: whichever wins, no refresh token of the
/// logged-out session works afterwards (before the family lock, the logout's update could miss
/// the token the refresh was inserting, which then stayed live).
#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn a_refresh_racing_a_logout_leaves_no_live_refresh_token(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let mut refreshed_first = 0;
    for _ in 0..40 {
        let (access, refresh_token) = app.new_session().await;
        let (rotated, logged_out) = tokio::join!(
            refresh(&app, &refresh_token),
            app.post_bearer("/auth/logout", &access)
        );
        assert_eq!(logged_out.status(), StatusCode::NO_CONTENT);
        if rotated.status() != StatusCode::OK {
            problem(rotated, StatusCode::UNAUTHORIZED).await;
            continue;
        }
        refreshed_first += 1;
        let pair: Value = rotated.json().await.unwrap();
        let next = pair["refresh_token"].as_str().unwrap();
        problem(refresh(&app, next).await, StatusCode::UNAUTHORIZED).await;
    }
    let live: i64 = sqlx::query_scalar(
        "select count(*) from refresh_tokens t join ended_sessions e on e.session_id = t.family_id
         where t.revoked_at is null",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(live, 0, "live refresh tokens in ended sessions");
    assert!(
        refreshed_first > 0,
        "no refresh ever won the race; the test proves nothing"
    );
    app.teardown().await;
}
