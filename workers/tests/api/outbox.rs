use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::helpers::Env;

async fn add_job(env: &Env) -> Uuid {
    let id = Uuid::now_v7();
    sqlx::query(
        "insert into outbox (outbox_id, subject, payload) values ($1, 'jobs.email', '{\"n\": 1}')",
    )
    .bind(id)
    .execute(&env.db)
    .await
    .unwrap();
    id
}

async fn drain(relay: &workers::Relay) -> usize {
    let mut total = 0;
    loop {
        match relay.relay_once().await.unwrap() {
            0 => return total,
            n => total += n,
        }
    }
}

async fn unpublished(env: &Env) -> i64 {
    sqlx::query_scalar("select count(*) from outbox where published_at is null")
        .fetch_one(&env.db)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn jobs_are_published_once_and_marked(db: PgPool) {
    let env = Env::new(db, 1, 1).await;
    let relay = env.relay().await;
    for _ in 0..5 {
        add_job(&env).await;
    }

    assert_eq!(relay.relay_once().await.unwrap(), 5);
    assert_eq!(relay.relay_once().await.unwrap(), 0);

    assert_eq!(unpublished(&env).await, 0);
    assert_eq!(env.jobs_in_stream().await, 5);
    env.cleanup().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn relays_racing_never_publish_a_row_twice(db: PgPool) {
    let env = Env::new(db, 1, 1).await;
    let (a, b, c) = (env.relay().await, env.relay().await, env.relay().await);
    for _ in 0..600 {
        add_job(&env).await;
    }

    let (x, y, z) = tokio::join!(drain(&a), drain(&b), drain(&c));

    assert_eq!(x + y + z, 600);
    assert_eq!(env.jobs_in_stream().await, 600);
    env.cleanup().await;
}

/// A relay published a row and crashed before marking it: the next relay publishes it again
/// under the same Nats-Msg-Id, and JetStream keeps one copy.
#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn a_crash_between_publish_and_mark_still_publishes_once(db: PgPool) {
    let env = Env::new(db, 1, 1).await;
    let relay = env.relay().await;
    let id = add_job(&env).await;
    let subject = format!("{}jobs.email", env.iso.nats.nats_subject_prefix);
    flash_core::nats::publish_durably(&env.js, subject, &id.to_string(), "{\"n\": 1}".into(), None)
        .await
        .unwrap();

    relay.relay_once().await.unwrap();

    assert_eq!(unpublished(&env).await, 0);
    assert_eq!(env.jobs_in_stream().await, 1);
    env.cleanup().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn a_committed_job_wakes_the_running_relay(db: PgPool) {
    let env = Env::new(db, 1, 1).await;
    // Polling only every minute: within the next second only LISTEN/NOTIFY can wake it.
    let relay = env
        .relay()
        .await
        .with_poll_fallback(Duration::from_secs(60));
    let stop = CancellationToken::new();
    let running = tokio::spawn(relay.run(stop.clone()));
    // Until the relay listens, a notification would find nobody.
    let mut listening = false;
    for _ in 0..100 {
        let listeners: i64 = sqlx::query_scalar(
            "select count(*) from pg_stat_activity
             where datname = current_database() and query ilike 'listen%'",
        )
        .fetch_one(&env.db)
        .await
        .unwrap();
        if listeners > 0 {
            listening = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(listening, "the relay never listened");

    add_job(&env).await;
    let mut published = false;
    for _ in 0..50 {
        if unpublished(&env).await == 0 {
            published = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    assert!(published, "the relay never published the job");
    stop.cancel();
    running.await.unwrap();
    env.cleanup().await;
}
