//! The spike simulator end to end: catalog-api, admission and workers run in-process against
//! the real PostgreSQL, Redis and NATS (a database, key prefix and streams of this test's own),
//! and `loadtest spike` stampedes a sale through them. Then the checker is shown to fail when
//! a violation is planted.

// A failed unwrap is how a test reports an unexpected answer.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use clap::Parser;
use flash_core::{auth::keys::JwtSigner, domain::Role, redis::Keys, testing::Isolation};
use loadtest::{
    check::check_sale,
    seed,
    spike::{Plan, SpikeReport, run_with},
};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The three services of the flash-sale path, on free ports.
struct Stack {
    iso: Isolation,
    keys: Keys,
    signer: JwtSigner,
    redis: redis::aio::ConnectionManager,
    door: String,
    catalog: String,
    mail_dir: std::path::PathBuf,
    shutdown: CancellationToken,
}

impl Stack {
    async fn start(db: &PgPool) -> Self {
        let iso = Isolation::new();
        let shutdown = CancellationToken::new();
        let (door, catalog) = (free_port(), free_port());

        let mut catalog_config = catalog_api::Config::parse_from(["catalog-api"]);
        catalog_config.addr = format!("127.0.0.1:{catalog}").parse().unwrap();
        catalog_config.redis = iso.redis.clone();
        catalog_config.jwt.jwt_public_key = iso.public_key_path();
        let signer = JwtSigner::from_pem(
            &std::fs::read(iso.private_key_path()).unwrap(),
            &catalog_config.jwt.jwt_issuer,
            &catalog_config.jwt.jwt_audience,
            3600,
        )
        .unwrap();
        let app = catalog_api::App::build_with(catalog_config, db.clone(), shutdown.clone())
            .await
            .unwrap();
        tokio::spawn(app.run());

        let mut door_config = admission::Config::parse_from(["admission"]);
        door_config.addr = format!("127.0.0.1:{door}").parse().unwrap();
        door_config.redis = iso.redis.clone();
        door_config.nats = iso.nats.clone();
        door_config.jwt.jwt_public_key = iso.public_key_path();
        let app = admission::App::build_with(door_config, db.clone(), shutdown.clone())
            .await
            .unwrap();
        tokio::spawn(app.run());

        let mail_dir = std::env::temp_dir().join(format!("loadtest-mail-{}", Uuid::new_v4()));
        let mut worker_config = workers::Config::parse_from(["workers"]);
        worker_config.addr = "127.0.0.1:0".parse().unwrap();
        worker_config.redis = iso.redis.clone();
        worker_config.nats = iso.nats.clone();
        worker_config.mail_dir = mail_dir.clone();
        let app = workers::App::build_with(worker_config, db.clone(), shutdown.clone())
            .await
            .unwrap();
        tokio::spawn(app.run());

        let redis = flash_core::redis::connect(&iso.redis).await.unwrap();
        Self {
            keys: Keys::new(&iso.redis.redis_key_prefix),
            iso,
            signer,
            redis,
            door: format!("http://127.0.0.1:{door}"),
            catalog: format!("http://127.0.0.1:{catalog}"),
            mail_dir,
            shutdown,
        }
    }

    fn plan(&self, buyers: usize, units: i64) -> Plan {
        Plan {
            admission_url: self.door.clone(),
            catalog_url: self.catalog.clone(),
            buyers,
            units,
            connections: 64,
            start_in: Duration::from_secs(2),
            ramp: Duration::ZERO,
            long_poll_secs: 2,
            timeout: Duration::from_secs(60),
            settle_timeout: Duration::from_secs(30),
            baseline: false,
            progress: false,
        }
    }

    async fn spike(&self, db: &PgPool, plan: &Plan) -> SpikeReport {
        run_with(db, &self.redis, &self.keys, &self.signer, plan)
            .await
            .unwrap()
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.iso.cleanup().await;
        let _ = std::fs::remove_dir_all(&self.mail_dir);
    }
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn a_small_spike_sells_every_unit_once_and_every_ticket_ends(db: PgPool) {
    let stack = Stack::start(&db).await;
    let report = stack.spike(&db, &stack.plan(2000, 100)).await;

    assert_eq!(report.unfinished, 0, "every ticket is final: {report:?}");
    assert!(report.check.is_sound(), "{:?}", report.check.violations);
    assert_eq!(report.entries.requests, 2000);
    // A declined payment (the simulated provider declines 2 %) puts its unit back on sale while
    // buyers are still entering, so a few more than 100 tickets may be queued and ordered.
    let queued = *report.entries.statuses.get(&202).unwrap();
    let sold_out = *report.entries.statuses.get(&200).unwrap();
    assert_eq!(queued + sold_out, 2000, "{:?}", report.entries.statuses);
    assert!(queued >= 100, "every unit was offered: {queued}");
    assert_eq!(report.outcomes.get("ordered"), Some(&queued));
    assert_eq!(report.outcomes.get("sold_out"), Some(&sold_out));
    let ticket_count = |status: &str| report.check.tickets.get(status).copied().unwrap_or(0);
    assert_eq!(ticket_count("ordered"), i64::try_from(queued).unwrap());
    assert_eq!(ticket_count("sold_out"), i64::try_from(sold_out).unwrap());
    // Payments settled: every order is paid or (declined) cancelled, and every unit is either
    // in a paid order or back in the sale.
    let paid = report.check.orders.get("paid").copied().unwrap_or(0);
    let cancelled = report.check.orders.get("cancelled").copied().unwrap_or(0);
    assert_eq!(
        paid + cancelled,
        i64::try_from(queued).unwrap(),
        "{:?}",
        report.check.orders
    );
    assert_eq!(report.check.quantity_left + paid, 100);
    assert!(report.polls > 0 && report.all_final_ms.is_some());
    assert!(report.orders_per_second.is_some_and(|r| r > 0.0));
    stack.stop().await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn the_checker_catches_planted_violations(db: PgPool) {
    let stack = Stack::start(&db).await;
    let report = stack.spike(&db, &stack.plan(60, 10)).await;
    let sale = report.sale_id;
    assert!(report.is_healthy(), "{:?}", report.check.violations);

    // An extra order nobody paid a unit for: one more live unit than the sale accounts for.
    let intruder = seed::members(&db, &stack.signer, "intruder", 1, Role::Buyer)
        .await
        .unwrap()
        .remove(0);
    let order = Uuid::now_v7();
    sqlx::query(
        "insert into orders (order_id, member_id, kind, total_cents, currency, flash_sale_id, ticket_id)
         values ($1, $2, 'flash', 9900, 'EUR', $3, $4)",
    )
    .bind(order)
    .bind(intruder.id.get())
    .bind(sale)
    .bind(Uuid::now_v7())
    .execute(&db)
    .await
    .unwrap();
    sqlx::query(
        "insert into order_items (order_id, product_id, quantity, unit_price_cents)
         select $1, product_id, 1, 9900 from flash_sales where flash_sale_id = $2",
    )
    .bind(order)
    .bind(sale)
    .execute(&db)
    .await
    .unwrap();
    // And a ticket the workers never finished.
    redis::AsyncCommands::hset::<_, _, _, ()>(
        &mut stack.redis.clone(),
        stack.keys.ticket(sale, Uuid::new_v4()),
        "status",
        "queued",
    )
    .await
    .unwrap();

    let checked = check_sale(&db, Some(&stack.redis), &stack.keys, sale)
        .await
        .unwrap();
    assert!(!checked.is_sound());
    let said = checked.violations.join("\n");
    assert!(said.contains("units do not add up"), "{said}");
    assert!(said.contains("1 tickets are still queued"), "{said}");
    stack.stop().await;
}
