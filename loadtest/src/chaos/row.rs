//! One row of the fault matrix: a spike through the rig's services, the fault injected once
//! the drain is under way, the door probed throughout, and the figures read back.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context;
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::sync::watch;
use uuid::Uuid;

use super::{
    checkouts::Shoppers,
    fault::{Fault, Row, back_after},
    rig::{Parts, Stores},
};
use crate::spike::{Plan, SpikeReport, run_with};

/// How one row is run.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// Buyers in the spike.
    pub(crate) buyers: usize,
    /// Units on sale.
    pub(crate) units: i64,
    /// Entries spread over this long, so the fault lands while buyers still arrive.
    pub(crate) ramp: Duration,
    /// How long NATS or PostgreSQL stays unreachable.
    pub(crate) outage: Duration,
    /// From a worker's death until it is started again.
    pub(crate) worker_restart_after: Duration,
    /// Shoppers checking out regular orders in catalog-api's row.
    pub(crate) shoppers: usize,
}

/// When the fault struck, and in which sale.
struct Struck {
    at: Instant,
    at_utc: DateTime<Utc>,
    sale: Uuid,
    starts_at: DateTime<Utc>,
}

/// Runs the spike with `fault` injected mid-way and measures the row.
pub(crate) async fn run(
    stores: &Stores,
    parts: &mut Parts,
    fault: Fault,
    settings: &Settings,
) -> anyhow::Result<Row> {
    parts.ensure_running().await?;
    let plan = Plan {
        admission_url: stores.door_url.clone(),
        catalog_url: stores.catalog_url.clone(),
        buyers: settings.buyers,
        units: settings.units,
        connections: 64,
        start_in: Duration::from_secs(3),
        ramp: settings.ramp,
        long_poll_secs: 5,
        timeout: Duration::from_secs(120),
        settle_timeout: Duration::from_secs(60),
        baseline: false,
        prequeue: false,
        arrive: true,
        progress: false,
    };
    let shoppers = if fault == Fault::KillCatalog {
        Some(
            Shoppers::prepare(
                &stores.db,
                &stores.signer,
                &stores.catalog_url,
                settings.shoppers,
                i64::try_from(settings.shoppers / 2)?,
            )
            .await?,
        )
    } else {
        None
    };
    let began = Utc::now();
    let (stop_probing, probes) = probe(parts.http.clone(), format!("{}/readyz", stores.door_url));
    let spike = run_with(
        &stores.db,
        &stores.redis,
        &stores.keys,
        &stores.signer,
        &plan,
    );
    let strike = async {
        let struck = struck_mid_drain(&stores.db, began, settings.units).await?;
        let checkouts = inject(stores, parts, fault, settings, shoppers.as_ref()).await?;
        anyhow::Ok((struck, checkouts))
    };
    let (report, struck) = tokio::join!(spike, strike);
    stop_probing.send_replace(true);
    let report = report?;
    let (struck, checkouts) = struck?;
    anyhow::ensure!(
        struck.sale == report.sale_id,
        "the fault was timed on sale {} but the spike ran sale {}",
        struck.sale,
        report.sale_id
    );
    let probes: Vec<(f64, bool)> = probes
        .lock()
        .map_err(|_| anyhow::anyhow!("the prober panicked"))?
        .iter()
        .map(|(at, ok)| (signed_secs(*at, struck.at), *ok))
        .collect();
    let mut row = measure(&stores.db, fault, &report, &struck).await?;
    row.door_back_secs = back_after(&probes);
    if let (Some(shoppers), Some(outcome)) = (&shoppers, checkouts) {
        let (oversold, twice, violations) = shoppers.check(&stores.db, &outcome).await?;
        row.oversold += oversold;
        row.double_charges += twice;
        row.violations.extend(violations);
        row.checkouts = Some(outcome.figures);
    }
    Ok(row)
}

/// Seconds from `from` to `at`, negative when `at` came first.
fn signed_secs(at: Instant, from: Instant) -> f64 {
    match at.checked_duration_since(from) {
        Some(after) => after.as_secs_f64(),
        None => -from.duration_since(at).as_secs_f64(),
    }
}

/// The door's probes so far: when each was sent, and whether it was answered 2xx.
type Probes = Arc<Mutex<Vec<(Instant, bool)>>>;

/// Probes `url` every 20 ms (1 s timeout each) until told to stop; each probe is (when it was
/// sent, answered 2xx).
fn probe(http: reqwest::Client, url: String) -> (watch::Sender<bool>, Probes) {
    let (stop, mut stopped) = watch::channel(false);
    let probes: Probes = Arc::default();
    let record = Arc::clone(&probes);
    tokio::spawn(async move {
        while !*stopped.borrow() {
            let sent = Instant::now();
            let answer = http.get(&url).timeout(Duration::from_secs(1)).send().await;
            let ok = answer.is_ok_and(|a| a.status().is_success());
            if let Ok(mut probes) = record.lock() {
                probes.push((sent, ok));
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(20)) => {}
                _ = stopped.changed() => {}
            }
        }
    });
    (stop, probes)
}

/// Waits for the spike's sale (created after `began`) to have made a fifth of its orders, so
/// the fault lands while the drain works; returns then.
async fn struck_mid_drain(db: &PgPool, began: DateTime<Utc>, units: i64) -> anyhow::Result<Struck> {
    let give_up = Instant::now() + Duration::from_secs(90);
    let (sale, starts_at) = loop {
        let found: Option<(Uuid, DateTime<Utc>)> = sqlx::query_as(
            "select flash_sale_id, starts_at from flash_sales where created_at >= $1
             order by created_at desc limit 1",
        )
        .bind(began)
        .fetch_optional(db)
        .await?;
        if let Some(found) = found {
            break found;
        }
        anyhow::ensure!(Instant::now() < give_up, "the spike made no sale");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let enough = (units / 5).max(1);
    loop {
        let orders: i64 =
            sqlx::query_scalar("select count(*) from orders where flash_sale_id = $1")
                .bind(sale)
                .fetch_one(db)
                .await?;
        if orders >= enough {
            break;
        }
        anyhow::ensure!(
            Instant::now() < give_up,
            "the spike made {orders} orders, never {enough}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(Struck {
        at: Instant::now(),
        at_utc: Utc::now(),
        sale,
        starts_at,
    })
}

/// Injects `fault` and undoes it (restarts what it killed, restores what it cut). In
/// catalog-api's row the shoppers check out meanwhile; their outcome is returned.
async fn inject(
    stores: &Stores,
    parts: &mut Parts,
    fault: Fault,
    settings: &Settings,
    shoppers: Option<&Shoppers>,
) -> anyhow::Result<Option<super::checkouts::Outcome>> {
    match fault {
        Fault::KillWorker => {
            parts.worker.kill().await?;
            tokio::time::sleep(settings.worker_restart_after).await;
            parts.worker.restart(&parts.http).await?;
        }
        Fault::KillDoor => {
            parts.door.kill().await?;
            parts.door.restart(&parts.http).await?;
        }
        Fault::KillCatalog => {
            let shoppers = shoppers.context("catalog-api's row needs its shoppers")?;
            let checkouts = shoppers.run(Duration::from_secs(4), Duration::from_secs(30));
            let kill = async {
                tokio::time::sleep(Duration::from_secs(1)).await;
                parts.catalog.kill().await?;
                tokio::time::sleep(Duration::from_secs(1)).await;
                parts.catalog.restart(&parts.http).await
            };
            let (outcome, killed) = tokio::join!(checkouts, kill);
            killed?;
            return Ok(Some(outcome));
        }
        Fault::FlushRedis => {
            let mut redis = stores.redis.clone();
            redis::cmd("FLUSHALL")
                .query_async::<()>(&mut redis)
                .await
                .context("FLUSHALL")?;
        }
        Fault::CutNats => {
            parts.nats_proxy.cut();
            tokio::time::sleep(settings.outage).await;
            parts.nats_proxy.restore();
        }
        Fault::CutPostgres => {
            parts.pg_proxy.cut();
            tokio::time::sleep(settings.outage).await;
            parts.pg_proxy.restore();
        }
    }
    Ok(None)
}

/// The row's figures from the spike's report and PostgreSQL.
async fn measure(
    db: &PgPool,
    fault: Fault,
    report: &SpikeReport,
    struck: &Struck,
) -> anyhow::Result<Row> {
    let accepted = report.entries.statuses.get(&202).copied().unwrap_or(0);
    let (double_charges, mails_twice): (i64, i64) = sqlx::query_as(
        "select
           (select coalesce(sum(n - s.per_member_limit), 0)::bigint from
              (select o.member_id, count(*) as n from orders o join payments p using (order_id)
               where o.flash_sale_id = $1 and p.status = 'succeeded' group by o.member_id) as c,
              flash_sales s
            where s.flash_sale_id = $1 and n > s.per_member_limit),
           (select coalesce(sum(n - 1), 0)::bigint from
              (select count(*) as n from emails
               where status = 'sent'
                 and member_id in (select member_id from orders where flash_sale_id = $1)
               group by member_id, kind, subject having count(*) > 1) as m)",
    )
    .bind(report.sale_id)
    .fetch_one(db)
    .await?;
    let struck_after_start = signed_secs_utc(struck.at_utc, struck.starts_at);
    Ok(Row {
        fault,
        accepted,
        final_tickets: accepted.saturating_sub(report.unfinished),
        lost: report.unfinished,
        oversold: u64::try_from(report.check.live_units - report.check.quantity).unwrap_or(0),
        double_charges: u64::try_from(double_charges).unwrap_or(0),
        mails_twice: u64::try_from(mails_twice).unwrap_or(0),
        undersold: report.undersold_while_refused,
        door_back_secs: None,
        all_final_secs: report
            .all_final_ms
            .map(|ms| (ms / 1000.0 - struck_after_start).max(0.0)),
        checkouts: None,
        violations: report.check.violations.clone(),
    })
}

fn signed_secs_utc(at: DateTime<Utc>, from: DateTime<Utc>) -> f64 {
    (at - from).num_milliseconds() as f64 / 1000.0
}
