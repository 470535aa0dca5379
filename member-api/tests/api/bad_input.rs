use reqwest::StatusCode;
use sqlx::PgPool;

use crate::helpers::{PASSWORD, TestApp, problem};

/// One malformed request and the status it must get.
struct Case {
    method: &'static str,
    path: &'static str,
    content_type: Option<&'static str>,
    body: String,
    status: StatusCode,
    why: &'static str,
}

fn case(
    method: &'static str,
    path: &'static str,
    content_type: Option<&'static str>,
    body: impl Into<String>,
    status: StatusCode,
    why: &'static str,
) -> Case {
    Case {
        method,
        path,
        content_type,
        body: body.into(),
        status,
        why,
    }
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn malformed_requests_get_the_right_4xx_problem(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let huge = format!(
        r#"{{"email":"a@example.com","password":"{PASSWORD}","name":"{}"}}"#,
        "n".repeat(20_000)
    );
    let json = Some("application/json");
    let extra_field =
        format!(r#"{{"email":"a@example.com","password":"{PASSWORD}","name":"A","role":"admin"}}"#);
    let cases = [
        case(
            "POST",
            "/members",
            json,
            "{not json",
            StatusCode::BAD_REQUEST,
            "syntax error",
        ),
        case(
            "POST",
            "/members",
            json,
            "",
            StatusCode::BAD_REQUEST,
            "empty body",
        ),
        case(
            "POST",
            "/members",
            Some("text/plain"),
            "{}",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "wrong content type",
        ),
        case(
            "POST",
            "/members",
            None,
            "{}",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "no content type",
        ),
        case(
            "POST",
            "/members",
            json,
            huge,
            StatusCode::PAYLOAD_TOO_LARGE,
            "body over the limit",
        ),
        case(
            "POST",
            "/members",
            json,
            r#"{"email":"a@example.com","password":"x"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "missing field",
        ),
        case(
            "POST",
            "/members",
            json,
            extra_field,
            StatusCode::UNPROCESSABLE_ENTITY,
            "extra field (role escalation attempt)",
        ),
        case(
            "POST",
            "/auth/login",
            json,
            r#"{"email":1,"password":2}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "wrong types",
        ),
        case(
            "DELETE",
            "/members/me",
            None,
            "",
            StatusCode::METHOD_NOT_ALLOWED,
            "wrong method",
        ),
    ];
    for Case {
        method,
        path,
        content_type,
        body,
        status,
        why,
    } in cases
    {
        let mut request = app
            .client
            .request(method.parse().unwrap(), app.url(path))
            .body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), status, "{why}");
        problem(response, status).await;
    }
    let unknown = app
        .client
        .get(app.url("/members/not-a-route"))
        .send()
        .await
        .unwrap();
    let body = problem(unknown, StatusCode::NOT_FOUND).await;
    assert_eq!(body["type"], "/problems/not-found");
    let count: (i64,) = sqlx::query_as("select count(*) from members where role = 'buyer'")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(count.0, 0, "no bad request created a member");
    app.teardown().await;
}

/// Sabotage: the members table disappears under the running service. Requests must get an
/// opaque 500 problem, not a panic or a leaked SQL error.
#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn a_broken_database_gives_an_opaque_500_problem(db: PgPool) {
    let app = TestApp::spawn(db).await;
    sqlx::query("alter table members rename to members_gone")
        .execute(&app.db)
        .await
        .unwrap();

    let response = app.signup("grace@example.com").await;

    let body = problem(response, StatusCode::INTERNAL_SERVER_ERROR).await;
    assert_eq!(body["type"], "/problems/internal");
    assert!(!body.to_string().contains("members"), "{body}");
    sqlx::query("alter table members_gone rename to members")
        .execute(&app.db)
        .await
        .unwrap();
    app.teardown().await;
}
