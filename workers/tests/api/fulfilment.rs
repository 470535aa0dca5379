use std::time::Duration;

use sqlx::PgPool;
use uuid::Uuid;
use workers::{Delivery, Fulfilment, FulfilmentSettings, SimulatedCarrier};

use crate::helpers::Env;

const NOW: FulfilmentSettings = FulfilmentSettings {
    prepare_after: Duration::ZERO,
    ship_after: Duration::ZERO,
    deliver_after: Duration::ZERO,
    return_after: Duration::ZERO,
    batch_size: 7,
};

fn scheduler(
    env: &Env,
    carrier_failure_rate: f64,
    settings: FulfilmentSettings,
) -> Fulfilment<SimulatedCarrier> {
    Fulfilment::new(
        env.db.clone(),
        env.redis.clone(),
        env.keys.clone(),
        SimulatedCarrier::new(carrier_failure_rate),
        settings,
    )
}

/// `n` flash orders made by the drain and marked paid.
async fn paid_orders(env: &Env, n: i64) -> Vec<Uuid> {
    for seq in 1..=n {
        env.queue(env.member().await, seq, Uuid::now_v7(), None)
            .await;
    }
    env.drain_all(&env.drainer().await).await;
    sqlx::query_scalar("update orders set status = 'paid' returning order_id")
        .fetch_all(&env.db)
        .await
        .unwrap()
}

/// Runs the schedulers side by side until three passes in a row move nothing. One still pass
/// is not enough: the flaky scheduler may hold the last due order (`skip locked` hides it from
/// the other) and have its carrier call fail.
async fn run_until_still(schedulers: &[&Fulfilment<SimulatedCarrier>]) {
    let mut still = 0;
    for _ in 0..100 {
        let moved = futures::future::join_all(schedulers.iter().map(|s| s.advance_once())).await;
        if moved.into_iter().map(Result::unwrap).sum::<usize>() == 0 {
            still += 1;
            if still == 3 {
                return;
            }
        } else {
            still = 0;
        }
    }
    panic!("the schedulers never ran out of work");
}

async fn count(env: &Env, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&env.db).await.unwrap()
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn two_schedulers_deliver_every_paid_order_exactly_once_and_mail_each_step(db: PgPool) {
    let env = Env::new(db, 30, 1).await;
    paid_orders(&env, 30).await;
    let steady = scheduler(&env, 0.0, NOW);
    // The second one's carrier fails half its calls: those orders wait for a later pass.
    let flaky = scheduler(&env, 0.5, NOW);

    run_until_still(&[&steady, &flaky]).await;

    assert_eq!(
        count(
            &env,
            "select count(*) from orders where status = 'delivered' and tracking_ref like 'SIM%'"
        )
        .await,
        30
    );
    // One history row per order and state (the table's key refuses a second anyway).
    let steps: Vec<(String, i64)> = sqlx::query_as(
        "select status, count(*) from order_history group by status order by min(history_id)",
    )
    .fetch_all(&env.db)
    .await
    .unwrap();
    assert_eq!(
        steps,
        [
            ("paid".to_owned(), 30),
            ("preparing".to_owned(), 30),
            ("shipped".to_owned(), 30),
            ("delivered".to_owned(), 30)
        ]
    );
    // Each step wrote one email job per order; the email worker sends each once.
    let relay = env.relay().await;
    while relay.relay_once().await.unwrap() > 0 {}
    let folder = std::env::temp_dir().join(format!("fulfilment-{}", Uuid::new_v4()));
    let emails = env.emails(Delivery::Folder(folder.clone()), 3).await;
    while emails.run_once().await.unwrap() > 0 {}
    let sent: Vec<(String, i64)> = sqlx::query_as(
        "select subject, count(*) from emails where kind = 'order_progress' and status = 'sent'
         group by subject order by subject collate \"C\"",
    )
    .fetch_all(&env.db)
    .await
    .unwrap();
    assert_eq!(
        sent,
        [
            ("We are preparing your order".to_owned(), 30),
            ("Your order is on its way".to_owned(), 30),
            ("Your order was delivered".to_owned(), 30),
        ]
    );
    assert_eq!(std::fs::read_dir(&folder).unwrap().count(), 90);
    let shipped_mail: String = std::fs::read_dir(&folder)
        .unwrap()
        .map(|f| std::fs::read_to_string(f.unwrap().path()).unwrap())
        .find(|m| m.contains("on its way"))
        .unwrap();
    assert!(
        shipped_mail.contains("Tracking reference: SIM"),
        "{shipped_mail}"
    );
    std::fs::remove_dir_all(folder).unwrap();
    env.cleanup().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn an_order_waits_in_each_state_for_its_configured_delay(db: PgPool) {
    let env = Env::new(db, 1, 1).await;
    let orders = paid_orders(&env, 1).await;
    let patient = scheduler(
        &env,
        0.0,
        FulfilmentSettings {
            ship_after: Duration::from_secs(3600),
            ..NOW
        },
    );

    run_until_still(&[&patient]).await;

    let status: String = sqlx::query_scalar("select status from orders where order_id = $1")
        .bind(orders[0])
        .fetch_one(&env.db)
        .await
        .unwrap();
    assert_eq!(
        status, "preparing",
        "prepared at once, shipped only after an hour"
    );
    env.cleanup().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn cancelled_orders_are_never_shipped(db: PgPool) {
    let env = Env::new(db, 2, 1).await;
    let orders = paid_orders(&env, 2).await;
    sqlx::query("update orders set status = 'cancelled' where order_id = $1")
        .bind(orders[0])
        .execute(&env.db)
        .await
        .unwrap();

    run_until_still(&[&scheduler(&env, 0.0, NOW)]).await;

    let statuses: Vec<String> = sqlx::query_scalar(
        "select status from orders where order_id = any($1) order by order_id = $2 desc",
    )
    .bind(&orders)
    .bind(orders[0])
    .fetch_all(&env.db)
    .await
    .unwrap();
    assert_eq!(statuses, ["cancelled", "delivered"]);
    env.cleanup().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn a_returned_flash_order_gives_its_unit_back_and_is_refunded_once_despite_redelivery(
    db: PgPool,
) {
    let env = Env::new(db, 1, 1).await;
    env.queue(env.member().await, 1, Uuid::now_v7(), None).await;
    env.drain_all(&env.drainer().await).await;
    let relay = env.relay().await;
    let payments = env.payments(0.0, 0.0, 3).await;
    while relay.relay_once().await.unwrap() > 0 {}
    while payments.run_once().await.unwrap() > 0 {}
    let order: Uuid = sqlx::query_scalar("select order_id from orders where status = 'paid'")
        .fetch_one(&env.db)
        .await
        .unwrap();
    let schedulers = [scheduler(&env, 0.0, NOW), scheduler(&env, 0.0, NOW)];
    run_until_still(&[&schedulers[0], &schedulers[1]]).await;
    flash_core::redis_model::sale_gate::arm(
        &env.redis,
        &env.keys,
        env.sale,
        0,
        &flash_core::redis_model::sale_gate::SaleMeta::open(
            chrono::Utc::now() - chrono::Duration::minutes(1),
            chrono::Utc::now() + chrono::Duration::hours(1),
            1,
        ),
        flash_core::redis_model::sale_gate::Arm::Replace,
    )
    .await
    .unwrap();
    assert_eq!(env.quantity_left().await, 0);
    // The buyer asks to return it (catalog-api's POST /orders/{id}/return).
    sqlx::query("update orders set status = 'return_requested' where order_id = $1")
        .bind(order)
        .execute(&env.db)
        .await
        .unwrap();

    run_until_still(&[&schedulers[0], &schedulers[1]]).await;

    assert_eq!(
        env.quantity_left().await,
        1,
        "the unit is back in the sale once"
    );
    let gate: i64 = redis::AsyncCommands::get(&mut env.redis.clone(), env.keys.sale_gate(env.sale))
        .await
        .unwrap();
    assert_eq!(gate, 1, "and in its gate once");
    let live: i32 = sqlx::query_scalar(
        "select live_orders from flash_sale_entitlements where flash_sale_id = $1",
    )
    .bind(env.sale)
    .fetch_one(&env.db)
    .await
    .unwrap();
    assert_eq!(
        live, 0,
        "a returned order no longer counts against the buyer's limit"
    );
    // The refund job, then the same job once more as after a redelivery.
    while relay.relay_once().await.unwrap() > 0 {}
    while payments.run_once().await.unwrap() > 0 {}
    let refund = flash_core::jobs::PaymentJob::Refund {
        order_id: order.into(),
    };
    flash_core::nats::publish_durably(
        &env.js,
        format!(
            "{}{}",
            env.iso.nats.nats_subject_prefix,
            flash_core::jobs::PaymentJob::SUBJECT
        ),
        "refund-again",
        serde_json::to_vec(&refund).unwrap().into(),
        None,
    )
    .await
    .unwrap();
    while payments.run_once().await.unwrap() > 0 {}

    assert_eq!(payments.provider().refunds_asked(), 1);
    let payment: String = sqlx::query_scalar("select status from payments where order_id = $1")
        .bind(order)
        .fetch_one(&env.db)
        .await
        .unwrap();
    assert_eq!(payment, "refunded");
    let returned_mails = count(
        &env,
        "select count(*) from outbox where subject = 'jobs.email' and payload->>'status' = 'returned'",
    )
    .await;
    assert_eq!(returned_mails, 1);
    env.cleanup().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn a_returned_regular_order_restocks_its_products_and_the_catalog_cache_sees_it(db: PgPool) {
    let env = Env::new(db, 1, 1).await;
    let member = env.member().await;
    let product = Uuid::new_v4();
    sqlx::query("insert into products (product_id, sku, name, price_cents, currency, stock, version) values ($1, 'R', 'R', 700, 'EUR', 4, 1)")
        .bind(product)
        .execute(&env.db)
        .await
        .unwrap();
    let order = Uuid::now_v7();
    sqlx::query("insert into orders (order_id, member_id, kind, status, total_cents, currency) values ($1, $2, 'regular', 'return_requested', 1400, 'EUR')")
        .bind(order)
        .bind(member)
        .execute(&env.db)
        .await
        .unwrap();
    sqlx::query("insert into order_items (order_id, product_id, quantity, unit_price_cents) values ($1, $2, 2, 700)")
        .bind(order)
        .bind(product)
        .execute(&env.db)
        .await
        .unwrap();
    // catalog-api cached the product at version 1, with 4 in stock.
    flash_core::redis_model::product_cache::store(
        &env.redis,
        &env.keys,
        product,
        1,
        "{\"stock\":4}",
        Duration::from_secs(60),
    )
    .await
    .unwrap();

    run_until_still(&[&scheduler(&env, 0.0, NOW), &scheduler(&env, 0.0, NOW)]).await;

    let (stock, version): (i32, i64) =
        sqlx::query_as("select stock, version from products where product_id = $1")
            .bind(product)
            .fetch_one(&env.db)
            .await
            .unwrap();
    assert_eq!((stock, version), (6, 2), "both units back, once");
    let cached: String =
        redis::AsyncCommands::get(&mut env.redis.clone(), env.keys.product(product))
            .await
            .unwrap();
    assert_eq!(cached, "2|", "readers go to PostgreSQL for the new stock");
    env.cleanup().await;
}
