use chrono::{Duration, Utc};
use redis::AsyncCommands;
use reqwest::StatusCode;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{TestApp, json, problem};

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn only_the_owner_can_poll_and_sees_a_position(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let sale = app.arm(10, Utc::now() - Duration::seconds(1)).await;
    let buyers: Vec<_> = (0..4).map(|_| app.buyer()).collect();
    let mut tickets = Vec::new();
    for buyer in &buyers {
        let body = json(app.enter(sale, buyer).await, StatusCode::ACCEPTED).await;
        tickets.push(body["ticket_id"].as_str().unwrap().to_owned());
    }
    // The workers finished the first ticket.
    let _: () = app
        .redis
        .clone()
        .set(app.keys.sale_served(sale), 1)
        .await
        .unwrap();

    let mine = json(
        app.poll(&tickets[3], &buyers[3], "", None).await,
        StatusCode::OK,
    )
    .await;
    let theirs = app.poll(&tickets[3], &buyers[0], "", None).await;

    assert_eq!(mine["status"], "queued");
    assert_eq!(mine["position"], 3);
    assert!(mine["poll_after_ms"].as_i64().unwrap() >= 250);
    problem(theirs, StatusCode::NOT_FOUND).await;
    problem(
        app.poll(&Uuid::new_v4().to_string(), &buyers[0], "", None)
            .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    app.teardown().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn an_unchanged_ticket_is_304_and_a_long_poll_wakes_on_change(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let sale = app.arm(10, Utc::now() - Duration::seconds(1)).await;
    let buyer = app.buyer();
    let entered = json(app.enter(sale, &buyer).await, StatusCode::ACCEPTED).await;
    let ticket = entered["ticket_id"].as_str().unwrap().to_owned();
    let first = app.poll(&ticket, &buyer, "", None).await;
    let etag = first.headers()["etag"].to_str().unwrap().to_owned();

    let unchanged = app.poll(&ticket, &buyer, "", Some(&etag)).await;
    assert_eq!(unchanged.status(), StatusCode::NOT_MODIFIED);

    // A worker orders the ticket while the buyer long-polls.
    let order = Uuid::new_v4();
    let ticket_key = app.keys.ticket(sale, ticket.parse().unwrap());
    let mut redis = app.redis.clone();
    let worker = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        let _: () = redis
            .hset_multiple(
                ticket_key,
                &[
                    ("status", "ordered".to_owned()),
                    ("order_id", order.to_string()),
                ],
            )
            .await
            .unwrap();
    });
    let woke = json(
        app.poll(&ticket, &buyer, "?wait=10", Some(&etag)).await,
        StatusCode::OK,
    )
    .await;
    worker.await.unwrap();

    assert_eq!(woke["status"], "ordered");
    assert_eq!(woke["order_id"], order.to_string());
    assert!(
        woke["poll_after_ms"].is_null(),
        "a final ticket needs no more polling"
    );
    app.teardown().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn a_ticket_redis_lost_is_answered_from_postgres(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let buyer = app.buyer();
    let ticket = Uuid::new_v4();
    let (sale, product, order) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    sqlx::query("insert into members (member_id, email, password_hash, name) values ($1, 'b@example.com', 'x', 'B')").bind(buyer.id).execute(&app.db).await.unwrap();
    sqlx::query("insert into products (product_id, sku, name, price_cents, currency, stock) values ($1, 'S', 'P', 1, 'EUR', 0)").bind(product).execute(&app.db).await.unwrap();
    sqlx::query("insert into flash_sales (flash_sale_id, product_id, price_cents, currency, quantity, quantity_left, starts_at, ends_at) values ($1, $2, 1, 'EUR', 1, 0, now(), now() + interval '1 hour')")
        .bind(sale).bind(product).execute(&app.db).await.unwrap();
    sqlx::query("insert into orders (order_id, member_id, kind, total_cents, currency, flash_sale_id, ticket_id) values ($1, $2, 'flash', 1, 'EUR', $3, $4)")
        .bind(order).bind(buyer.id).bind(sale).bind(ticket).execute(&app.db).await.unwrap();

    let answer: Value = json(
        app.poll(&ticket.to_string(), &buyer, "", None).await,
        StatusCode::OK,
    )
    .await;
    let stranger = app.poll(&ticket.to_string(), &app.buyer(), "", None).await;

    assert_eq!(answer["status"], "ordered");
    assert_eq!(answer["order_id"], order.to_string());
    problem(stranger, StatusCode::NOT_FOUND).await;
    let mine = json(app.mine(sale, &buyer).await, StatusCode::OK).await;
    assert_eq!(mine["ticket_id"], ticket.to_string());
    assert_eq!(mine["status"], "ordered");
    problem(app.mine(sale, &app.buyer()).await, StatusCode::NOT_FOUND).await;
    app.teardown().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn an_arriving_buyer_finds_their_own_ticket_and_no_one_elses(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let upcoming = app.arm(10, Utc::now() + Duration::minutes(5)).await;
    let open = app.arm(10, Utc::now() - Duration::seconds(1)).await;
    let (buyer, other) = (app.buyer(), app.buyer());

    problem(app.mine(upcoming, &buyer).await, StatusCode::NOT_FOUND).await;
    problem(app.mine(open, &buyer).await, StatusCode::NOT_FOUND).await;
    let entered = json(app.enter(open, &buyer).await, StatusCode::ACCEPTED).await;
    let mine = app.mine(open, &buyer).await;
    assert!(mine.headers().contains_key("etag"));
    let mine = json(mine, StatusCode::OK).await;
    let anonymous = app
        .client
        .get(format!("{}/sales/{open}/tickets/mine", app.base))
        .send()
        .await
        .unwrap();

    assert_eq!(mine["ticket_id"], entered["ticket_id"]);
    assert_eq!(mine["status"], "queued");
    assert_eq!(mine["position"], 1);
    problem(app.mine(open, &other).await, StatusCode::NOT_FOUND).await;
    problem(anonymous, StatusCode::UNAUTHORIZED).await;
    app.teardown().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn the_waiting_room_page_is_served_with_a_strict_policy(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let sale = app.arm(1, Utc::now()).await;

    let page = app
        .client
        .get(format!("{}/sales/{sale}", app.base))
        .send()
        .await
        .unwrap();

    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'sha256-"),
        "{csp}"
    );
    let html = page.text().await.unwrap();
    assert!(html.contains("Enter the sale"));
    problem(
        app.client
            .get(format!("{}/sales/not-a-sale", app.base))
            .send()
            .await
            .unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    app.teardown().await;
}

/// The front door remembers verified tokens, but a logout still reaches it within a second.
#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn a_logged_out_token_is_refused_within_a_second_despite_the_cache(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let sale = app.arm(5, Utc::now() - Duration::seconds(1)).await;
    let buyer = app.buyer();
    let entered = json(app.enter(sale, &buyer).await, StatusCode::ACCEPTED).await;
    let ticket = entered["ticket_id"].as_str().unwrap().to_owned();
    assert_eq!(
        app.poll(&ticket, &buyer, "", None).await.status(),
        StatusCode::OK
    );

    // member-api's logout: the session goes on the shared denylist.
    let claims = flash_core::auth::JwtVerifier::from_pem(
        app.iso.keys.public_pem.as_bytes(),
        "flash-member-api",
        "flash",
    )
    .unwrap()
    .verify(&buyer.token)
    .unwrap();
    let denylist =
        flash_core::auth::Denylist::new(app.redis.clone(), app.keys.clone(), app.db.clone());
    denylist.deny_session(claims.sid, claims.exp).await.unwrap();

    // The door's token cache learns it from the denylist's feed, or on its next recheck.
    let mut refused = None;
    for _ in 0..60 {
        let response = app.poll(&ticket, &buyer, "", None).await;
        if response.status() == StatusCode::UNAUTHORIZED {
            refused = Some(response);
            break;
        }
        assert_eq!(response.status(), StatusCode::OK);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    problem(
        refused.expect("the logged-out token was refused within 3 s"),
        StatusCode::UNAUTHORIZED,
    )
    .await;
    app.teardown().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn a_paused_sale_still_admits_and_its_buyers_see_paused(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let sale = app.arm(10, Utc::now() - Duration::seconds(1)).await;
    let meta = app.keys.sale_meta(sale);
    let mut redis = app.redis.clone();
    let _: () = redis.hset(&meta, "paused", 1).await.unwrap();
    // The workers measured an outflow: a paused sale still promises no wait.
    let _: () = redis
        .set(app.keys.sale_drain_rate(sale), 50.0)
        .await
        .unwrap();
    let buyer = app.buyer();

    let entered = json(app.enter(sale, &buyer).await, StatusCode::ACCEPTED).await;
    let ticket = entered["ticket_id"].as_str().unwrap().to_owned();
    let paused = json(app.poll(&ticket, &buyer, "", None).await, StatusCode::OK).await;
    let _: () = redis.hset(&meta, "paused", 0).await.unwrap();
    // Each process trusts what it read of the sale for a tenth of a second.
    let mut resumed = Value::Null;
    for _ in 0..40 {
        resumed = json(app.poll(&ticket, &buyer, "", None).await, StatusCode::OK).await;
        if resumed["status"] == "queued" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    assert_eq!(paused["status"], "paused");
    assert_eq!(paused["position"], 1);
    assert_eq!(paused["eta_ms"], Value::Null);
    assert_eq!(resumed["status"], "queued");
    assert!(resumed["eta_ms"].as_i64().is_some(), "{resumed}");
    app.teardown().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn a_poll_is_the_buyers_sign_of_life_when_the_sale_expires_abandoned_tickets(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let sale = app.arm(10, Utc::now() - Duration::seconds(1)).await;
    let mut redis = app.redis.clone();
    let _: () = redis
        .hset(app.keys.sale_meta(sale), "abandon", 60)
        .await
        .unwrap();
    let buyer = app.buyer();
    let entered = json(app.enter(sale, &buyer).await, StatusCode::ACCEPTED).await;
    let ticket: Uuid = entered["ticket_id"].as_str().unwrap().parse().unwrap();
    let key = app.keys.ticket(sale, ticket);
    let at_entry: i64 = redis.hget(&key, "seen").await.unwrap();

    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    json(
        app.poll(&ticket.to_string(), &buyer, "", None).await,
        StatusCode::OK,
    )
    .await;
    let after_poll: i64 = redis.hget(&key, "seen").await.unwrap();

    assert!(after_poll > at_entry, "{after_poll} > {at_entry}");
    app.teardown().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn a_ticket_from_one_door_is_polled_at_another(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let other = app.another_door().await;
    let sale = app.arm(10, Utc::now() - Duration::seconds(1)).await;
    let (buyer, stranger) = (app.buyer(), app.buyer());
    let entered = json(app.enter(sale, &buyer).await, StatusCode::ACCEPTED).await;
    let ticket = entered["ticket_id"].as_str().unwrap();
    let poll_there = |who: &crate::helpers::Buyer| {
        app.client
            .get(format!("{other}/tickets/{ticket}"))
            .bearer_auth(&who.token)
            .send()
    };

    let there = json(poll_there(&buyer).await.unwrap(), StatusCode::OK).await;
    let not_theirs = poll_there(&stranger).await.unwrap();

    assert_eq!(there["ticket_id"], ticket);
    assert_eq!(there["sale_id"], sale.to_string());
    assert_eq!(there["status"], "queued");
    problem(not_theirs, StatusCode::NOT_FOUND).await;
    app.teardown().await;
}

/// The waiting room long-polls `wait=20` while the request timeout is 10 s: a long-poll must
/// end in 304 after its wait, not in the timeout's 503; waiting polls must not take the
/// in-flight places entries need; and one member cannot hold more than a few at once (the
/// rest answer at once instead of waiting).
#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn long_polls_outlast_the_request_timeout_and_leave_entries_their_places(db: PgPool) {
    let app = TestApp::spawn_with(db, |config| {
        config.http.http_request_timeout_ms = 1_000;
        config.http.http_max_in_flight = 4;
        config.long_polls_per_member = 2;
    })
    .await;
    let sale = app.arm(100, Utc::now() - Duration::seconds(1)).await;
    let mut waiting = Vec::new();
    for _ in 0..6 {
        let buyer = app.buyer();
        let entered = json(app.enter(sale, &buyer).await, StatusCode::ACCEPTED).await;
        let ticket = entered["ticket_id"].as_str().unwrap().to_owned();
        let etag = app.poll(&ticket, &buyer, "", None).await.headers()["etag"]
            .to_str()
            .unwrap()
            .to_owned();
        waiting.push((buyer, ticket, etag));
    }
    let started = std::time::Instant::now();
    let polls: Vec<_> = waiting
        .iter()
        .map(|(buyer, ticket, etag)| app.poll(ticket, buyer, "?wait=2", Some(etag)))
        .collect();
    let polls = futures::future::join_all(polls);
    let entries = async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let buyer = app.buyer();
        app.enter(sale, &buyer).await.status()
    };
    let (polls, entry) = tokio::join!(polls, entries);
    assert_eq!(
        entry,
        StatusCode::ACCEPTED,
        "six waiting polls left no place for an entry"
    );
    for poll in polls {
        assert_eq!(poll.status(), StatusCode::NOT_MODIFIED);
    }
    let waited = started.elapsed();
    assert!(
        waited >= std::time::Duration::from_secs(2),
        "the polls did not wait: {waited:?}"
    );

    // One member with one token: two polls wait, the third answers at once.
    let (buyer, ticket, etag) = &waiting[0];
    let held: Vec<_> = (0..2)
        .map(|_| app.poll(ticket, buyer, "?wait=2", Some(etag)))
        .collect();
    let held = futures::future::join_all(held);
    let third = async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let asked = std::time::Instant::now();
        let answer = app.poll(ticket, buyer, "?wait=2", Some(etag)).await;
        (answer.status(), asked.elapsed())
    };
    let (held, (third, third_took)) = tokio::join!(held, third);
    assert_eq!(third, StatusCode::NOT_MODIFIED);
    assert!(
        third_took < std::time::Duration::from_secs(1),
        "a member's third long-poll waited {third_took:?}"
    );
    for poll in held {
        assert_eq!(poll.status(), StatusCode::NOT_MODIFIED);
    }
    app.teardown().await;
}
