//! The pre-queue end to end: buyers who enter before the start are drawn into a seeded random
//! order, released once although two admission processes race for it, and served ahead of
//! everyone who arrives after the start, who follow first come first served.

use std::{collections::HashMap, time::Duration};

use flash_core::domain::Role;
use loadtest::seed;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::{sale::Sale, stack::Stack};

/// The queue number each ticket of the sale got (0 for none).
async fn seqs(stack: &Stack, sale: Uuid, tickets: &[Uuid]) -> Vec<i64> {
    let mut pipe = redis::pipe();
    for ticket in tickets {
        pipe.hget(stack.keys.ticket(sale, *ticket), "seq");
    }
    let found: Vec<Option<i64>> = pipe.query_async(&mut stack.redis.clone()).await.unwrap();
    found.into_iter().map(Option::unwrap_or_default).collect()
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn the_prequeue_is_drawn_once_and_served_before_later_arrivals(db: PgPool) {
    let stack = Stack::start(&db, 0.0).await;
    let buyers = seed::members(&db, &stack.signer, "pq-buyer", 50, Role::Buyer)
        .await
        .unwrap();
    let sale = Sale::create(
        &stack,
        &db,
        45,
        chrono::Duration::seconds(3),
        json!({"prequeue_secs": 600}),
    )
    .await;

    // 40 buyers in the pre-queue, through both admission processes.
    let mut prequeued = Vec::new();
    for (i, buyer) in buyers[..40].iter().enumerate() {
        let door = if i % 2 == 0 {
            &stack.door
        } else {
            &stack.second_door
        };
        let ticket = sale.enter_at(door, buyer).await;
        assert_eq!(ticket["status"], "prequeued", "{ticket}");
        assert!(ticket["draw_at"].is_string(), "{ticket}");
        prequeued.push(
            ticket["ticket_id"]
                .as_str()
                .unwrap()
                .parse::<Uuid>()
                .unwrap(),
        );
    }
    // Then 10 more, one after the other, once the sale has started.
    let wait = (sale.starts_at - chrono::Utc::now())
        .to_std()
        .unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_millis(50)).await;
    let mut later = Vec::new();
    for (i, buyer) in buyers[40..].iter().enumerate() {
        let door = if i % 2 == 0 {
            &stack.second_door
        } else {
            &stack.door
        };
        let ticket = sale.enter_at(door, buyer).await;
        later.push(
            ticket["ticket_id"]
                .as_str()
                .unwrap()
                .parse::<Uuid>()
                .unwrap(),
        );
    }
    let mut released = false;
    for _ in 0..200 {
        released = sqlx::query_scalar(
            "select released_at is not null from flash_sales where flash_sale_id = $1",
        )
        .bind(sale.id)
        .fetch_one(&db)
        .await
        .unwrap();
        if released {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(released, "the pre-queue was released");

    // The recorded draw is the seeded permutation of exactly the pre-queued tickets.
    let seed: i64 =
        sqlx::query_scalar("select draw_seed from flash_sales where flash_sale_id = $1")
            .bind(sale.id)
            .fetch_one(&db)
            .await
            .unwrap();
    let drawn: Vec<Uuid> = sqlx::query_scalar(
        "select ticket_id from prequeue_draws where flash_sale_id = $1 order by position",
    )
    .bind(sale.id)
    .fetch_all(&db)
    .await
    .unwrap();
    let replayed = flash_core::prequeue::draw(&prequeued, u64::from_ne_bytes(seed.to_ne_bytes()));
    assert_eq!(
        drawn, replayed,
        "the same seed and tickets replay the same order"
    );
    // Released in that order, ahead of the later arrivals, who follow in arrival order.
    let drawn_seqs = seqs(&stack, sale.id, &drawn).await;
    assert_eq!(drawn_seqs, (1..=40).collect::<Vec<_>>());
    let later_seqs = seqs(&stack, sale.id, &later).await;
    assert_eq!(
        later_seqs[..5],
        [41, 42, 43, 44, 45],
        "first come first served"
    );
    let statuses: HashMap<Uuid, String> = {
        let mut pipe = redis::pipe();
        for ticket in &later[5..] {
            pipe.hget(stack.keys.ticket(sale.id, *ticket), "status");
        }
        let found: Vec<String> = pipe.query_async(&mut stack.redis.clone()).await.unwrap();
        later[5..].iter().copied().zip(found).collect()
    };
    assert!(
        statuses.values().all(|s| s == "waitlisted"),
        "45 units: the last 5 arrivals find none and wait on the sale's waitlist: {statuses:?}"
    );
    // Released once, although both doors look for due sales several times a second.
    let events: Vec<Value> = sqlx::query_scalar(
        "select payload from outbox where subject = $1 and payload->>'event' = 'prequeue_drawn'",
    )
    .bind(format!("events.sales.{}", sale.id))
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["entrants"], 40);
    assert_eq!(events[0]["seed"], seed);

    // Every ticket ends; the invariants hold.
    let last = later[4].to_string();
    sale.wait_for(&buyers[44], &last, "ordered").await;
    let checked = sale.settle_and_check(&db).await;
    assert_eq!(checked.orders.get("paid"), Some(&45));
    stack.stop().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn before_the_prequeue_opens_the_door_says_too_early(db: PgPool) {
    let stack = Stack::start(&db, 0.0).await;
    let buyer = seed::members(&db, &stack.signer, "pq-early", 1, Role::Buyer)
        .await
        .unwrap()
        .remove(0);
    let sale = Sale::create(
        &stack,
        &db,
        5,
        chrono::Duration::hours(1),
        json!({"prequeue_secs": 60}),
    )
    .await;

    let response = sale
        .client
        .post(format!("{}/sales/{}/tickets", stack.door, sale.id))
        .bearer_auth(&buyer.token)
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), reqwest::StatusCode::TOO_EARLY);
    stack.stop().await;
}
