use flash_core::{
    domain::TicketStatus,
    redis_model::{
        entry::{self, Entry, EntryCall, Undo},
        tickets,
    },
};
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::Env;

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn tickets_become_orders_until_the_units_run_out(db: PgPool) {
    let env = Env::new(db, 5, 1).await;
    let mut tickets = Vec::new();
    for seq in 1..=8 {
        let ticket = Uuid::now_v7();
        env.queue(env.member().await, seq, ticket, None).await;
        tickets.push(ticket);
    }

    let processed = env.drain_all(&env.drainer().await).await;

    assert_eq!(processed, 8);
    assert_eq!(
        (env.orders().await, env.quantity_left().await),
        (5, 0),
        "quantity_left + live orders = quantity"
    );
    for (i, ticket) in tickets.iter().enumerate() {
        let (status, order) = env.status(*ticket).await;
        if i < 5 {
            assert_eq!(status, "ordered", "earlier tickets are served first");
            assert!(order.is_some());
        } else {
            assert_eq!(status, "sold_out");
        }
    }
    let served: i64 =
        redis::AsyncCommands::get(&mut env.redis.clone(), env.keys.sale_served(env.sale))
            .await
            .unwrap();
    assert_eq!(served, 8);
    let jobs: i64 =
        sqlx::query_scalar("select count(*) from outbox where subject = 'jobs.payment'")
            .fetch_one(&env.db)
            .await
            .unwrap();
    assert_eq!(jobs, 5, "one payment job per order");
    env.cleanup().await;
}

/// A worker that committed but crashed before acking gets its ticket again: same end state.
#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn a_redelivered_ticket_makes_no_second_order(db: PgPool) {
    let env = Env::new(db, 5, 1).await;
    let drainer = env.drainer().await;
    let member = env.member().await;
    let ticket = Uuid::now_v7();
    env.queue(member, 1, ticket, None).await;
    env.drain_all(&drainer).await;
    let (_, first_order) = env.status(ticket).await;

    // The same ticket arrives again (new message id, as after the dedup window).
    env.queue(member, 1, ticket, Some("redelivery")).await;
    env.drain_all(&drainer).await;

    assert_eq!((env.orders().await, env.quantity_left().await), (1, 4));
    assert_eq!(
        env.status(ticket).await,
        ("ordered".to_owned(), first_order)
    );
    env.cleanup().await;
}

/// A second copy of a ticket reaches the drain after the first was decided (the door publishes
/// a `queued` ticket again when its buyer re-enters, and past the duplicate window JetStream
/// keeps both): the buyer's answer stands, even though a unit came back meanwhile.
#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn a_second_copy_of_a_decided_ticket_changes_nothing(db: PgPool) {
    let env = Env::new(db, 1, 1).await;
    let drainer = env.drainer().await;
    let (first, second) = (env.member().await, env.member().await);
    let (ordered, sold_out) = (Uuid::now_v7(), Uuid::now_v7());
    env.queue(first, 1, ordered, None).await;
    env.queue(second, 2, sold_out, None).await;
    env.drain_all(&drainer).await;
    assert_eq!(env.status(sold_out).await.0, "sold_out");
    sqlx::query("update flash_sales set quantity_left = 1 where flash_sale_id = $1")
        .bind(env.sale)
        .execute(&env.db)
        .await
        .unwrap();

    env.publish(second, 2, sold_out, Some("copy")).await;
    env.drain_all(&drainer).await;

    assert_eq!(env.status(sold_out).await, ("sold_out".to_owned(), None));
    assert_eq!((env.orders().await, env.quantity_left().await), (1, 1));
    env.cleanup().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn a_ticket_the_door_withdrew_never_becomes_an_order(db: PgPool) {
    let env = Env::new(db, 5, 1).await;
    let ticket = Uuid::now_v7();
    env.queue(env.member().await, 1, ticket, None).await;
    let _: () = redis::AsyncCommands::hset(
        &mut env.redis.clone(),
        env.keys.ticket(env.sale, ticket),
        "status",
        "withdrawn",
    )
    .await
    .unwrap();

    env.drain_all(&env.drainer().await).await;

    assert_eq!((env.orders().await, env.quantity_left().await), (0, 5));
    assert_eq!(env.status(ticket).await.0, "withdrawn");
    env.cleanup().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn a_member_at_the_limit_is_rejected_not_ordered(db: PgPool) {
    let env = Env::new(db, 5, 1).await;
    let member = env.member().await;
    let (first, second) = (Uuid::now_v7(), Uuid::now_v7());
    env.queue(member, 1, first, None).await;
    env.queue(member, 2, second, None).await;

    env.drain_all(&env.drainer().await).await;

    assert_eq!(env.status(first).await.0, "ordered");
    assert_eq!(env.status(second).await.0, "rejected");
    assert_eq!((env.orders().await, env.quantity_left().await), (1, 4));
    env.cleanup().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn two_drainers_on_one_sale_never_oversell(db: PgPool) {
    let env = Env::new(db, 50, 1).await;
    for seq in 1..=200 {
        env.queue(env.member().await, seq, Uuid::now_v7(), None)
            .await;
    }
    let (a, b) = (env.drainer().await, env.drainer().await);

    let (from_a, from_b) = tokio::join!(env.drain_all(&a), env.drain_all(&b));

    assert_eq!(from_a + from_b, 200);
    assert_eq!((env.orders().await, env.quantity_left().await), (50, 0));
    let per_ticket: i64 = sqlx::query_scalar("select count(distinct ticket_id) from orders")
        .fetch_one(&env.db)
        .await
        .unwrap();
    assert_eq!(per_ticket, 50, "one order per ticket");
    env.cleanup().await;
}

/// A ticket that can never be processed (here: the orders table is gone) is retried, then
/// dead-lettered and marked failed with the reason: it is never silently lost.
#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn a_ticket_that_keeps_failing_is_dead_lettered_not_lost(db: PgPool) {
    let env = Env::new(db, 5, 1).await;
    let ticket = Uuid::now_v7();
    env.queue(env.member().await, 1, ticket, None).await;
    sqlx::query("alter table orders rename to orders_gone")
        .execute(&env.db)
        .await
        .unwrap();
    let drainer = env.drainer().await;

    let mut failed = false;
    for _ in 0..100 {
        drainer.drain_once().await.unwrap();
        if env.status(ticket).await.0 == "failed" {
            failed = true;
            break;
        }
    }

    assert!(failed, "the ticket was never dead-lettered");
    let reason: String = redis::AsyncCommands::hget(
        &mut env.redis.clone(),
        env.keys.ticket(env.sale, ticket),
        "reason",
    )
    .await
    .unwrap();
    assert!(reason.contains("orders"), "{reason}");
    let mut dead = env
        .js
        .get_stream(format!("{}_DEAD", env.iso.nats.nats_flash_stream))
        .await
        .unwrap();
    assert_eq!(dead.info().await.unwrap().state.messages, 1);
    assert_eq!(env.quantity_left().await, 5, "nothing was taken");
    sqlx::query("alter table orders_gone rename to orders")
        .execute(&env.db)
        .await
        .unwrap();
    assert_eq!(
        drainer.drain_once().await.unwrap(),
        workers::DrainOutcome::Empty,
        "the message left the queue"
    );
    env.cleanup().await;
}

/// The door's entry of `member` into the env's sale, armed with `units`: the gate's script, as
/// the door runs it.
async fn enter(env: &Env, member: flash_core::domain::MemberId) -> Entry {
    EntryCall::new(
        &env.keys,
        env.sale,
        member,
        Uuid::now_v7(),
        chrono::Utc::now(),
        0,
    )
    .run(&env.redis)
    .await
    .unwrap()
}

/// Item 7 of the hardening issue: JetStream stored a publish whose ack the door never saw, and
/// a worker decided the ticket before the door's undo ran. The late undo must not take the
/// ticket back: the buyer keeps it (a re-entry finds the same ticket, not a second unit) and
/// the gate keeps the unit the order holds.
#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn an_undo_after_the_worker_ordered_the_ticket_takes_nothing_back(db: PgPool) {
    let env = Env::new(db, 5, 1).await;
    env.arm(5).await;
    let member = env.member().await;
    let Entry::Queued { ticket, seq } = enter(&env, member).await else {
        panic!("the first entry takes a unit");
    };
    env.publish(member, seq, ticket, Some(&ticket.to_string()))
        .await;
    env.drain_all(&env.drainer().await).await;
    assert_eq!(env.orders().await, 1);

    let undone = entry::undo(&env.redis, &env.keys, env.sale, member, ticket)
        .await
        .unwrap();

    assert_eq!(undone, Undo::Kept, "the door answers 202, not 503");
    assert_eq!(env.status(ticket).await.0, "ordered");
    assert_eq!(env.gate().await, 4, "the order's unit stays taken");
    let again = enter(&env, member).await;
    assert_eq!(
        again,
        Entry::Existing { ticket },
        "a re-entry finds the same ticket"
    );
    assert_eq!(env.gate().await, 4);
    env.cleanup().await;
}

/// The same race, one step earlier: the worker has read the ticket (it will order it) and not
/// yet written its decision back when the door's undo runs. The undo must leave the ticket to
/// the worker; an undo that runs first withdraws it, and the worker then orders nothing.
#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn an_undo_and_a_worker_reading_the_ticket_exclude_each_other(db: PgPool) {
    let env = Env::new(db, 5, 1).await;
    env.arm(5).await;
    let [read_first, undone_first] = [env.member().await, env.member().await];
    let mut tickets = Vec::new();
    for member in [read_first, undone_first] {
        let Entry::Queued { ticket, .. } = enter(&env, member).await else {
            panic!("an entry takes a unit");
        };
        tickets.push(ticket);
    }
    let read = tickets::claim(&env.redis, &env.keys, env.sale, &tickets[..1])
        .await
        .unwrap();
    assert_eq!(read[0].0, Some(TicketStatus::Queued));
    let kept = entry::undo(&env.redis, &env.keys, env.sale, read_first, tickets[0])
        .await
        .unwrap();
    let withdrawn = entry::undo(&env.redis, &env.keys, env.sale, undone_first, tickets[1])
        .await
        .unwrap();
    let read = tickets::claim(&env.redis, &env.keys, env.sale, &tickets[1..])
        .await
        .unwrap();

    assert_eq!((kept, withdrawn), (Undo::Kept, Undo::Withdrawn));
    assert_eq!(read[0].0, Some(TicketStatus::Withdrawn));
    assert_eq!(env.status(tickets[0]).await.0, "queued");
    assert_eq!(
        env.gate().await,
        4,
        "only the withdrawn ticket's unit came back"
    );
    assert_eq!(
        enter(&env, read_first).await,
        Entry::Existing { ticket: tickets[0] }
    );
    env.cleanup().await;
}
