//! `WORKER_ROLES`: a process does only what it is told, and processes with different roles
//! together do the whole job.

use std::time::Duration;

use uuid::Uuid;

use crate::{
    crash::{start_worker_as, test_database_url},
    helpers::Env,
};

async fn count(env: &Env, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&env.db).await.unwrap()
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn a_drain_only_process_makes_orders_and_leaves_payments_to_another(db: sqlx::PgPool) {
    let env = Env::new(db, 40, 1).await;
    for seq in 1..=50 {
        env.queue(env.member().await, seq, Uuid::now_v7(), None)
            .await;
    }
    let url = test_database_url(&env.db);
    let mail = std::env::temp_dir().join(format!("roles-mail-{}", Uuid::new_v4()));

    let mut drain = start_worker_as(&env, &url, &mail, "drain");
    let mut drained = false;
    for _ in 0..600 {
        if env.orders().await == 40 && env.quantity_left().await == 0 {
            drained = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(drained, "the drain-only process did not sell the 40 units");
    // Long enough for a relay and a payment pass, had the process started them.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        count(
            &env,
            "select count(*) from outbox where published_at is not null"
        )
        .await,
        0,
        "a drain-only process published no job"
    );
    assert_eq!(
        count(&env, "select count(*) from payments").await,
        0,
        "a drain-only process charged nobody"
    );

    let mut pay = start_worker_as(&env, &url, &mail, "relay,payments");
    let mut paid = false;
    for _ in 0..600 {
        if count(&env, "select count(*) from orders where status = 'paid'").await == 40 {
            paid = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drain.kill().await.unwrap();
    pay.kill().await.unwrap();
    assert!(paid, "the payments process did not charge the 40 orders");
    assert_eq!(
        count(
            &env,
            "select count(*) from payments where status = 'succeeded'"
        )
        .await,
        40,
        "each order charged once"
    );
    let _ = std::fs::remove_dir_all(&mail);
    env.cleanup().await;
}
