//! The waitlist end to end: buyers past the last unit wait on it, and every unit that comes
//! back (a cancelled order, added stock) goes to the first of them, never to a newcomer, and
//! never oversold; at the end the rest learn `sold_out`.

use std::time::Duration;

use crate::{sale::Sale, stack::Stack};
use flash_core::domain::Role;
use loadtest::seed;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn returned_units_go_to_the_waitlist_in_order(db: PgPool) {
    let stack = Stack::start(&db, 0.0).await;
    let buyers = seed::members(&db, &stack.signer, "wl-buyer", 11, Role::Buyer)
        .await
        .unwrap();
    let sale = Sale::create(
        &stack,
        &db,
        3,
        chrono::Duration::seconds(-1),
        json!({"waitlist_limit": 5}),
    )
    .await;

    // 3 units, 5 places on the waitlist, 10 buyers one after the other.
    let mut tickets = Vec::new();
    for buyer in &buyers[..10] {
        tickets.push(sale.enter(buyer).await);
    }
    let statuses: Vec<&str> = tickets
        .iter()
        .map(|t| t["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        [
            "queued",
            "queued",
            "queued",
            "waitlisted",
            "waitlisted",
            "waitlisted",
            "waitlisted",
            "waitlisted",
            "sold_out",
            "sold_out"
        ]
    );
    assert_eq!(tickets[3]["waitlist_position"], 1);
    assert_eq!(tickets[7]["waitlist_position"], 5);
    let id = |i: usize| tickets[i]["ticket_id"].as_str().unwrap().to_owned();
    let first = sale.wait_for(&buyers[0], &id(0), "ordered").await;

    // The first buyer's order is cancelled: its unit goes to the first waitlisted buyer.
    let cancelled = sale
        .admin_post(
            &format!("/orders/{}/cancel", first["order_id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(cancelled.status(), reqwest::StatusCode::OK);
    assert_eq!(sale.ticket(&buyers[0], &id(0)).await["status"], "cancelled");
    let promoted = sale.wait_for(&buyers[3], &id(3), "ordered").await;
    assert!(promoted["order_id"].is_string());
    let next = sale.ticket(&buyers[4], &id(4)).await;
    assert_eq!(
        (next["status"].as_str(), next["waitlist_position"].as_i64()),
        (Some("waitlisted"), Some(1))
    );

    // A newcomer takes the place that freed up, behind everyone already waiting; two added
    // units go to the two at the front.
    let newcomer = sale.enter(&buyers[10]).await;
    assert_eq!(
        (
            newcomer["status"].as_str(),
            newcomer["waitlist_position"].as_i64()
        ),
        (Some("waitlisted"), Some(5))
    );
    let added = sale
        .admin_post(
            &format!("/flash-sales/{}/stock", sale.id),
            Some(json!({"delta": 2})),
        )
        .await;
    assert_eq!(added.status(), reqwest::StatusCode::OK);
    sale.wait_for(&buyers[4], &id(4), "ordered").await;
    sale.wait_for(&buyers[5], &id(5), "ordered").await;

    // The end: whoever still waits learns it is sold out.
    let ended = sale
        .admin_post(&format!("/flash-sales/{}/end", sale.id), None)
        .await;
    assert_eq!(ended.status(), reqwest::StatusCode::OK);
    sale.wait_for(&buyers[6], &id(6), "sold_out").await;
    sale.wait_for(&buyers[7], &id(7), "sold_out").await;
    sale.wait_for(
        &buyers[10],
        newcomer["ticket_id"].as_str().unwrap(),
        "sold_out",
    )
    .await;

    let checked = sale.settle_and_check(&db).await;
    let paid = checked.orders.get("paid").copied().unwrap_or(0);
    // Units: 3 + 2 added; b0's came back and went to b3.
    assert_eq!(
        (paid, checked.quantity_left),
        (5, 0),
        "{:?}",
        checked.orders
    );
    stack.stop().await;
}

/// Every charge is declined: each returned unit goes to the next waitlisted buyer in turn, and
/// the one unit is never sold twice.
#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn a_failed_payment_hands_the_unit_down_the_waitlist(db: PgPool) {
    let stack = Stack::start(&db, 1.0).await;
    let buyers = seed::members(&db, &stack.signer, "wl-buyer", 4, Role::Buyer)
        .await
        .unwrap();
    let sale = Sale::create(
        &stack,
        &db,
        1,
        chrono::Duration::seconds(-1),
        json!({"waitlist_limit": 3}),
    )
    .await;
    let mut tickets = Vec::new();
    for buyer in &buyers {
        tickets.push(
            sale.enter(buyer).await["ticket_id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }

    // The last in line gets the unit last; by then each before it had an order, declined.
    sale.wait_for(&buyers[3], &tickets[3], "ordered").await;
    let mut cancelled = 0;
    for _ in 0..200 {
        cancelled = sqlx::query_scalar::<_, i64>(
            "select count(*) from orders where flash_sale_id = $1 and status = 'cancelled'",
        )
        .bind(sale.id)
        .fetch_one(&db)
        .await
        .unwrap();
        if cancelled == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    assert_eq!(cancelled, 4, "every charge was declined");
    let buyers_in_order: Vec<Uuid> = sqlx::query_scalar(
        "select member_id from orders where flash_sale_id = $1 order by created_at, order_id",
    )
    .bind(sale.id)
    .fetch_all(&db)
    .await
    .unwrap();
    let expected: Vec<Uuid> = buyers.iter().map(|b| b.id.get()).collect();
    assert_eq!(
        buyers_in_order, expected,
        "the unit went down the waitlist in order"
    );
    let checked = sale.settle_and_check(&db).await;
    assert_eq!(checked.quantity_left, 1, "the unit is back, unsold");
    stack.stop().await;
}

/// Item 12 of the hardening issue: buyers waiting on a waitlist or in a pre-queue hold no unit
/// and no message in the queue, only their tickets in Redis. Redis losing everything must not
/// drop them: their polls keep answering while the workers restore them from PostgreSQL, they
/// keep their order, and a unit that comes back (or the draw) still reaches them.
#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn waiting_buyers_keep_their_places_when_redis_loses_everything(db: PgPool) {
    let stack = Stack::start(&db, 0.0).await;
    let buyers = seed::members(&db, &stack.signer, "wl-loss", 5, Role::Buyer)
        .await
        .unwrap();
    let sale = Sale::create(
        &stack,
        &db,
        1,
        chrono::Duration::seconds(-1),
        json!({"waitlist_limit": 3}),
    )
    .await;
    let drawn = Sale::create(
        &stack,
        &db,
        2,
        chrono::Duration::seconds(8),
        json!({"prequeue_secs": 600}),
    )
    .await;
    let mut tickets = Vec::new();
    for buyer in &buyers[..3] {
        tickets.push(sale.enter(buyer).await);
    }
    let mut prequeued = Vec::new();
    for buyer in &buyers[3..] {
        let ticket = drawn.enter(buyer).await;
        assert_eq!(ticket["status"], "prequeued", "{ticket}");
        prequeued.push(ticket["ticket_id"].as_str().unwrap().to_owned());
    }
    let id = |i: usize| tickets[i]["ticket_id"].as_str().unwrap().to_owned();
    assert_eq!(
        (tickets[1]["status"].as_str(), tickets[2]["status"].as_str()),
        (Some("waitlisted"), Some("waitlisted"))
    );
    let first = sale.wait_for(&buyers[0], &id(0), "ordered").await;

    stack.iso.lose_redis().await;

    for (i, position) in [(1, 1), (2, 2)] {
        let found = sale.wait_for(&buyers[i], &id(i), "waitlisted").await;
        assert!(
            matches!(found["waitlist_position"].as_i64(), None | Some(1..=2)),
            "{found}"
        );
        let restored = wait_for_position(&sale, &buyers[i], &id(i), position).await;
        assert_eq!(restored["status"], "waitlisted");
    }
    for (buyer, ticket) in buyers[3..].iter().zip(&prequeued) {
        drawn.wait_for(buyer, ticket, "prequeued").await;
    }
    let cancelled = sale
        .admin_post(
            &format!("/orders/{}/cancel", first["order_id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(cancelled.status(), reqwest::StatusCode::OK);
    sale.wait_for(&buyers[1], &id(1), "ordered").await;
    for (buyer, ticket) in buyers[3..].iter().zip(&prequeued) {
        drawn.wait_for(buyer, ticket, "ordered").await;
    }
    stack.stop().await;
}

/// Polls until the waitlisted ticket shows `position` (restored with its place).
async fn wait_for_position(
    sale: &Sale<'_>,
    buyer: &seed::Buyer,
    ticket: &str,
    position: i64,
) -> serde_json::Value {
    for _ in 0..100 {
        let current = sale.ticket(buyer, ticket).await;
        if current["waitlist_position"].as_i64() == Some(position) {
            return current;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "ticket {ticket} never showed place {position}: {}",
        sale.ticket(buyer, ticket).await
    );
}
