use chrono::{Duration, Utc};
use reqwest::StatusCode;
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{TestApp, json, problem, retry_later};

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn entering_twice_returns_the_same_ticket_and_takes_one_unit(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let sale = app.arm(5, Utc::now() - Duration::seconds(1)).await;
    let buyer = app.buyer();

    let first = app.enter(sale, &buyer).await;
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let location = first.headers()["location"].to_str().unwrap().to_owned();
    let first = first.json::<serde_json::Value>().await.unwrap();
    let second = json(app.enter(sale, &buyer).await, StatusCode::OK).await;

    assert_eq!(first["ticket_id"], second["ticket_id"]);
    assert_eq!(
        location,
        format!("/tickets/{}", first["ticket_id"].as_str().unwrap())
    );
    assert_eq!(second["status"], "queued");
    assert_eq!(app.gate(sale).await, 4);
    assert_eq!(app.queued_messages().await, 1);
    app.teardown().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn ten_times_more_buyers_than_units_queue_exactly_the_units(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let sale = app.arm(20, Utc::now() - Duration::seconds(1)).await;
    let buyers: Vec<_> = (0..200).map(|_| app.buyer()).collect();

    let responses = futures::future::join_all(buyers.iter().map(|b| app.enter(sale, b))).await;

    let mut queued = 0;
    let mut sold_out = 0;
    for response in responses {
        match response.status() {
            StatusCode::ACCEPTED => queued += 1,
            StatusCode::OK => {
                let body: serde_json::Value = response.json().await.unwrap();
                assert_eq!(body["status"], "sold_out");
                sold_out += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!((queued, sold_out), (20, 180));
    assert_eq!(app.gate(sale).await, 0);
    assert_eq!(app.queued_messages().await, 20);
    app.teardown().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn entries_beyond_a_members_rate_get_429_with_retry_after(db: PgPool) {
    let app = TestApp::spawn_with(db, |c| c.entry_rate_per_member_per_min = 3).await;
    let sale = app.arm(5, Utc::now() - Duration::seconds(1)).await;
    let buyer = app.buyer();
    for _ in 0..3 {
        assert!(app.enter(sale, &buyer).await.status().is_success());
    }

    let limited = app.enter(sale, &buyer).await;

    retry_later(limited, StatusCode::TOO_MANY_REQUESTS).await;
    assert!(
        app.enter(sale, &app.buyer()).await.status().is_success(),
        "other buyers are not affected"
    );
    app.teardown().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn the_sale_window_is_enforced(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let buyer = app.buyer();
    let early = app.arm(5, Utc::now() + Duration::minutes(10)).await;
    let ended = app.arm(5, Utc::now() - Duration::hours(2)).await;

    let too_early = app.enter(early, &buyer).await;
    let retry_after: u64 = too_early.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let too_early = problem(too_early, StatusCode::TOO_EARLY).await;
    let over = problem(app.enter(ended, &buyer).await, StatusCode::GONE).await;
    let unknown = problem(
        app.enter(Uuid::new_v4(), &buyer).await,
        StatusCode::NOT_FOUND,
    )
    .await;

    assert!((500..=600).contains(&retry_after), "{retry_after}");
    assert_eq!(too_early["type"], "/problems/sale-not-started");
    assert!(too_early["starts_at"].is_string());
    assert_eq!(over["type"], "/problems/sale-ended");
    assert_eq!(unknown["type"], "/problems/not-found");
    assert_eq!(
        (app.gate(early).await, app.gate(ended).await),
        (5, 5),
        "nothing taken"
    );
    app.teardown().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn a_sale_redis_lost_answers_503_not_404(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let sale = Uuid::new_v4();
    let product = Uuid::new_v4();
    sqlx::query("insert into products (product_id, sku, name, price_cents, currency, stock) values ($1, 'S', 'P', 1, 'EUR', 0)").bind(product).execute(&app.db).await.unwrap();
    sqlx::query("insert into flash_sales (flash_sale_id, product_id, price_cents, currency, quantity, quantity_left, starts_at, ends_at) values ($1, $2, 1, 'EUR', 1, 1, now(), now() + interval '1 hour')")
        .bind(sale).bind(product).execute(&app.db).await.unwrap();

    let response = app.enter(sale, &app.buyer()).await;

    let body = retry_later(response, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(body["detail"], NOT_ARMED, "{body}");
    app.teardown().await;
}

/// Each 503 of an entry says which it is, so a test (and a buyer's page) can tell a sale not
/// yet armed, a failed publish and a full queue apart, and none passes for another.
const NOT_ARMED: &str = "the sale is being prepared; retry in a moment";
const NOT_QUEUED: &str = "the ticket queue did not take the entry; retry in a moment";
const QUEUE_FULL: &str = "the ticket queue is full; retry in a moment";

/// A sale whose gate expired after it ended (its keys live a day past the end) or that was
/// cancelled is over: 410 for good, not a 503 that sends the buyer back forever.
#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn a_sale_over_long_ago_answers_410_not_503(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let product = Uuid::new_v4();
    sqlx::query("insert into products (product_id, sku, name, price_cents, currency, stock) values ($1, 'S', 'P', 1, 'EUR', 0)").bind(product).execute(&app.db).await.unwrap();
    let (ended, cancelled) = (Uuid::new_v4(), Uuid::new_v4());
    sqlx::query("insert into flash_sales (flash_sale_id, product_id, price_cents, currency, quantity, quantity_left, starts_at, ends_at) values ($1, $2, 1, 'EUR', 1, 1, now() - interval '3 days', now() - interval '2 days')")
        .bind(ended).bind(product).execute(&app.db).await.unwrap();
    sqlx::query("insert into flash_sales (flash_sale_id, product_id, price_cents, currency, quantity, quantity_left, starts_at, ends_at, cancelled_at) values ($1, $2, 1, 'EUR', 0, 0, now(), now() + interval '1 hour', now())")
        .bind(cancelled).bind(product).execute(&app.db).await.unwrap();

    for sale in [ended, cancelled] {
        let response = app.enter(sale, &app.buyer()).await;
        assert_eq!(response.status(), StatusCode::GONE, "sale {sale}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["type"], "/problems/sale-ended");
    }
    app.teardown().await;
}

/// JetStream refuses the ticket (here: its stream is gone): the buyer is told 503, never
/// "queued", the unit is back in the gate, and a later entry works.
#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn a_failed_publish_returns_the_unit_and_answers_503(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let sale = app.arm(3, Utc::now() - Duration::seconds(1)).await;
    let buyer = app.buyer();
    let js = app.lose_the_queue().await;

    let refused = app.enter(sale, &buyer).await;

    let body = retry_later(refused, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(body["detail"], NOT_QUEUED, "{body}");
    assert_eq!(app.gate(sale).await, 3, "the unit went back");
    flash_core::nats::ensure_flash_queue(&js, &app.iso.nats)
        .await
        .unwrap();
    assert_eq!(
        app.enter(sale, &buyer).await.status(),
        StatusCode::ACCEPTED,
        "the buyer may enter again"
    );
    assert_eq!(app.gate(sale).await, 2);
    app.teardown().await;
}

/// The gate queued a ticket, but the entry's answer was lost before the publish (Redis's
/// reply lost, the door stopped): the buyer's next entry publishes it, once, and a publish
/// that fails then leaves the ticket and its unit in place for the entry after.
#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn a_queued_ticket_never_published_is_queued_when_its_buyer_enters_again(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let sale = app.arm(5, Utc::now() - Duration::seconds(1)).await;
    // A real entry shows this sale's ticket ids: they start with the sale's tag.
    let first = json(app.enter(sale, &app.buyer()).await, StatusCode::ACCEPTED).await;
    let tagged: Uuid = first["ticket_id"].as_str().unwrap().parse().unwrap();
    let mut bytes = Uuid::new_v4().into_bytes();
    bytes[..4].copy_from_slice(&tagged.as_bytes()[..4]);
    let lost = Uuid::new_v8(bytes);
    let buyer = app.buyer();
    // What the gate script leaves for a queued entry, with no publish after it.
    redis::pipe()
        .cmd("DECR")
        .arg(app.keys.sale_gate(sale))
        .ignore()
        .cmd("HSET")
        .arg(app.keys.ticket(sale, lost))
        .arg("member")
        .arg(buyer.id.to_string())
        .arg("status")
        .arg("queued")
        .arg("seq")
        .arg(2)
        .arg("seen")
        .arg(Utc::now().timestamp_millis())
        .ignore()
        .cmd("SET")
        .arg(app.keys.member_ticket(sale, buyer.id.get()))
        .arg(lost.to_string())
        .ignore()
        .query_async::<()>(&mut app.redis.clone())
        .await
        .unwrap();
    let js = app.lose_the_queue().await;

    let body = retry_later(
        app.enter(sale, &buyer).await,
        StatusCode::SERVICE_UNAVAILABLE,
    )
    .await;
    assert_eq!(body["detail"], NOT_QUEUED, "{body}");
    let status: Option<String> = redis::AsyncCommands::hget(
        &mut app.redis.clone(),
        app.keys.ticket(sale, lost),
        "status",
    )
    .await
    .unwrap();
    assert_eq!(
        status.as_deref(),
        Some("queued"),
        "the ticket keeps its place"
    );
    assert_eq!(app.gate(sale).await, 3, "and its unit");

    flash_core::nats::ensure_flash_queue(&js, &app.iso.nats)
        .await
        .unwrap();
    let again = json(app.enter(sale, &buyer).await, StatusCode::OK).await;
    assert_eq!(again["ticket_id"], lost.to_string());
    assert_eq!(again["status"], "queued");
    assert_eq!(
        app.queued_messages().await,
        1,
        "the lost ticket is queued now"
    );
    let subject =
        flash_core::nats::Subjects::new(&app.iso.nats.nats_subject_prefix).flash_tickets(sale);
    let message = js
        .get_stream(&app.iso.nats.nats_flash_stream)
        .await
        .unwrap()
        .get_last_raw_message_by_subject(&subject)
        .await
        .unwrap();
    let ticket: flash_core::jobs::TicketMessage = serde_json::from_slice(&message.payload).unwrap();
    assert_eq!(
        (ticket.ticket_id.get(), ticket.member_id, ticket.seq),
        (lost, buyer.id, 2)
    );

    // Only this test re-queues a ticket, and the recorder is the process's.
    let requeued = r#"flash_admission_tickets_total{outcome="requeued"} 1"#;
    assert!(app.metrics().await.contains(requeued), "{requeued}");

    json(app.enter(sale, &buyer).await, StatusCode::OK).await;
    assert_eq!(app.queued_messages().await, 1, "and only once");
    assert_eq!(app.gate(sale).await, 3);
    assert!(
        app.metrics().await.contains(requeued),
        "a duplicate is not counted"
    );
    app.teardown().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn a_full_queue_sheds_entries_with_503(db: PgPool) {
    let app = TestApp::spawn_with(db, |c| c.queue_max_depth = 2).await;
    let sale = app.arm(10, Utc::now() - Duration::seconds(1)).await;
    for _ in 0..2 {
        assert_eq!(
            app.enter(sale, &app.buyer()).await.status(),
            StatusCode::ACCEPTED
        );
    }
    // The door reads the depth every 250 ms: entries are queued until it has read 2 (or more),
    // then shed.
    let mut shed = None;
    for _ in 0..40 {
        let gate = app.gate(sale).await;
        let response = app.enter(sale, &app.buyer()).await;
        if response.status() == StatusCode::SERVICE_UNAVAILABLE {
            shed = Some((response, gate));
            break;
        }
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (shed, gate_before) = shed.expect("entries were shed within 2 s");

    let body = retry_later(shed, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(body["detail"], QUEUE_FULL, "{body}");
    assert_eq!(
        app.gate(sale).await,
        gate_before,
        "a shed entry takes nothing"
    );
    app.teardown().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn entering_needs_a_valid_token(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let sale = app.arm(3, Utc::now() - Duration::seconds(1)).await;

    let anonymous = app
        .client
        .post(format!("{}/sales/{sale}/tickets", app.base))
        .send()
        .await
        .unwrap();
    let forged = app
        .client
        .post(format!("{}/sales/{sale}/tickets", app.base))
        .bearer_auth("x.y.z")
        .send()
        .await
        .unwrap();
    let bad_id = app
        .client
        .post(format!("{}/sales/nope/tickets", app.base))
        .bearer_auth(app.buyer().token)
        .send()
        .await
        .unwrap();

    problem(anonymous, StatusCode::UNAUTHORIZED).await;
    problem(forged, StatusCode::UNAUTHORIZED).await;
    problem(bad_id, StatusCode::BAD_REQUEST).await;
    assert_eq!(app.gate(sale).await, 3);
    app.teardown().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn entries_in_flight_at_shutdown_finish_and_new_ones_are_refused(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let sale = app.arm(100, Utc::now() - Duration::seconds(1)).await;
    let buyers: Vec<_> = (0..50).map(|_| app.buyer()).collect();
    let in_flight = futures::future::join_all(buyers.iter().map(|b| app.enter(sale, b)));
    // Stop once every entry has taken its unit, so all 50 are inside the server (a fixed delay
    // could stop it before the client had sent some, and those would rightly be refused).
    // Bounded, so a failed entry (whose unit went back) fails the assertions below, not a hang.
    let stop_soon = async {
        let all_inside = async {
            while app.gate(sale).await > 50 {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
        };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), all_inside).await;
        app.stop();
    };

    let (responses, ()) = tokio::join!(in_flight, stop_soon);

    let accepted = responses
        .iter()
        .filter(|r| r.status() == StatusCode::ACCEPTED)
        .count();
    assert_eq!(
        accepted, 50,
        "every entry that was in flight finished with 202"
    );
    // Every 202 is true: the ticket is in the queue, and the gate lost exactly those units.
    assert_eq!(app.queued_messages().await, 50);
    assert_eq!(app.gate(sale).await, 50);
    let mut refused = false;
    for _ in 0..50 {
        let fresh = reqwest::Client::new();
        if fresh
            .post(format!("{}/sales/{sale}/tickets", app.base))
            .bearer_auth(&app.buyer().token)
            .send()
            .await
            .is_err()
        {
            refused = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(refused, "new entries must be refused after shutdown");
    app.teardown().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn metrics_count_entries_by_outcome_and_time_publishes(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let sale = app.arm(1, Utc::now() - Duration::seconds(1)).await;
    let before = app.metrics().await;
    // The entries must have been what the counters are to count: one queued, one sold out,
    // one to a sale that does not exist.
    json(app.enter(sale, &app.buyer()).await, StatusCode::ACCEPTED).await;
    let sold_out = json(app.enter(sale, &app.buyer()).await, StatusCode::OK).await;
    assert_eq!(sold_out["status"], "sold_out");
    problem(
        app.enter(Uuid::new_v4(), &app.buyer()).await,
        StatusCode::NOT_FOUND,
    )
    .await;

    let metrics = app.metrics().await;
    // The recorder is one per test process and other tests enter too, so a counter may have
    // grown by more than this test's entries, but never by less.
    for outcome in ["queued", "sold_out", "unknown_sale"] {
        let series = format!(r#"flash_admission_tickets_total{{outcome="{outcome}"}}"#);
        assert!(
            counter(&metrics, &series) >= counter(&before, &series) + 1.0,
            "{series} did not count this test's entry"
        );
    }

    assert!(metrics.contains("flash_admission_publish_seconds_bucket"));
    // The depth is read every 250 ms by the door's own task.
    let started = std::time::Instant::now();
    while !app.metrics().await.contains("flash_admission_queue_depth") {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "flash_admission_queue_depth never showed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    app.teardown().await;
}

/// The value of one series in a Prometheus text exposition, 0 when absent.
fn counter(exposition: &str, series: &str) -> f64 {
    exposition
        .lines()
        .find_map(|line| line.strip_prefix(series))
        .and_then(|rest| rest.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Item 7 of the hardening issue, through the door: JetStream stores the ticket but its ack
/// never reaches the door (here the answers from NATS are lost on the way), and a worker reads
/// the ticket meanwhile. The door's publish times out, its undo finds the ticket claimed, and
/// the buyer is told 202, not 503: a 503 would be followed by an order. The unit stays taken
/// once, and the buyer's next entry finds the same ticket.
#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn a_publish_stored_but_unacknowledged_and_claimed_answers_202(db: PgPool) {
    let nats_url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let upstream: std::net::SocketAddr = nats_url
        .trim_start_matches("nats://")
        .parse()
        .expect("NATS_URL is nats://<ip>:<port>");
    let proxy = flash_core::testing::Proxy::start(upstream).await.unwrap();
    let via = format!("nats://{}", proxy.addr());
    let app = TestApp::spawn_with(db, |config| {
        config.nats.nats_url = via;
        config.nats.nats_publish_timeout_ms = 1_500;
    })
    .await;
    let sale = app.arm(3, Utc::now() - Duration::seconds(1)).await;
    let buyer = app.buyer();

    // A worker's side, on its own connection: the sale's queue.
    let nats = flash_core::nats::connect(&app.iso.nats, "worker")
        .await
        .unwrap();
    let js = async_nats::jetstream::new(nats);
    let stream = js
        .get_stream(&app.iso.nats.nats_flash_stream)
        .await
        .unwrap();
    let subjects = flash_core::nats::Subjects::new(&app.iso.nats.nats_subject_prefix);
    let consumer = flash_core::nats::orders_consumer(&stream, &subjects, sale)
        .await
        .unwrap();

    proxy.lose_answers();
    let entry = tokio::spawn({
        let (client, url, token) = (
            app.client.clone(),
            format!("{}/sales/{sale}/tickets", app.base),
            buyer.token.clone(),
        );
        async move { client.post(url).bearer_auth(token).send().await }
    });
    let fetched = flash_core::nats::fetch_batch(&consumer, 1, std::time::Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(fetched.len(), 1, "JetStream stored the ticket");
    let message: flash_core::jobs::TicketMessage =
        serde_json::from_slice(&fetched[0].payload).unwrap();
    let ticket = message.ticket_id.get();
    // What the drain does as it reads a ticket.
    flash_core::redis_model::tickets::claim(&app.redis, &app.keys, sale, &[ticket])
        .await
        .unwrap();

    let answer = entry.await.unwrap().unwrap();
    proxy.restore();
    let body = json(answer, StatusCode::ACCEPTED).await;
    assert_eq!(body["ticket_id"], ticket.to_string());
    assert_eq!(body["status"], "queued");
    assert_eq!(app.gate(sale).await, 2, "the unit stays taken, once");

    // The door's NATS stream had a gap: it may reconnect before its next publish.
    let mut again = app.enter(sale, &buyer).await;
    for _ in 0..50 {
        if again.status() != StatusCode::SERVICE_UNAVAILABLE {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        again = app.enter(sale, &buyer).await;
    }
    let again = json(again, StatusCode::OK).await;
    assert_eq!(again["ticket_id"], ticket.to_string(), "the same ticket");
    assert_eq!(app.gate(sale).await, 2);
    app.teardown().await;
}
