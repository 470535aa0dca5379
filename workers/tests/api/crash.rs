use std::{process::Stdio, time::Duration};

use sqlx::PgPool;
use tokio::process::{Child, Command};
use uuid::Uuid;

use crate::helpers::Env;

/// Starts the real `workers` binary against this test's database, Redis prefix and streams,
/// with every role (the binary's default).
fn start_worker(env: &Env, database_url: &str, mail_dir: &std::path::Path) -> Child {
    worker_command(env, database_url, mail_dir)
        .spawn()
        .expect("the workers binary starts")
}

/// Starts the real `workers` binary with only `roles` (its `WORKER_ROLES`).
pub(crate) fn start_worker_as(
    env: &Env,
    database_url: &str,
    mail_dir: &std::path::Path,
    roles: &str,
) -> Child {
    worker_command(env, database_url, mail_dir)
        .env("WORKER_ROLES", roles)
        .spawn()
        .expect("the workers binary starts")
}

fn worker_command(env: &Env, database_url: &str, mail_dir: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_workers"));
    command
        .env("DATABASE_URL", database_url)
        .env("REDIS_URL", &env.iso.redis.redis_url)
        .env("REDIS_KEY_PREFIX", &env.iso.redis.redis_key_prefix)
        .env("NATS_URL", &env.iso.nats.nats_url)
        .env("NATS_SUBJECT_PREFIX", &env.iso.nats.nats_subject_prefix)
        .env("NATS_FLASH_STREAM", &env.iso.nats.nats_flash_stream)
        .env("NATS_JOBS_STREAM", &env.iso.nats.nats_jobs_stream)
        .env("WORKERS_ADDR", "127.0.0.1:0")
        .env("DRAIN_BATCH_SIZE", "10")
        .env("PAYMENT_DECLINE_RATE", "0")
        .env("PAYMENT_TRANSIENT_RATE", "0")
        .env("MAIL_DIR", mail_dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    command
}

/// `DATABASE_URL` pointed at this test's own database.
pub(crate) fn test_database_url(db: &PgPool) -> String {
    let server = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let base = server.split('?').next().unwrap_or_default();
    let (root, _) = base.rsplit_once('/').unwrap();
    format!("{root}/{}", db.connect_options().get_database().unwrap())
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn a_worker_killed_mid_drain_loses_nothing_and_sells_nothing_twice(db: PgPool) {
    let env = Env::new(db, 300, 1).await;
    let mut tickets = Vec::new();
    for seq in 1..=600 {
        let ticket = Uuid::now_v7();
        env.queue(env.member().await, seq, ticket, None).await;
        tickets.push(ticket);
    }
    let url = test_database_url(&env.db);
    let mail = std::env::temp_dir().join(format!("crash-mail-{}", Uuid::new_v4()));

    // SIGKILL the first worker as soon as it has made orders: mid-drain, no clean shutdown.
    let mut first = start_worker(&env, &url, &mail);
    let mut started = false;
    for _ in 0..1000 {
        if env.orders().await > 0 {
            started = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(started, "the first worker never made an order");
    first.kill().await.unwrap();
    let at_kill = env.orders().await;

    let mut second = start_worker(&env, &url, &mail);
    let mut final_state = false;
    for _ in 0..600 {
        let queued: i64 = sqlx::query_scalar("select count(*) from orders")
            .fetch_one(&env.db)
            .await
            .unwrap();
        let mut undecided = 0;
        for ticket in &tickets {
            if env.status(*ticket).await.0 == "queued" {
                undecided += 1;
            }
        }
        if undecided == 0 && queued == 300 {
            final_state = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    second.kill().await.unwrap();

    assert!(final_state, "tickets were left undecided after the restart");
    assert!(at_kill < 300, "the kill came before every unit was sold");
    assert_eq!(
        (env.orders().await, env.quantity_left().await),
        (300, 0),
        "quantity_left + live orders = quantity"
    );
    let distinct: i64 = sqlx::query_scalar("select count(distinct ticket_id) from orders")
        .fetch_one(&env.db)
        .await
        .unwrap();
    assert_eq!(distinct, 300, "one order per ticket");
    let mut ordered = 0;
    for ticket in &tickets {
        let (status, order) = env.status(*ticket).await;
        match status.as_str() {
            // The real workers also charge: the ticket may already say how that ended.
            "ordered" | "paid" | "cancelled" => {
                ordered += 1;
                let owner: Option<Uuid> =
                    sqlx::query_scalar("select ticket_id from orders where order_id = $1")
                        .bind(order.unwrap().parse::<Uuid>().unwrap())
                        .fetch_optional(&env.db)
                        .await
                        .unwrap();
                assert_eq!(owner, Some(*ticket), "the ticket points at its own order");
            }
            "sold_out" => {}
            other => panic!("ticket {ticket} ended {other}"),
        }
    }
    assert_eq!(ordered, 300);
    let _ = std::fs::remove_dir_all(&mail);
    env.cleanup().await;
}

/// A worker that dies holding a batch (fetched, never acked) must not stall the sale for long:
/// its tickets are redelivered, and every one is final within 5 s of the death, not after the
/// 30 s ack wait it once had.
#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn tickets_a_dead_worker_held_are_final_within_five_seconds(db: PgPool) {
    let env = Env::new(db, 50, 1).await;
    let mut tickets = Vec::new();
    for seq in 1..=20 {
        let ticket = Uuid::now_v7();
        env.queue(env.member().await, seq, ticket, None).await;
        tickets.push(ticket);
    }
    let subjects = flash_core::nats::Subjects::new(&env.iso.nats.nats_subject_prefix);
    let consumer = flash_core::nats::orders_consumer(&env.stream, &subjects, env.sale)
        .await
        .unwrap();
    let held = flash_core::nats::fetch_batch(&consumer, 20, Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(held.len(), 20, "the dead worker took the whole queue");
    drop(held);
    let died = std::time::Instant::now();

    let drainer = env.drainer().await;
    let mut unfinished = tickets.clone();
    while !unfinished.is_empty() && died.elapsed() < Duration::from_secs(10) {
        drainer.drain_once().await.unwrap();
        let mut still = Vec::new();
        for ticket in unfinished {
            if env.status(ticket).await.0 == "queued" {
                still.push(ticket);
            }
        }
        unfinished = still;
    }
    let took = died.elapsed();
    assert!(
        unfinished.is_empty(),
        "{} tickets not final after {took:?}",
        unfinished.len()
    );
    assert!(
        took <= Duration::from_secs(5),
        "the last ticket was final {took:?} after the worker died"
    );
    for ticket in &tickets {
        assert_eq!(env.status(*ticket).await.0, "ordered");
    }
    assert_eq!(env.orders().await, 20);
    env.cleanup().await;
}

/// The short ack wait must not hand a live worker's slow batch to another: while a batch waits
/// (here on the sale's row lock, held for 6 s, past the 4 s ack wait) its worker keeps saying
/// it is in progress, and a second worker fetching all along gets nothing.
#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn a_slow_batch_is_not_redelivered_to_another_worker(db: PgPool) {
    let env = Env::new(db, 50, 1).await;
    let ticket = Uuid::now_v7();
    env.queue(env.member().await, 1, ticket, None).await;
    let mut lock = env.db.begin().await.unwrap();
    sqlx::query("select 1 from flash_sales where flash_sale_id = $1 for update")
        .bind(env.sale)
        .execute(&mut *lock)
        .await
        .unwrap();

    let (slow, other) = (env.drainer().await, env.drainer().await);
    let first = async { slow.drain_once().await.unwrap() };
    let subjects = flash_core::nats::Subjects::new(&env.iso.nats.nats_subject_prefix);
    let mut consumer = flash_core::nats::orders_consumer(&env.stream, &subjects, env.sale)
        .await
        .unwrap();
    let second = async {
        // Only once the slow worker holds the ticket: before, either could fetch it first.
        let started = std::time::Instant::now();
        while consumer.info().await.unwrap().num_ack_pending == 0 {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "nobody fetched the ticket"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut taken = 0;
        while started.elapsed() < Duration::from_secs(6) {
            if let workers::DrainOutcome::Processed(n) = other.drain_once().await.unwrap() {
                taken += n;
            }
        }
        taken
    };
    let release = async {
        tokio::time::sleep(Duration::from_secs(6)).await;
        lock.rollback().await.unwrap();
    };
    let (_, taken, ()) = tokio::join!(first, second, release);

    assert_eq!(taken, 0, "the other worker was handed the slow batch");
    assert_eq!(env.status(ticket).await.0, "ordered");
    let info = consumer.info().await.unwrap();
    assert_eq!(
        info.delivered.consumer_sequence, 1,
        "delivered more than once"
    );
    env.cleanup().await;
}
