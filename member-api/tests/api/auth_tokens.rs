use flash_core::{
    auth::keys::{JwtSigner, KeyPair},
    domain::{MemberId, Role},
};
use reqwest::StatusCode;
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{TestApp, problem};

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn bad_tokens_get_401_problems(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (valid, _) = app.new_session().await;
    let iss = &app.config.jwt.jwt_issuer;
    let aud = &app.config.jwt.jwt_audience;
    let member = MemberId::new();
    let expired = JwtSigner::from_pem(app.iso.keys.private_pem.as_bytes(), iss, aud, -120)
        .unwrap()
        .mint(member, Role::Admin, Uuid::new_v4())
        .unwrap()
        .0;
    let stranger = KeyPair::generate().unwrap();
    let wrong_key = JwtSigner::from_pem(stranger.private_pem.as_bytes(), iss, aud, 600)
        .unwrap()
        .mint(member, Role::Admin, Uuid::new_v4())
        .unwrap()
        .0;
    let payload = valid.split('.').nth(1).unwrap();
    // {"alg":"none","typ":"JWT"} over a real payload, unsigned.
    let alg_none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");
    let mut tampered = valid.clone();
    tampered.replace_range(valid.len() - 4.., "AAAA");
    let cases = [
        (expired, "expired"),
        (wrong_key, "signed with another key"),
        (alg_none, "alg none"),
        (tampered, "tampered signature"),
        ("garbage".to_owned(), "not a JWT"),
    ];
    for (token, why) in cases {
        let body = problem(app.get_me(&token).await, StatusCode::UNAUTHORIZED).await;
        assert_eq!(body["type"], "/problems/unauthorized", "{why}");
    }
    let no_scheme = app
        .client
        .get(app.url("/members/me"))
        .header("authorization", valid)
        .send()
        .await
        .unwrap();
    problem(no_scheme, StatusCode::UNAUTHORIZED).await;
    app.teardown().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn a_valid_token_for_a_deleted_member_is_401(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (access, _) = app.new_session().await;
    sqlx::query("delete from members where role = 'buyer'")
        .execute(&app.db)
        .await
        .unwrap();

    problem(app.get_me(&access).await, StatusCode::UNAUTHORIZED).await;
    app.teardown().await;
}
