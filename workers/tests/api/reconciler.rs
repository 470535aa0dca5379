use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::Env;

/// Redis lost the gate while three tickets were still queued: the gate comes back as
/// quantity_left minus those three, so the door can never admit more than can be sold.
#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn a_lost_gate_is_rearmed_from_postgres_minus_the_queue(db: PgPool) {
    let env = Env::new(db, 10, 1).await;
    for seq in 1..=3 {
        env.queue(env.member().await, seq, Uuid::now_v7(), None)
            .await;
    }
    let reconciler = env.reconciler();
    let gate = env.keys.sale_gate(env.sale);

    let armed = reconciler.reconcile_once().await.unwrap();
    let units: i64 = redis::AsyncCommands::get(&mut env.redis.clone(), &gate)
        .await
        .unwrap();
    assert_eq!((armed, units), (1, 7));

    // The door admits one more; a second pass must not undo that.
    let _: i64 = redis::AsyncCommands::decr(&mut env.redis.clone(), &gate, 1)
        .await
        .unwrap();
    assert_eq!(reconciler.reconcile_once().await.unwrap(), 0);
    let units: i64 = redis::AsyncCommands::get(&mut env.redis.clone(), &gate)
        .await
        .unwrap();
    assert_eq!(units, 6);

    // After the drain, Redis flushed again: PostgreSQL alone decides (10 - 3 ordered).
    env.drain_all(&env.drainer().await).await;
    let _: () = redis::AsyncCommands::del(&mut env.redis.clone(), &gate)
        .await
        .unwrap();
    reconciler.reconcile_once().await.unwrap();
    let units: i64 = redis::AsyncCommands::get(&mut env.redis.clone(), &gate)
        .await
        .unwrap();
    assert_eq!(units, 7);
    env.cleanup().await;
}

/// Found by the chaos matrix (Redis FLUSHALL mid-spike): the flush also took the list of sales
/// under each ticket-id tag, which the door reads to find a ticket from its id alone. The door
/// remembers having registered the sale and does not register it again for a while, so every
/// ticket issued after the flush answered 404 to its buyer's polls. A gate re-armed after a
/// loss comes back with its sale's tag registered.
#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn a_rearmed_gate_comes_back_with_its_sale_tag(db: PgPool) {
    let env = Env::new(db, 10, 1).await;
    let tag = env
        .keys
        .sale_tag(flash_core::redis_model::sale_tag(env.sale));

    env.reconciler().reconcile_once().await.unwrap();
    let tagged: Vec<String> = redis::AsyncCommands::smembers(&mut env.redis.clone(), &tag)
        .await
        .unwrap();
    assert_eq!(tagged, [env.sale.to_string()]);
    env.cleanup().await;
}

async fn meta(env: &Env, field: &str) -> Option<String> {
    redis::AsyncCommands::hget(&mut env.redis.clone(), env.keys.sale_meta(env.sale), field)
        .await
        .unwrap()
}

/// Item 9 of the hardening issue: an admin's change reached PostgreSQL and Redis failed before
/// it took the change (a pause and a proof of work, then a cancel). The reconciler brings the
/// door's view to PostgreSQL's: the metadata at once, and a cancelled sale's gate to 0.
#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn the_reconciler_brings_stale_metadata_and_a_cancelled_gate_to_postgres(db: PgPool) {
    let env = Env::new(db, 5, 1).await;
    env.arm(5).await;
    sqlx::query("update flash_sales set paused_at = now(), pow_bits = 3 where flash_sale_id = $1")
        .bind(env.sale)
        .execute(&env.db)
        .await
        .unwrap();
    let reconciler = env.reconciler();

    reconciler.reconcile_once().await.unwrap();
    assert_eq!(
        (meta(&env, "paused").await, meta(&env, "pow").await),
        (Some("1".into()), Some("3".into()))
    );
    assert_eq!(env.gate().await, 5, "a live sale's gate is left alone");

    sqlx::query("update flash_sales set cancelled_at = now() where flash_sale_id = $1")
        .bind(env.sale)
        .execute(&env.db)
        .await
        .unwrap();
    reconciler.reconcile_once().await.unwrap();
    assert_eq!(meta(&env, "cancelled").await, Some("1".into()));
    assert_eq!(env.gate().await, 0, "a cancelled sale admits nobody");
    env.cleanup().await;
}

/// A unit came back in PostgreSQL (a cancel, a declined payment, a restock) and Redis failed
/// before the gate took it: once the sale is quiet (nothing admitted, queued or promoting for
/// the settle time) the gate is set to PostgreSQL's units left, so the unit is sold after all.
/// A sale with tickets in the queue is not touched.
#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn a_unit_lost_on_its_way_back_to_the_gate_returns_once_the_sale_is_quiet(db: PgPool) {
    let env = Env::new(db, 5, 1).await;
    env.arm(4).await;
    let reconciler = env.reconciler().settle_after(std::time::Duration::ZERO);

    reconciler.reconcile_once().await.unwrap();
    assert_eq!(env.gate().await, 4, "one pass alone never corrects");
    reconciler.reconcile_once().await.unwrap();
    assert_eq!(env.gate().await, 5, "the lost unit is back");

    env.queue(env.member().await, 1, Uuid::now_v7(), None).await;
    let _: i64 =
        redis::AsyncCommands::decr(&mut env.redis.clone(), env.keys.sale_gate(env.sale), 2)
            .await
            .unwrap();
    for _ in 0..3 {
        reconciler.reconcile_once().await.unwrap();
    }
    assert_eq!(
        env.gate().await,
        3,
        "a sale with queued tickets is left alone"
    );
    env.cleanup().await;
}

/// Item 11 of the hardening issue: a door died between the entry script and the publish, so a
/// `queued` ticket holds a unit and no message names it (its buyer may still find it on the
/// waiting room's arrival question). Once the sale is quiet the reconciler queues it, under its
/// own id as `Nats-Msg-Id`, and the drain orders it: the unit is sold, to the buyer who took it.
#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn a_ticket_stranded_by_a_dead_door_is_queued_once_the_sale_is_quiet(db: PgPool) {
    let env = Env::new(db, 5, 1).await;
    env.arm(5).await;
    let member = env.member().await;
    let entry = flash_core::redis_model::entry::EntryCall::new(
        &env.keys,
        env.sale,
        member,
        Uuid::now_v7(),
        chrono::Utc::now(),
        0,
    )
    .run(&env.redis)
    .await
    .unwrap();
    let flash_core::redis_model::entry::Entry::Queued { ticket, .. } = entry else {
        panic!("the entry takes a unit: {entry:?}");
    };
    let reconciler = env.reconciler().settle_after(std::time::Duration::ZERO);

    for _ in 0..3 {
        reconciler.reconcile_once().await.unwrap();
    }
    env.drain_all(&env.drainer().await).await;

    assert_eq!(env.status(ticket).await.0, "ordered");
    assert_eq!((env.orders().await, env.quantity_left().await), (1, 4));
    assert_eq!(
        env.gate().await,
        4,
        "the unit was sold, not put back as well"
    );
    for _ in 0..3 {
        reconciler.reconcile_once().await.unwrap();
    }
    assert_eq!(env.gate().await, 4);
    assert_eq!(env.orders().await, 1);
    env.cleanup().await;
}
