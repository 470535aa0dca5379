use async_nats::jetstream;
use flash_core::jobs::{EmailJob, EmailMessage};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::{TestApp, problem};

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn a_verification_email_job_is_durably_queued_and_its_token_verifies(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (access, _) = app.new_session().await;

    let response = app
        .post_bearer("/members/me/verification-email", &access)
        .await;

    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let queued: Value = response.json().await.unwrap();
    // The job is in the stream, with the email id as its dedup id.
    let nats = flash_core::nats::connect(&app.iso.nats, "test")
        .await
        .unwrap();
    let js = jetstream::new(nats);
    let stream = js.get_stream(&app.iso.nats.nats_jobs_stream).await.unwrap();
    let subject = format!("{}jobs.email", app.iso.nats.nats_subject_prefix);
    let message = stream
        .get_last_raw_message_by_subject(&subject)
        .await
        .unwrap();
    let job: EmailJob = serde_json::from_slice(&message.payload).unwrap();
    assert_eq!(
        job.email_id.to_string(),
        queued["email_id"].as_str().unwrap()
    );
    assert_eq!(
        message.headers.get("Nats-Msg-Id").unwrap().as_str(),
        queued["email_id"].as_str().unwrap()
    );
    let EmailMessage::VerifyEmail { token, .. } = job.message else {
        panic!("expected a verification email, got {:?}", job.message);
    };

    // The token from the email verifies the address, once.
    let verified = app
        .post_json("/members/verify-email", &json!({"token": token}))
        .await;
    assert_eq!(verified.status(), StatusCode::NO_CONTENT);
    let me: Value = app.get_me(&access).await.json().await.unwrap();
    assert_eq!(me["email_verified"], true);
    problem(
        app.post_json("/members/verify-email", &json!({"token": token}))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    // A verified member asking again gets 409, not another email.
    let again = problem(
        app.post_bearer("/members/me/verification-email", &access)
            .await,
        StatusCode::CONFLICT,
    )
    .await;
    assert_eq!(again["type"], "/problems/conflict");
    app.teardown().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn verification_emails_are_rate_limited_per_member(db: PgPool) {
    let app = TestApp::spawn_with(db, |c| c.limits.verification_emails_per_hour = 2).await;
    let (access, _) = app.new_session().await;

    for _ in 0..2 {
        assert_eq!(
            app.post_bearer("/members/me/verification-email", &access)
                .await
                .status(),
            StatusCode::ACCEPTED
        );
    }
    let response = app
        .post_bearer("/members/me/verification-email", &access)
        .await;

    assert!(response.headers().contains_key("retry-after"));
    problem(response, StatusCode::TOO_MANY_REQUESTS).await;
    app.teardown().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn an_unknown_verification_token_is_422(db: PgPool) {
    let app = TestApp::spawn(db).await;

    let body = problem(
        app.post_json("/members/verify-email", &json!({"token": "nope"}))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;

    assert_eq!(body["errors"][0]["field"], "token");
    app.teardown().await;
}
