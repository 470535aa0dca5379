//! `loadtest drain`: how fast worker processes turn queued tickets into orders.
//!
//! For each combination of worker processes and batch size it creates a throwaway database
//! (`flash_bench_<id>`, dropped afterwards) with one sale and as many buyers as tickets, queues
//! every ticket as the front door would, starts the real `workers` binary that many times on
//! NATS names of its own (so no other worker sees the tickets), and times the drain until every
//! unit is ordered. Then, with the queue empty, it publishes more tickets at a steady rate and
//! measures each one's latency from its publish to its order.

use std::{
    collections::HashMap,
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::Context;
use flash_core::{
    config::{NatsArgs, PgArgs, RedisArgs},
    domain::TicketId,
    jobs::TicketMessage,
    nats::Subjects,
};
use futures::StreamExt;
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::measure::{Recorder, Summary};

/// Options of the drain benchmark.
#[derive(clap::Args)]
pub struct DrainArgs {
    /// Tickets queued per run (every one of them gets a unit).
    #[arg(long, default_value_t = 20_000)]
    tickets: i64,
    /// Batch sizes to try.
    #[arg(long, value_delimiter = ',', default_value = "1,64,256")]
    batch_sizes: Vec<usize>,
    /// Numbers of worker processes to try.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    processes: Vec<usize>,
    /// The workers binary to start.
    #[arg(long, default_value = "target/release/workers")]
    workers_bin: PathBuf,
    /// What the started workers do (their `WORKER_ROLES`). Unset, they do everything, so
    /// payments and mail compete with the drain as in a one-process deployment; `drain`
    /// measures the drain alone, as when payments and mail run on processes of their own.
    #[arg(long)]
    worker_roles: Option<String>,
    /// Tickets published at `--paced-rate` after the drain, whose latency from publish to
    /// order is measured (0 skips it).
    #[arg(long, default_value_t = 2_000)]
    paced_tickets: usize,
    /// Tickets per second of the paced phase.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    paced_rate: u32,
    /// Give up on a run after this many seconds.
    #[arg(long, default_value_t = 180)]
    run_timeout_secs: u64,
    #[command(flatten)]
    pg: PgArgs,
    #[command(flatten)]
    redis: RedisArgs,
    #[command(flatten)]
    nats: NatsArgs,
    /// Also write the figures as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Serialize)]
struct Run {
    processes: usize,
    batch_size: usize,
    orders: i64,
    seconds: f64,
    orders_per_second: f64,
    /// Orders paid or cancelled per second, first order to last settlement (when the workers
    /// run payments).
    settled_per_second: Option<f64>,
    /// Publish to order of the paced tickets: the latency while the queue keeps up.
    paced: Option<Summary>,
}

/// Runs the drain benchmark and prints its table.
///
/// # Errors
/// When a service or store cannot be reached.
pub async fn run(args: DrainArgs) -> anyhow::Result<()> {
    let mut runs = Vec::new();
    for &processes in &args.processes {
        for &batch in &args.batch_sizes {
            eprintln!(
                "{processes} process(es), batch {batch}: queueing {} tickets ...",
                args.tickets
            );
            runs.push(one_run(&args, processes, batch).await?);
        }
    }
    println!(
        "{:>9} {:>6} {:>8} {:>9} {:>10} {:>10} {:>24}",
        "processes",
        "batch",
        "orders",
        "seconds",
        "orders/s",
        "settled/s",
        format!("publish→order at {}/s", args.paced_rate)
    );
    for run in &runs {
        println!(
            "{:>9} {:>6} {:>8} {:>9.2} {:>10.0} {:>10} {:>24}",
            run.processes,
            run.batch_size,
            run.orders,
            run.seconds,
            run.orders_per_second,
            run.settled_per_second
                .map_or("-".to_owned(), |r| format!("{r:.0}")),
            run.paced.as_ref().map_or("-".to_owned(), |p| format!(
                "p50 {:.1} p99 {:.1} ms",
                p.p50_ms, p.p99_ms
            ))
        );
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&runs)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

async fn one_run(args: &DrainArgs, processes: usize, batch: usize) -> anyhow::Result<Run> {
    let id = Uuid::new_v4().simple().to_string();
    let admin = flash_core::db::connect(&args.pg).await?;
    let database = format!("flash_bench_{id}");
    sqlx::query(sqlx::AssertSqlSafe(format!("create database {database}")))
        .execute(&admin)
        .await?;
    let url = database_url(&args.pg.database_url, &database);
    let outcome = async {
        let mut pg = args.pg.clone();
        pg.database_url.clone_from(&url);
        let db = flash_core::db::connect(&pg).await?;
        flash_core::db::migrate(&db).await?;
        let paced = i64::try_from(args.paced_tickets)?;
        let sale = seed(&db, args.tickets + paced).await?;
        let mut nats = args.nats.clone();
        nats.nats_subject_prefix = format!("bench{id}.");
        nats.nats_flash_stream = format!("FLASH_BENCH_{id}");
        nats.nats_jobs_stream = format!("JOBS_BENCH_{id}");
        let client = flash_core::nats::connect(&nats, "loadtest").await?;
        let js = flash_core::nats::jetstream(client, &nats);
        flash_core::nats::ensure_flash_queue(&js, &nats).await?;
        let mut members: Vec<Uuid> = sqlx::query_scalar("select member_id from members")
            .fetch_all(&db)
            .await?;
        let paced_members = members.split_off(usize::try_from(args.tickets)?);
        queue_tickets(&js, &nats, sale, members).await?;

        let started = Instant::now();
        let mut children = Vec::new();
        for _ in 0..processes {
            children.push(start_worker(args, &url, &nats, &id, batch)?);
        }
        let deadline = started + Duration::from_secs(args.run_timeout_secs);
        let orders = orders_reaching(&db, args.tickets, deadline).await?;
        // The drain itself: from the first order's transaction to the last, without the time
        // the processes took to start and connect.
        let span: Option<f64> = sqlx::query_scalar(
            "select extract(epoch from max(created_at) - min(created_at))::float8 from orders",
        )
        .fetch_one(&db)
        .await?;
        let seconds = span
            .filter(|s| *s > 0.0)
            .unwrap_or_else(|| started.elapsed().as_secs_f64());
        let pays = args
            .worker_roles
            .as_deref()
            .is_none_or(|roles| roles.split(',').any(|r| r.trim() == "payments"));
        let settled_per_second = if pays {
            settle_rate(&db, orders, deadline).await?
        } else {
            None
        };
        let paced = if paced_members.is_empty() {
            None
        } else {
            let first_seq = usize::try_from(args.tickets)? + 1;
            let published =
                publish_paced(&js, &nats, sale, paced_members, first_seq, args.paced_rate).await?;
            orders_reaching(&db, args.tickets + paced, deadline).await?;
            Some(publish_to_order(&db, &published).await?)
        };
        for mut child in children {
            child.kill().await.ok();
        }
        db.close().await;
        for stream in [
            nats.nats_flash_stream.clone(),
            format!("{}_DEAD", nats.nats_flash_stream),
            flash_core::nats::events_stream_name(&nats),
            nats.nats_jobs_stream.clone(),
        ] {
            let _ = js.delete_stream(stream).await;
        }
        #[allow(clippy::cast_precision_loss)]
        let orders_per_second = orders as f64 / seconds;
        anyhow::Ok(Run {
            processes,
            batch_size: batch,
            orders,
            seconds,
            orders_per_second,
            settled_per_second,
            paced,
        })
    }
    .await;
    // The run's database goes whatever happened (workers were killed above).
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "drop database if exists {database} with (force)"
    )))
    .execute(&admin)
    .await?;
    clear_redis(&args.redis, &id).await?;
    outcome
}

/// Waits until there are `count` orders, or `deadline`; returns how many there are.
async fn orders_reaching(db: &PgPool, count: i64, deadline: Instant) -> anyhow::Result<i64> {
    loop {
        let orders: i64 = sqlx::query_scalar("select count(*) from orders")
            .fetch_one(db)
            .await?;
        if orders >= count || Instant::now() > deadline {
            return Ok(orders);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until every order is paid or cancelled; returns how many settled per second from
/// the first order to the last settlement, or `None` when `deadline` came first.
async fn settle_rate(db: &PgPool, orders: i64, deadline: Instant) -> anyhow::Result<Option<f64>> {
    loop {
        let settled: i64 =
            sqlx::query_scalar("select count(*) from orders where status <> 'pending_payment'")
                .fetch_one(db)
                .await?;
        if settled >= orders {
            break;
        }
        if Instant::now() > deadline {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let span: Option<f64> = sqlx::query_scalar(
        "select extract(epoch from max(status_changed_at) - min(created_at))::float8 from orders",
    )
    .fetch_one(db)
    .await?;
    #[allow(clippy::cast_precision_loss)]
    Ok(span.filter(|s| *s > 0.0).map(|s| orders as f64 / s))
}

/// `url` with its database replaced.
fn database_url(url: &str, database: &str) -> String {
    let base = url.split('?').next().unwrap_or(url);
    match base.rsplit_once('/') {
        Some((server, _)) => format!("{server}/{database}"),
        None => format!("{base}/{database}"),
    }
}

/// One sale with a unit per ticket, and as many buyers.
async fn seed(db: &PgPool, tickets: i64) -> anyhow::Result<Uuid> {
    let product = Uuid::new_v4();
    let sale = Uuid::now_v7();
    sqlx::query("insert into products (product_id, sku, name, price_cents, currency, stock) values ($1, 'BENCH', 'Bench', 100, 'EUR', 0)")
        .bind(product)
        .execute(db)
        .await?;
    sqlx::query(
        "insert into flash_sales (flash_sale_id, product_id, price_cents, currency, quantity, quantity_left, starts_at, ends_at)
         values ($1, $2, 100, 'EUR', $3, $3, now(), now() + interval '1 hour')",
    )
    .bind(sale)
    .bind(product)
    .bind(i32::try_from(tickets)?)
    .execute(db)
    .await?;
    sqlx::query(
        "insert into members (member_id, email, password_hash, name)
         select gen_random_uuid(), 'bench' || n || '@bench.example', 'not a login', 'Bench'
         from generate_series(1, $1) as n",
    )
    .bind(tickets)
    .execute(db)
    .await?;
    Ok(sale)
}

/// Publishes one ticket for each of `members`, as the door would, many acks in flight.
async fn queue_tickets(
    js: &async_nats::jetstream::Context,
    nats: &NatsArgs,
    sale: Uuid,
    members: Vec<Uuid>,
) -> anyhow::Result<()> {
    let subject = Subjects::new(&nats.nats_subject_prefix).flash_tickets(sale);
    let mut publishes = futures::stream::iter(members.into_iter().enumerate())
        .map(|(i, member)| publish_ticket(js, &subject, sale, member, i + 1))
        .buffer_unordered(512);
    while let Some(outcome) = publishes.next().await {
        outcome?;
    }
    Ok(())
}

/// Publishes one ticket for each of `members` at `rate` per second, numbered on from
/// `first_seq` (after the tickets queued before them); returns each ticket with when its
/// publish was acked (Unix milliseconds).
async fn publish_paced(
    js: &async_nats::jetstream::Context,
    nats: &NatsArgs,
    sale: Uuid,
    members: Vec<Uuid>,
    first_seq: usize,
    rate: u32,
) -> anyhow::Result<Vec<(Uuid, f64)>> {
    // Ten rounds a second: a timer per ticket would be coarser than the rates asked for.
    let per_round = usize::try_from(rate.div_ceil(10))?;
    let mut rounds = tokio::time::interval(Duration::from_millis(100));
    let subject = Subjects::new(&nats.nats_subject_prefix).flash_tickets(sale);
    let mut published = Vec::with_capacity(members.len());
    for (round, chunk) in members.chunks(per_round).enumerate() {
        rounds.tick().await;
        let sent = chunk.iter().enumerate().map(|(i, member)| {
            publish_ticket(
                js,
                &subject,
                sale,
                *member,
                first_seq + round * per_round + i,
            )
        });
        for outcome in futures::future::join_all(sent).await {
            published.push(outcome?);
        }
    }
    Ok(published)
}

/// Publishes one ticket of `member` with sequence number `seq` and waits for its ack; returns
/// its id and when it was acked (Unix milliseconds).
async fn publish_ticket(
    js: &async_nats::jetstream::Context,
    subject: &str,
    sale: Uuid,
    member: Uuid,
    seq: usize,
) -> anyhow::Result<(Uuid, f64)> {
    let ticket = TicketMessage {
        ticket_id: TicketId::new(),
        sale_id: sale.into(),
        member_id: member.into(),
        seq: i64::try_from(seq)?,
        admitted_at_ms: chrono::Utc::now().timestamp_millis(),
    };
    let payload = serde_json::to_vec(&ticket)?;
    flash_core::nats::publish_durably(
        js,
        subject.to_owned(),
        &ticket.ticket_id.to_string(),
        payload.into(),
        None,
    )
    .await?;
    #[allow(clippy::cast_precision_loss)]
    let acked_ms = chrono::Utc::now().timestamp_micros() as f64 / 1000.0;
    Ok((ticket.ticket_id.get(), acked_ms))
}

/// Each published ticket's latency from its ack to its order's transaction (the order's
/// `created_at`; the commit follows within a few milliseconds).
async fn publish_to_order(db: &PgPool, published: &[(Uuid, f64)]) -> anyhow::Result<Summary> {
    let tickets: Vec<Uuid> = published.iter().map(|(t, _)| *t).collect();
    let ordered: HashMap<Uuid, f64> = sqlx::query_as(
        "select ticket_id, extract(epoch from created_at)::float8 * 1000 from orders
         where ticket_id = any($1)",
    )
    .bind(&tickets)
    .fetch_all(db)
    .await?
    .into_iter()
    .collect();
    let mut recorder = Recorder::default();
    for (ticket, acked_ms) in published {
        if let Some(ordered_ms) = ordered.get(ticket) {
            let latency = Duration::from_secs_f64(((ordered_ms - acked_ms) / 1000.0).max(0.0));
            recorder.record(200, latency);
        }
    }
    let first = published.first().map_or(0.0, |(_, at)| *at);
    let last = published.last().map_or(0.0, |(_, at)| *at);
    Ok(recorder.summary(
        "publish → order",
        Duration::from_secs_f64(((last - first) / 1000.0).max(1e-3)),
    ))
}

fn start_worker(
    args: &DrainArgs,
    url: &str,
    nats: &NatsArgs,
    id: &str,
    batch: usize,
) -> anyhow::Result<tokio::process::Child> {
    let mut command = tokio::process::Command::new(&args.workers_bin);
    if let Some(roles) = &args.worker_roles {
        command.env("WORKER_ROLES", roles);
    }
    command
        .env("DATABASE_URL", url)
        .env("REDIS_URL", &args.redis.redis_url)
        .env("REDIS_KEY_PREFIX", format!("bench:{id}:"))
        .env("NATS_URL", &nats.nats_url)
        .env("NATS_SUBJECT_PREFIX", &nats.nats_subject_prefix)
        .env("NATS_FLASH_STREAM", &nats.nats_flash_stream)
        .env("NATS_JOBS_STREAM", &nats.nats_jobs_stream)
        .env("WORKERS_ADDR", "127.0.0.1:0")
        .env("DRAIN_BATCH_SIZE", batch.to_string())
        .env(
            "MAIL_DIR",
            std::env::temp_dir().join(format!("bench-mail-{id}")),
        )
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| {
            format!(
                "starting {} (build it with cargo build --release -p workers)",
                args.workers_bin.display()
            )
        })
}

async fn clear_redis(redis: &RedisArgs, id: &str) -> anyhow::Result<()> {
    let mut conn = flash_core::redis::connect(redis).await?;
    let pattern = format!("bench:{id}:*");
    let keys = flash_core::redis::scan_keys(&conn, &pattern).await?;
    for chunk in keys.chunks(1000) {
        redis::cmd("DEL")
            .arg(chunk)
            .query_async::<()>(&mut conn)
            .await?;
    }
    Ok(())
}
