use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use sqlx::PgPool;
use uuid::Uuid;
use workers::DrainOutcome;

use crate::helpers::Env;

/// Queues `n` tickets of distinct members, in sequence order; returns them.
async fn queue_many(env: &Env, n: i64) -> Vec<Uuid> {
    let mut tickets = Vec::new();
    for seq in 1..=n {
        let ticket = Uuid::now_v7();
        env.queue(env.member().await, seq, ticket, None).await;
        tickets.push(ticket);
    }
    tickets
}

/// Tickets of the sale still in the stream (waiting or unacked).
async fn in_stream(env: &Env) -> u64 {
    let mut stream = env
        .js
        .get_stream(&env.iso.nats.nats_flash_stream)
        .await
        .unwrap();
    stream.info().await.unwrap().state.messages
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn a_paused_sale_drains_nothing_until_it_resumes_in_queue_order(db: PgPool) {
    let env = Env::new(db, 5, 1).await;
    let drainer = env.drainer().await;
    env.control(true, 0).await;
    let tickets = queue_many(&env, 7).await;

    let held = [
        drainer.drain_once().await.unwrap(),
        drainer.drain_once().await.unwrap(),
    ];
    let orders_while_paused = env.orders().await;
    let waiting_while_paused = in_stream(&env).await;
    env.control(false, 0).await;
    let drained = env.drain_all(&drainer).await;

    assert_eq!(held, [DrainOutcome::Empty, DrainOutcome::Empty]);
    assert_eq!((orders_while_paused, waiting_while_paused), (0, 7));
    assert_eq!(drained, 7);
    for (i, ticket) in tickets.iter().enumerate() {
        let (status, _) = env.status(*ticket).await;
        let expected = if i < 5 { "ordered" } else { "sold_out" };
        assert_eq!(status, expected, "ticket {i} after the resume");
    }
    // A held ticket spent none of its deliveries: it was never fetched while paused.
    let consumer = flash_core::nats::orders_consumer(
        &env.stream,
        &flash_core::nats::Subjects::new(&env.iso.nats.nats_subject_prefix),
        env.sale,
    )
    .await
    .unwrap();
    let mut consumer = consumer;
    let info = consumer.info().await.unwrap();
    assert_eq!(info.num_redelivered, 0);
    env.cleanup().await;
}

/// Two worker processes share one limit: over a 10 s window the orders made stay within 10 %
/// of it (measured from the orders' own timestamps).
#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn the_outflow_limit_holds_across_workers(db: PgPool) {
    const RATE: u32 = 20;
    let env = Env::new(db, 1_000, 1).await;
    env.control(false, RATE).await;
    queue_many(&env, 400).await;
    let (a, b) = (env.drainer().await, env.drainer().await);

    let run = |drainer: workers::Drainer| async move {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(11_500);
        while tokio::time::Instant::now() < deadline {
            drainer.drain_once().await.unwrap();
        }
    };
    tokio::join!(run(a), run(b));

    let created: Vec<DateTime<Utc>> = sqlx::query_scalar(
        "select created_at from orders where flash_sale_id = $1 order by created_at",
    )
    .bind(env.sale)
    .fetch_all(&env.db)
    .await
    .unwrap();
    let first = created[0];
    let window = created
        .iter()
        .filter(|at| **at < first + chrono::Duration::seconds(10))
        .count();
    let limit = usize::try_from(RATE * 10).unwrap();
    assert!(
        window <= limit + limit / 10,
        "{window} orders in 10 s at {RATE}/s"
    );
    // Generous below: a worker starved of CPU under a loaded CI may lose some tokens.
    assert!(
        window >= limit * 6 / 10,
        "{window} orders in 10 s at {RATE}/s"
    );
    env.cleanup().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn the_drain_rate_is_measured_for_the_waiting_room(db: PgPool) {
    let env = Env::new(db, 50, 1).await;
    let drainer = env.drainer().await;
    queue_many(&env, 10).await;
    env.drain_all(&drainer).await;
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    queue_many(&env, 10).await;
    env.drain_all(&drainer).await;

    let rate: f64 =
        redis::AsyncCommands::get(&mut env.redis.clone(), env.keys.sale_drain_rate(env.sale))
            .await
            .unwrap();

    assert!(rate > 0.0 && rate.is_finite(), "rate {rate}");
    env.cleanup().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn sale_events_are_published_once_each(db: PgPool) {
    let env = Env::new(db, 2, 1).await;
    let drainer = env.drainer().await;
    let reconciler = env.reconciler();
    let relay = env.relay().await;
    queue_many(&env, 3).await;

    env.drain_all(&drainer).await;
    reconciler.reconcile_once().await.unwrap();
    reconciler.reconcile_once().await.unwrap();
    sqlx::query(
        "update flash_sales set ends_at = now() - interval '1 second' where flash_sale_id = $1",
    )
    .bind(env.sale)
    .execute(&env.db)
    .await
    .unwrap();
    reconciler.reconcile_once().await.unwrap();
    reconciler.reconcile_once().await.unwrap();
    while relay.relay_once().await.unwrap() > 0 {}

    let stream = env
        .js
        .get_stream(flash_core::nats::events_stream_name(&env.iso.nats))
        .await
        .unwrap();
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config::default())
        .await
        .unwrap();
    let mut messages = consumer
        .fetch()
        .max_messages(100)
        .expires(Duration::from_millis(500))
        .messages()
        .await
        .unwrap();
    let mut events = Vec::new();
    while let Some(message) = messages.next().await {
        let message = message.unwrap();
        assert_eq!(
            message.subject.as_str(),
            flash_core::nats::Subjects::new(&env.iso.nats.nats_subject_prefix)
                .sale_events(env.sale)
        );
        let event: flash_core::sale_events::SaleEventMessage =
            serde_json::from_slice(&message.payload).unwrap();
        assert_eq!(event.sale_id, env.sale);
        events.push(event.event);
    }
    use flash_core::sale_events::SaleEvent;
    // The relay publishes a batch concurrently, so the stream's order is not asserted.
    assert_eq!(events.len(), 3, "{events:?}");
    for expected in [
        SaleEvent::SoldOut,
        SaleEvent::Started,
        SaleEvent::Ended { early: false },
    ] {
        assert!(
            events.contains(&expected),
            "{expected:?} missing from {events:?}"
        );
    }
    env.cleanup().await;
}

/// A buyer who stopped polling longer ago than the sale allows loses the place when the drain
/// reaches it; the unit goes back to the gate, once, even when the ticket comes again.
#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn an_abandoned_ticket_is_expired_and_its_unit_returned_once(db: PgPool) {
    let env = Env::new(db, 5, 1).await;
    env.control(false, 0).await;
    let mut redis = env.redis.clone();
    let _: () = redis::AsyncCommands::hset(&mut redis, env.keys.sale_meta(env.sale), "abandon", 60)
        .await
        .unwrap();
    // Three buyers were admitted: the gate holds the other two units.
    let _: () = redis::AsyncCommands::set(&mut redis, env.keys.sale_gate(env.sale), 2)
        .await
        .unwrap();
    let tickets = queue_many(&env, 3).await;
    let now = chrono::Utc::now().timestamp_millis();
    let seen = [Some(now - 120_000), Some(now - 1_000), None];
    for (ticket, seen) in tickets.iter().zip(seen) {
        if let Some(seen) = seen {
            let _: () = redis::AsyncCommands::hset(
                &mut redis,
                env.keys.ticket(env.sale, *ticket),
                "seen",
                seen,
            )
            .await
            .unwrap();
        }
    }
    let drainer = env.drainer().await;

    env.drain_all(&drainer).await;
    // The same ticket again, as after a redelivery.
    let member: String =
        redis::AsyncCommands::hget(&mut redis, env.keys.ticket(env.sale, tickets[0]), "member")
            .await
            .unwrap();
    env.queue(
        member.parse::<uuid::Uuid>().unwrap().into(),
        1,
        tickets[0],
        Some("again"),
    )
    .await;
    let _: () = redis::AsyncCommands::hset(
        &mut redis,
        env.keys.ticket(env.sale, tickets[0]),
        "status",
        "expired",
    )
    .await
    .unwrap();
    env.drain_all(&drainer).await;

    assert_eq!(env.status(tickets[0]).await.0, "expired");
    assert_eq!(env.status(tickets[1]).await.0, "ordered");
    assert_eq!(
        env.status(tickets[2]).await.0,
        "ordered",
        "a ticket with no poll on record is never expired"
    );
    let gate: i64 = redis::AsyncCommands::get(&mut redis, env.keys.sale_gate(env.sale))
        .await
        .unwrap();
    assert_eq!(gate, 3, "the abandoned unit came back, once");
    assert_eq!((env.orders().await, env.quantity_left().await), (2, 3));
    env.cleanup().await;
}
