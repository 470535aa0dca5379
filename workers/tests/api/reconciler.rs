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
