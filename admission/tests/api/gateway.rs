//! The gateway: member-api's and catalog-api's routes through the door. Small upstreams on
//! port 0 echo what reached them (or stall, or are not there at all); the last test goes
//! through the real member-api and catalog-api.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    Json, Router, extract::Request, http::StatusCode as AxumStatus, response::IntoResponse,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{
    helpers::{TestApp, json, problem},
    stack::Services,
};

/// A stand-in upstream: answers every request with what it received, tagged with its name.
struct Echo {
    url: String,
    /// Requests that reached the handler.
    requests: Arc<AtomicUsize>,
    /// Requests whose whole body arrived.
    bodies: Arc<AtomicUsize>,
}

impl Echo {
    async fn start(tag: &'static str) -> Self {
        let requests = Arc::new(AtomicUsize::new(0));
        let bodies = Arc::new(AtomicUsize::new(0));
        let (counted, completed) = (Arc::clone(&requests), Arc::clone(&bodies));
        let echo = move |request: Request| async move {
            counted.fetch_add(1, Ordering::SeqCst);
            let (parts, body) = request.into_parts();
            let Ok(body) = axum::body::to_bytes(body, usize::MAX).await else {
                return (AxumStatus::BAD_REQUEST, "incomplete body").into_response();
            };
            completed.fetch_add(1, Ordering::SeqCst);
            let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for (name, value) in &parts.headers {
                headers
                    .entry(name.to_string())
                    .or_default()
                    .push(value.to_str().unwrap().to_owned());
            }
            let seen = json!({
                "upstream": tag,
                "method": parts.method.as_str(),
                "uri": parts.uri.to_string(),
                "headers": headers,
                "body": String::from_utf8_lossy(&body),
            });
            (
                AxumStatus::CREATED,
                [
                    ("x-upstream", tag),
                    ("location", "/somewhere"),
                    ("connection", "x-hop-secret"),
                    ("x-hop-secret", "1"),
                    ("keep-alive", "timeout=5"),
                    ("proxy-authenticate", "Basic"),
                    ("access-control-allow-origin", "https://elsewhere.example"),
                ],
                Json(seen),
            )
                .into_response()
        };
        let url = serve(Router::new().fallback(echo)).await;
        Self {
            url,
            requests,
            bodies,
        }
    }
}

/// Serves `router` on a free port; returns its URL.
async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    url
}

/// The door with its gateway pointing at `members` and `catalog`.
async fn door(
    db: PgPool,
    members: &str,
    catalog: &str,
    tweak: impl FnOnce(&mut admission::Config),
) -> TestApp {
    let (members, catalog) = (members.to_owned(), catalog.to_owned());
    TestApp::spawn_with(db, move |config| {
        config.gateway.member_upstream_url = members;
        config.gateway.catalog_upstream_url = catalog;
        tweak(config);
    })
    .await
}

/// A URL of a port nothing listens on.
fn closed_port() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", listener.local_addr().unwrap())
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn each_route_group_reaches_its_own_service_with_method_path_and_query_unchanged(db: PgPool) {
    let (members, catalog) = (Echo::start("members").await, Echo::start("catalog").await);
    let app = door(db, &members.url, &catalog.url, |_| {}).await;
    let cases = [
        (Method::POST, "/members", "members"),
        (Method::GET, "/members/me?fields=email", "members"),
        (Method::POST, "/auth/login", "members"),
        (Method::POST, "/auth/refresh", "members"),
        (Method::GET, "/products", "catalog"),
        (Method::GET, "/products?page=2&sort=name%20asc", "catalog"),
        (
            Method::GET,
            "/flash-sales/0190f3c1-0000-7000-8000-000000000000/stats",
            "catalog",
        ),
        (Method::PUT, "/flash-sales/x/outflow", "catalog"),
        (Method::PATCH, "/orders/17", "catalog"),
        (Method::DELETE, "/cart/items/3", "catalog"),
    ];
    for (method, path, upstream) in cases {
        let response = app
            .client
            .request(method.clone(), format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        let seen = json(response, StatusCode::CREATED).await;
        assert_eq!(seen["upstream"], upstream, "{method} {path}");
        assert_eq!(seen["method"], method.as_str(), "{method} {path}");
        assert_eq!(seen["uri"], path, "{method} {path}");
    }
    // The door's own routes are not forwarded.
    let page = app
        .client
        .get(format!("{}/sales/{}", app.base, uuid::Uuid::now_v7()))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(members.requests.load(Ordering::SeqCst), 4);
    assert_eq!(catalog.requests.load(Ordering::SeqCst), 6);
    app.teardown().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn end_to_end_headers_and_body_pass_and_hop_by_hop_headers_do_not(db: PgPool) {
    let members = Echo::start("members").await;
    let app = door(db, &members.url, &closed_port(), |_| {}).await;
    let door_host = app.base.trim_start_matches("http://").to_owned();
    let member_host = members.url.trim_start_matches("http://").to_owned();

    let response = app
        .client
        .post(format!("{}/auth/login?next=%2Fsales", app.base))
        .bearer_auth("a-token")
        .header("content-type", "application/json")
        .header("x-request-id", "gateway-test-1")
        .header("x-client-trace", "abc")
        .header("x-forwarded-for", "6.6.6.6")
        .header("connection", "x-hop-secret")
        .header("x-hop-secret", "1")
        .header("keep-alive", "timeout=5")
        .header("proxy-authorization", "Basic c2VjcmV0")
        .header("te", "trailers")
        .body(r#"{"email":"ann@example.com","password":"correct horse"}"#)
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::CREATED);
    let back = response.headers().clone();
    assert_eq!(back["x-upstream"], "members");
    assert_eq!(back["location"], "/somewhere");
    assert_eq!(back["x-request-id"], "gateway-test-1");
    for hop in [
        "x-hop-secret",
        "keep-alive",
        "proxy-authenticate",
        "access-control-allow-origin",
    ] {
        assert!(!back.contains_key(hop), "{hop} came back: {back:?}");
    }
    let seen: Value = response.json().await.unwrap();
    assert_eq!(seen["uri"], "/auth/login?next=%2Fsales");
    assert_eq!(
        seen["body"],
        r#"{"email":"ann@example.com","password":"correct horse"}"#
    );
    let headers = &seen["headers"];
    assert_eq!(headers["authorization"], json!(["Bearer a-token"]));
    assert_eq!(headers["content-type"], json!(["application/json"]));
    assert_eq!(headers["x-client-trace"], json!(["abc"]));
    assert_eq!(headers["x-request-id"], json!(["gateway-test-1"]));
    // No balancer is trusted, so the client's own claim is replaced by its address.
    assert_eq!(headers["x-forwarded-for"], json!(["127.0.0.1"]));
    assert_eq!(headers["x-forwarded-proto"], json!(["http"]));
    assert_eq!(headers["x-forwarded-host"], json!([door_host]));
    assert_eq!(headers["host"], json!([member_host]));
    for hop in ["x-hop-secret", "keep-alive", "proxy-authorization", "te"] {
        assert!(headers.get(hop).is_none(), "{hop} was forwarded: {headers}");
    }

    // Without an id of the caller's, the door's own goes upstream and comes back.
    let response = app
        .client
        .get(format!("{}/members/me", app.base))
        .send()
        .await
        .unwrap();
    let id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let seen = json(response, StatusCode::CREATED).await;
    assert_eq!(seen["headers"]["x-request-id"], json!([id]));
    app.teardown().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn an_upstream_that_is_down_is_answered_502_at_once(db: PgPool) {
    let catalog = Echo::start("catalog").await;
    // The gateway's own timeouts are far longer than this test waits: only a prompt answer
    // to the refused connection passes.
    let app = door(db, &closed_port(), &catalog.url, |config| {
        config.gateway.gateway_connect_timeout_ms = 60_000;
        config.gateway.gateway_upstream_timeout_ms = 60_000;
        config.http.http_request_timeout_ms = 120_000;
    })
    .await;
    let patient = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();

    let response = patient
        .post(format!("{}/auth/login", app.base))
        .body("{}")
        .send()
        .await
        .expect("answered before the test's patience ran out");

    let body = problem(response, StatusCode::BAD_GATEWAY).await;
    assert_eq!(body["type"], "/problems/bad-gateway");
    assert_eq!(body["status"], 502);
    // The other upstream is unaffected.
    let response = patient
        .get(format!("{}/products", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    app.teardown().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn a_slow_upstream_is_answered_504_once_the_gateway_timeout_passes(db: PgPool) {
    let slow = serve(Router::new().fallback(|| async {
        tokio::time::sleep(Duration::from_secs(30)).await;
        "too late"
    }))
    .await;
    let app = door(db, &closed_port(), &slow, |config| {
        config.gateway.gateway_upstream_timeout_ms = 300;
    })
    .await;

    let started = Instant::now();
    let response = app
        .client
        .get(format!("{}/flash-sales", app.base))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();

    let elapsed = started.elapsed();
    let body = problem(response, StatusCode::GATEWAY_TIMEOUT).await;
    assert_eq!(body["type"], "/problems/gateway-timeout");
    assert!(
        elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(5),
        "answered after {elapsed:?}"
    );
    app.teardown().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn a_slow_upstream_cannot_take_the_flash_sale_routes_slots(db: PgPool) {
    let arrived = Arc::new(tokio::sync::Notify::new());
    let stalled = Arc::clone(&arrived);
    let slow = serve(Router::new().fallback(move || {
        let stalled = Arc::clone(&stalled);
        async move {
            stalled.notify_one();
            tokio::time::sleep(Duration::from_secs(30)).await;
            "too late"
        }
    }))
    .await;
    // Two requests in flight for the whole door, one of them for the gateway.
    let app = door(db, &closed_port(), &slow, |config| {
        config.http.http_max_in_flight = 2;
        config.gateway.gateway_max_in_flight = 1;
        config.gateway.gateway_upstream_timeout_ms = 60_000;
        config.http.http_request_timeout_ms = 60_000;
    })
    .await;
    let sale = app
        .arm(10, chrono::Utc::now() - chrono::Duration::seconds(1))
        .await;
    let stuck = tokio::spawn(app.client.get(format!("{}/products", app.base)).send());
    arrived.notified().await;

    let turned_away = app
        .client
        .get(format!("{}/orders", app.base))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap();
    let body = problem(turned_away, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(body["type"], "/problems/unavailable");
    let entry = app.enter(sale, &app.buyer()).await;
    assert_eq!(entry.status(), StatusCode::ACCEPTED);
    stuck.abort();
    app.teardown().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn a_body_over_the_limit_is_refused_413_and_never_reaches_the_upstream(db: PgPool) {
    let members = Echo::start("members").await;
    let app = door(db, &members.url, &closed_port(), |config| {
        config.http.http_body_limit_bytes = 1024;
    })
    .await;

    let declared = app
        .client
        .post(format!("{}/members", app.base))
        .body("x".repeat(1025))
        .send()
        .await
        .unwrap();
    let body = problem(declared, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert_eq!(body["type"], "/problems/payload-too-large");
    assert_eq!(members.requests.load(Ordering::SeqCst), 0);

    // A chunked body declares no length: it is cut off at the limit on the way, so the
    // upstream never gets a whole request.
    let mut raw = tokio::net::TcpStream::connect(app.base.trim_start_matches("http://"))
        .await
        .unwrap();
    let chunk = "y".repeat(1500);
    let request = format!(
        "POST /members HTTP/1.1\r\nhost: door\r\nconnection: close\r\ntransfer-encoding: chunked\r\n\r\n\
         {:x}\r\n{chunk}\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        chunk.len(),
        chunk.len()
    );
    raw.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), raw.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    assert_eq!(members.bodies.load(Ordering::SeqCst), 0);

    // At the limit it passes.
    let fits = app
        .client
        .post(format!("{}/members", app.base))
        .body("x".repeat(1024))
        .send()
        .await
        .unwrap();
    assert_eq!(fits.status(), StatusCode::CREATED);
    assert_eq!(members.bodies.load(Ordering::SeqCst), 1);
    app.teardown().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn each_route_group_has_its_own_rate_limit_per_client_address(db: PgPool) {
    let (members, catalog) = (Echo::start("members").await, Echo::start("catalog").await);
    let app = door(db, &members.url, &catalog.url, |config| {
        config.gateway.gateway_auth_rate_per_address_per_min = 2;
        config.client_address.client_address_header = Some("x-forwarded-for".into());
        config.client_address.trusted_proxies = vec!["127.0.0.1".into()];
    })
    .await;
    let login = |address: &'static str| {
        app.client
            .post(format!("{}/auth/login", app.base))
            .header("x-forwarded-for", address)
            .body("{}")
            .send()
    };

    let first = json(login("203.0.113.7").await.unwrap(), StatusCode::CREATED).await;
    // A trusted balancer's chain is kept, and this hop appended.
    assert_eq!(
        first["headers"]["x-forwarded-for"],
        json!(["203.0.113.7, 127.0.0.1"])
    );
    assert_eq!(
        login("203.0.113.7").await.unwrap().status(),
        StatusCode::CREATED
    );
    let refused = login("203.0.113.7").await.unwrap();
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let body = problem(refused, StatusCode::TOO_MANY_REQUESTS).await;
    assert_eq!(body["type"], "/problems/rate-limited");
    assert_eq!(members.requests.load(Ordering::SeqCst), 2);

    // Another address, and another route group from the same address, still pass.
    assert_eq!(
        login("198.51.100.1").await.unwrap().status(),
        StatusCode::CREATED
    );
    let browse = app
        .client
        .get(format!("{}/products", app.base))
        .header("x-forwarded-for", "203.0.113.7")
        .send()
        .await
        .unwrap();
    assert_eq!(browse.status(), StatusCode::CREATED);
    app.teardown().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn the_openapi_document_lists_only_the_doors_own_operations(db: PgPool) {
    let app = door(db, &closed_port(), &closed_port(), |_| {}).await;
    let response = app
        .client
        .get(format!("{}/openapi.json", app.base))
        .send()
        .await
        .unwrap();
    let document = json(response, StatusCode::OK).await;
    let paths: Vec<&String> = document["paths"].as_object().unwrap().keys().collect();
    assert_eq!(
        paths,
        [
            "/sales/{id}/tickets",
            "/sales/{id}/tickets/mine",
            "/tickets/{id}"
        ]
    );
    app.teardown().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn a_member_signs_up_logs_in_and_browses_the_real_services_through_the_door(db: PgPool) {
    let services = Services::start(&db).await;
    let client = reqwest::Client::new();
    let door = &services.door;

    let signup = client
        .post(format!("{door}/members"))
        .header("x-request-id", "gateway-e2e-signup")
        .json(&json!({"email": "gate@example.com", "password": "correct horse battery", "name": "Gate"}))
        .send()
        .await
        .unwrap();
    assert_eq!(signup.headers()["x-request-id"], "gateway-e2e-signup");
    let member = json(signup, StatusCode::CREATED).await;
    let login = client
        .post(format!("{door}/auth/login"))
        .json(&json!({"email": "gate@example.com", "password": "correct horse battery"}))
        .send()
        .await
        .unwrap();
    let token = json(login, StatusCode::OK).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let me = client
        .get(format!("{door}/members/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(json(me, StatusCode::OK).await["id"], member["id"]);

    let products = client.get(format!("{door}/products")).send().await.unwrap();
    assert_eq!(products.status(), StatusCode::OK);
    let missing = client
        .get(format!("{door}/flash-sales/{}", uuid::Uuid::now_v7()))
        .send()
        .await
        .unwrap();
    let body = problem(missing, StatusCode::NOT_FOUND).await;
    assert_eq!(body["type"], "/problems/not-found");
    services.stop().await;
}
