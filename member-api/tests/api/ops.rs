use reqwest::StatusCode;
use serde_json::Value;
use sqlx::PgPool;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::TestApp;

/// What the server sent next (up to 4 KiB), within 10 s.
async fn read_some(stream: &mut tokio::net::TcpStream) -> String {
    let mut buf = vec![0; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read(&mut buf))
        .await
        .expect("an answer within 10 s")
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn health_readiness_and_metrics_answer(db: PgPool) {
    let app = TestApp::spawn(db).await;
    app.signup("henry@example.com").await;

    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();

    assert_eq!(health.status(), StatusCode::OK);
    assert_eq!(ready.status(), StatusCode::OK);
    let ready: Value = ready.json().await.unwrap();
    let checks: Vec<&str> = ready["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(checks, ["postgres", "redis", "nats"]);
    assert!(metrics.contains("flash_member_signups_total"), "{metrics}");
    assert!(
        metrics.contains(
            r#"flash_http_request_duration_seconds_count{method="POST",route="/members",status="201"}"#
        ),
        "{metrics}"
    );
    app.teardown().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn responses_carry_a_request_id_and_echo_the_callers(db: PgPool) {
    let app = TestApp::spawn(db).await;

    let generated = app.client.get(app.url("/healthz")).send().await.unwrap();
    let echoed = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();

    assert!(uuid::Uuid::parse_str(generated.headers()["x-request-id"].to_str().unwrap()).is_ok());
    assert_eq!(echoed.headers()["x-request-id"], "abc-123");
    app.teardown().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn openapi_document_describes_every_endpoint(db: PgPool) {
    let app = TestApp::spawn(db).await;

    let doc: Value = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    let paths = doc["paths"].as_object().unwrap();
    for path in [
        "/members",
        "/members/me",
        "/members/me/verification-email",
        "/members/verify-email",
        "/auth/login",
        "/auth/refresh",
        "/auth/logout",
    ] {
        assert!(
            paths.contains_key(path),
            "{path} missing from /openapi.json"
        );
    }
    app.teardown().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn shutdown_finishes_in_flight_requests_then_refuses_new_connections(db: PgPool) {
    let app = TestApp::spawn(db).await;
    app.signup("ivy@example.com").await;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    // The login is in flight once the server asks for its body: with `Expect: 100-continue`
    // hyper sends `100 Continue` when the handler first reads the body, so the answer to wait
    // for is that line (no sleep standing in for it).
    let body =
        serde_json::json!({"email": "ivy@example.com", "password": crate::helpers::PASSWORD})
            .to_string();
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut login = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /auth/login HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        body.len()
    );
    login.write_all(head.as_bytes()).await.unwrap();
    let continued = read_some(&mut login).await;
    assert!(
        continued.starts_with("HTTP/1.1 100"),
        "the server did not ask for the body: {continued:?}"
    );

    app.stop();

    login.write_all(body.as_bytes()).await.unwrap();
    let answer = read_some(&mut login).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    let mut refused = false;
    for _ in 0..50 {
        if client.get(app.url("/healthz")).send().await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(refused, "server kept accepting after shutdown");
    app.teardown().await;
}
