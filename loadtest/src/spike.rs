//! `loadtest spike`: a flash sale as it happens, against a running stack.
//!
//! Seeds buyers ([`crate::seed`]), has an admin create a product and a sale opening a few
//! seconds later through catalog-api, fires every buyer's entry at the start over C
//! connections, polls every queued ticket the way the waiting-room page does (`poll_after_ms`,
//! then long-polls with `If-None-Match`) until it is final, waits for payments to settle, and
//! runs the invariant checker. With `--baseline` the same buyers then buy the same number of
//! units through the synchronous `POST /orders`, so the queue's gain is a ratio from one run.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use flash_core::{
    auth::keys::JwtSigner,
    config::{PgArgs, RedisArgs},
    domain::{Role, TicketStatus},
    redis_model::Keys,
};
use http::Method;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::sync::{Mutex, Semaphore};
use uuid::Uuid;

use crate::{
    check::{CheckReport, check_sale},
    connections::Connections,
    fairness::{self, Arrival, Fairness},
    measure::{Summary, print_table, run_batch},
    seed::{self, Buyer},
    timeline::Timeline,
};

/// Options of the spike simulator.
#[derive(clap::Args)]
pub struct SpikeArgs {
    /// admission base URL.
    #[arg(long, env = "ADMISSION_URL", default_value = "http://127.0.0.1:8080")]
    pub admission_url: String,
    /// catalog-api base URL (the admin creates the product and sale there).
    #[arg(long, env = "CATALOG_URL", default_value = "http://127.0.0.1:8081")]
    pub catalog_url: String,
    /// Buyers entering the sale.
    #[arg(long, default_value_t = 10_000)]
    pub buyers: usize,
    /// Units on sale.
    #[arg(long, default_value_t = 500)]
    pub units: i64,
    /// Connections (requests in flight).
    #[arg(long, default_value_t = 256)]
    pub connections: usize,
    /// Seconds from creating the sale until it opens; the buyers arrive in the waiting room
    /// in between, so give large runs enough (about a second per 5,000 buyers).
    #[arg(long, default_value_t = 3)]
    pub start_in_secs: u64,
    /// Skip the arrival: no buyer has the waiting room open before the start, so the door
    /// sees every token for the first time in the rush and verifies it there.
    #[arg(long)]
    pub cold: bool,
    /// Spread the entries over this many seconds instead of firing them all at once.
    #[arg(long, default_value_t = 0.0)]
    pub ramp_secs: f64,
    /// Longest long-poll a poller asks for (`?wait=`).
    #[arg(long, default_value_t = 5)]
    pub long_poll_secs: u64,
    /// Give up waiting for tickets to become final after this many seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout_secs: u64,
    /// Give up waiting for payments to settle after this many seconds.
    #[arg(long, default_value_t = 60)]
    pub settle_timeout_secs: u64,
    /// Also buy the same units through `POST /orders` and compare.
    #[arg(long)]
    pub baseline: bool,
    /// Open a pre-queue: half the buyers enter it before the start and are drawn into a
    /// random order at the start, the rest arrive after; report the draw's fairness.
    #[arg(long)]
    pub prequeue: bool,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
    /// Key and claims the buyers' tokens are minted with.
    #[command(flatten)]
    pub mint: crate::seed::MintArgs,
    /// The database the services use.
    #[command(flatten)]
    pub pg: PgArgs,
    /// The Redis the services use (tickets live there).
    #[command(flatten)]
    pub redis: RedisArgs,
    /// Also write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Also draw admitted and drained per second as an SVG chart here.
    #[arg(long)]
    pub chart: Option<PathBuf>,
}

/// What one spike is: the part of [`SpikeArgs`] that is not about connecting.
#[derive(Debug, Clone)]
pub struct Plan {
    /// admission base URL.
    pub admission_url: String,
    /// catalog-api base URL.
    pub catalog_url: String,
    /// Buyers entering.
    pub buyers: usize,
    /// Units on sale.
    pub units: i64,
    /// Requests in flight.
    pub connections: usize,
    /// From creating the sale until it opens.
    pub start_in: Duration,
    /// Entries spread over this long.
    pub ramp: Duration,
    /// Longest long-poll.
    pub long_poll_secs: u64,
    /// Bound on waiting for final tickets.
    pub timeout: Duration,
    /// Bound on waiting for payments.
    pub settle_timeout: Duration,
    /// Run the synchronous baseline too.
    pub baseline: bool,
    /// Half the buyers enter a pre-queue before the start.
    pub prequeue: bool,
    /// Buyers open the waiting room (`GET /sales/{id}/tickets/mine`) before the start.
    pub arrive: bool,
    /// Draw progress bars.
    pub progress: bool,
}

impl TryFrom<&SpikeArgs> for Plan {
    type Error = anyhow::Error;

    fn try_from(args: &SpikeArgs) -> anyhow::Result<Self> {
        let ramp = Duration::try_from_secs_f64(args.ramp_secs)
            .map_err(|_| anyhow::anyhow!("--ramp-secs must be a finite number of seconds ≥ 0"))?;
        Ok(Self {
            admission_url: args.admission_url.trim_end_matches('/').to_owned(),
            catalog_url: args.catalog_url.trim_end_matches('/').to_owned(),
            buyers: args.buyers,
            units: args.units,
            connections: args.connections.max(1),
            start_in: Duration::from_secs(args.start_in_secs),
            ramp,
            long_poll_secs: args.long_poll_secs,
            timeout: Duration::from_secs(args.timeout_secs),
            settle_timeout: Duration::from_secs(args.settle_timeout_secs),
            baseline: args.baseline,
            prequeue: args.prequeue,
            arrive: !args.cold,
            progress: !args.quiet,
        })
    }
}

/// Everything a spike measured.
#[derive(Debug, Serialize)]
pub struct SpikeReport {
    /// The sale created for the run.
    pub sale_id: Uuid,
    /// Buyers and units.
    pub buyers: usize,
    /// Units on sale.
    pub units: i64,
    /// The buyers opening the waiting room before the start (absent with `--cold`).
    pub arrivals: Option<Summary>,
    /// The entries: throughput, latency, statuses.
    pub entries: Summary,
    /// Ticket polls sent.
    pub polls: u64,
    /// Polls per second over the polling phase.
    pub polls_per_second: f64,
    /// Final ticket statuses as the buyers saw them.
    pub outcomes: BTreeMap<String, u64>,
    /// Tickets that were not final when the run gave up (0 in a healthy run).
    pub unfinished: u64,
    /// Units still unsold after payments settled while buyers had been told `sold_out`: each
    /// could have gone to one of them (must be 0; declined payments give units back, and the
    /// sale's waitlist hands them on).
    pub undersold_while_refused: u64,
    /// From the sale's start until the last buyer saw a final ticket, in milliseconds.
    pub all_final_ms: Option<f64>,
    /// Orders per second from the sale's start until its units were sold (PostgreSQL clock).
    pub orders_per_second: Option<f64>,
    /// Admitted and drained in each second after the start.
    pub timeline: Timeline,
    /// The invariant check after payments settled.
    pub check: CheckReport,
    /// The synchronous design's run, with `--baseline`.
    pub baseline: Option<Baseline>,
    /// The pre-queue entries, with `--prequeue` (`entries` are then the later ones).
    pub prequeue_entries: Option<Summary>,
    /// How fair the pre-queue draw and the queue behind it were, with `--prequeue`.
    pub fairness: Option<Fairness>,
}

/// The naive design: every buyer calls `POST /orders`, which locks the product row.
#[derive(Debug, Serialize)]
pub struct Baseline {
    /// The order requests.
    pub orders: Summary,
    /// Units sold per second, until the `units`-th successful order.
    pub units_per_second: f64,
    /// Queue design's units per second divided by the baseline's.
    pub throughput_ratio: Option<f64>,
    /// Baseline p99 latency divided by the queue design's entry p99.
    pub p99_ratio: f64,
}

impl SpikeReport {
    /// True when every ticket became final, no unit was left unsold while buyers were
    /// refused, and no invariant broke.
    pub fn is_healthy(&self) -> bool {
        self.unfinished == 0
            && self.undersold_while_refused == 0
            && self.check.is_sound()
            && self.fairness.as_ref().is_none_or(Fairness::is_fair)
    }

    /// Prints the report as tables.
    pub fn print(&self) {
        println!();
        println!(
            "spike: sale {}, {} buyers, {} units",
            self.sale_id, self.buyers, self.units
        );
        let mut rows = vec![&self.entries];
        if let Some(p) = &self.prequeue_entries {
            rows.insert(0, p);
        }
        if let Some(a) = &self.arrivals {
            rows.insert(0, a);
        }
        if let Some(b) = &self.baseline {
            rows.push(&b.orders);
        }
        print_table(rows);
        let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.0} ms"));
        let rate = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.0}/s"));
        println!("polls: {} ({:.0}/s)", self.polls, self.polls_per_second);
        let outcomes: Vec<String> = self
            .outcomes
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        println!(
            "tickets: {}; not final: {}",
            outcomes.join(", "),
            self.unfinished
        );
        println!(
            "units left unsold while buyers were refused: {} (goal 0)",
            self.undersold_while_refused
        );
        println!(
            "every ticket final after: {}; orders drained: {}",
            ms(self.all_final_ms),
            rate(self.orders_per_second)
        );
        if let Some(b) = &self.baseline {
            println!(
                "baseline POST /orders: {:.0} units/s; queue ÷ baseline throughput: {}; baseline ÷ queue p99: {:.1}×",
                b.units_per_second,
                b.throughput_ratio
                    .map_or("-".to_owned(), |r| format!("{r:.1}×")),
                b.p99_ratio
            );
        }
        if let Some(f) = &self.fairness {
            println!(
                "pre-queue: {} buyers drawn with seed {}; later arrivals served ahead of the pre-queue: {}; later arrivals overtaken (order inversions): {}",
                f.prequeued,
                f.seed.map_or("-".to_owned(), |s| s.to_string()),
                f.ahead_of_prequeue,
                f.inversions
            );
        }
        self.check.print();
    }
}

/// The command: connects, runs, prints, writes JSON, fails on an unhealthy run.
///
/// # Errors
/// When a store or service cannot be reached, or the run was not healthy.
pub async fn run(args: SpikeArgs) -> anyhow::Result<()> {
    let plan = Plan::try_from(&args)?;
    let signer = args.mint.signer()?;
    let db = flash_core::db::connect(&args.pg).await?;
    let redis = flash_core::redis::connect(&args.redis).await?;
    let keys = Keys::new(&args.redis.redis_key_prefix);
    let report = run_with(&db, &redis, &keys, &signer, &plan).await?;
    report.print();
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.chart {
        let title = format!(
            "spike: {} buyers, {} units, sale {}",
            report.buyers, report.units, report.sale_id
        );
        report.timeline.write_svg(&title, path)?;
    }
    anyhow::ensure!(
        report.is_healthy(),
        "the spike was not healthy: {} tickets not final, {} units unsold while buyers were refused, {} invariant violation(s)",
        report.unfinished,
        report.undersold_while_refused,
        report.check.violations.len()
    );
    Ok(())
}

/// Runs one spike against the services in `plan`, with `db`/`redis` the stores they use.
///
/// # Errors
/// When seeding, creating the sale or reading the stores fails.
pub async fn run_with(
    db: &PgPool,
    redis: &flash_core::redis::Redis,
    keys: &Keys,
    signer: &JwtSigner,
    plan: &Plan,
) -> anyhow::Result<SpikeReport> {
    let run = Run::prepare(db, signer, plan).await?;
    let before = run.before_start(plan).await;
    let prequeued: Vec<Uuid> = before.queued.iter().map(|(_, ticket, _)| *ticket).collect();
    let rush = run.rush(db, plan, before.early, before.queued).await;

    let sale = run.sale;
    let orders_per_second = drain_rate(db, sale, run.starts_at, plan.units).await?;
    let timeline = Timeline::measure(db, sale, run.starts_at, &rush.admitted_ms).await?;
    run.say("waiting for payments to settle ...".to_owned());
    settle(db, sale, plan.settle_timeout).await?;
    let check = check_sale(db, Some(redis), keys, sale).await?;
    let fairness = if plan.prequeue {
        Some(fairness::measure(db, redis, keys, sale, &prequeued, &rush.arrivals).await?)
    } else {
        None
    };
    let baseline = if plan.baseline {
        Some(run.baseline(plan, &rush.entries, orders_per_second).await?)
    } else {
        None
    };
    Ok(SpikeReport {
        sale_id: sale,
        buyers: plan.buyers,
        units: plan.units,
        arrivals: before.waiting_room,
        entries: rush.entries,
        polls: rush.polls,
        polls_per_second: rush.polls_per_second,
        undersold_while_refused: undersold(check.quantity_left, &rush.outcomes),
        outcomes: rush.outcomes,
        unfinished: rush.unfinished,
        all_final_ms: rush.last_final,
        orders_per_second,
        timeline,
        check,
        baseline,
        prequeue_entries: before.prequeue_entries,
        fairness,
    })
}

/// Units that stayed unsold although buyers were refused: as many as are left, up to the
/// number refused (a unit can go to one refused buyer only).
fn undersold(quantity_left: i64, outcomes: &BTreeMap<String, u64>) -> u64 {
    let refused = outcomes
        .get(TicketStatus::SoldOut.as_str())
        .copied()
        .unwrap_or(0);
    u64::try_from(quantity_left).unwrap_or(0).min(refused)
}

/// One spike's parts: its buyers, clients, the sale it created and the progress bars.
struct Run {
    bars: MultiProgress,
    /// Names this run's members and products.
    tag: String,
    buyers: Arc<Vec<Buyer>>,
    client: reqwest::Client,
    shop: Shop,
    door: Connections,
    sale: Uuid,
    starts_at: DateTime<Utc>,
    progress: Bars,
}

/// What happened before the sale opened.
struct BeforeStart {
    /// The buyers opening the waiting room (absent with `--cold`).
    waiting_room: Option<Summary>,
    /// The entries into the pre-queue (with `--prequeue`).
    prequeue_entries: Option<Summary>,
    /// How many buyers entered before the start.
    early: usize,
    /// Their tickets, to follow.
    queued: Vec<Queued>,
}

/// What the rush from the start measured.
struct Rush {
    entries: Summary,
    outcomes: BTreeMap<String, u64>,
    unfinished: u64,
    last_final: Option<f64>,
    /// When each 202 came back, in ms after the start.
    admitted_ms: Vec<f64>,
    /// Each entry's send and answer times (with `--prequeue`, for fairness).
    arrivals: Vec<Arrival>,
    polls: u64,
    polls_per_second: f64,
}

impl Run {
    /// Seeds the buyers and an admin, connects, and has the admin create the product and the
    /// sale opening `start_in` from now.
    async fn prepare(db: &PgPool, signer: &JwtSigner, plan: &Plan) -> anyhow::Result<Self> {
        let bars = MultiProgress::with_draw_target(if plan.progress {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        });
        let tag = format!("spike-{}", Uuid::new_v4().simple());
        bars.println(format!("seeding {} buyers ...", plan.buyers))
            .unwrap_or(());
        let admin = seed::members(db, signer, &format!("{tag}-admin"), 1, Role::Admin)
            .await?
            .remove(0);
        let buyers = Arc::new(seed::members(db, signer, &tag, plan.buyers, Role::Buyer).await?);
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(plan.connections)
            .timeout(Duration::from_secs(plan.long_poll_secs + 30))
            .build()?;
        let shop = Shop {
            client: client.clone(),
            catalog: plan.catalog_url.clone(),
            admin: admin.token.clone(),
        };
        let door = Connections::to(&plan.admission_url, plan.connections).await?;
        let product = shop.product(&tag, plan.units).await?;
        let starts_at = Utc::now() + chrono::Duration::from_std(plan.start_in)?;
        // The pre-queue is open from creation until the start.
        let prequeue_secs = if plan.prequeue {
            i64::try_from(plan.start_in.as_secs())? + 60
        } else {
            0
        };
        let sale = shop
            .sale(product, plan.units, starts_at, prequeue_secs)
            .await?;
        bars.println(format!(
            "sale {sale}: {} units, opens at {starts_at}",
            plan.units
        ))
        .unwrap_or(());
        let progress = Bars {
            entered: bar(&bars, plan.buyers, "entries"),
            finals: bar(&bars, plan.buyers, "final  "),
            ordered: bar(&bars, usize::try_from(plan.units).unwrap_or(0), "orders "),
        };
        Ok(Self {
            bars,
            tag,
            buyers,
            client,
            shop,
            door,
            sale,
            starts_at,
            progress,
        })
    }

    /// A line above the progress bars.
    fn say(&self, line: String) {
        self.bars.println(line).unwrap_or(());
    }

    /// Until the start: the buyers open the waiting room, and with `--prequeue` the first
    /// half enters the pre-queue. Returns at the start.
    async fn before_start(&self, plan: &Plan) -> BeforeStart {
        let waiting_room = if plan.arrive {
            self.say(format!("{} buyers open the waiting room ...", plan.buyers));
            let summary = arrive_all(&self.door, plan, self.sale, &self.buyers).await;
            let late = Utc::now() - self.starts_at;
            if late > chrono::Duration::zero() {
                self.say(format!(
                    "warning: the buyers were still arriving {} ms after the start; give --start-in-secs more",
                    late.num_milliseconds()
                ));
            }
            Some(summary)
        } else {
            None
        };
        let early = if plan.prequeue { plan.buyers / 2 } else { 0 };
        let (prequeue_entries, queued) = if plan.prequeue {
            let (summary, queued, _) = enter_all(
                &self.door,
                plan,
                self.sale,
                &self.buyers,
                0..early,
                &self.progress,
                Instant::now(),
                None,
            )
            .await;
            (Some(summary), queued)
        } else {
            (None, Vec::new())
        };
        let wait = (self.starts_at - Utc::now()).to_std().unwrap_or_default();
        tokio::time::sleep(wait).await;
        BeforeStart {
            waiting_room,
            prequeue_entries,
            early,
            queued,
        }
    }

    /// From the start: the other buyers enter, then every queued ticket is followed until it
    /// is final (or the run gives up). Meanwhile the sale is ended once its units are sold for
    /// good (see [`end_when_sold`]), so that the buyers still on the waitlist learn it.
    async fn rush(&self, db: &PgPool, plan: &Plan, early: usize, mut queued: Vec<Queued>) -> Rush {
        let start = Instant::now();
        let arrivals: Mutex<Vec<Arrival>> = Mutex::default();
        let (entries, arrived, at_once) = enter_all(
            &self.door,
            plan,
            self.sale,
            &self.buyers,
            early..plan.buyers,
            &self.progress,
            start,
            Some(&arrivals),
        )
        .await;
        queued.extend(arrived);
        let mut outcomes = at_once.outcomes;
        let polling = Instant::now();
        let poll_count = Arc::new(AtomicU64::new(0));
        let polled = poll_all(
            &self.client,
            plan,
            &self.buyers,
            queued,
            &self.progress,
            start,
            &poll_count,
        );
        tokio::pin!(polled);
        let polled = tokio::select! {
            polled = &mut polled => polled,
            ended = end_when_sold(db, &self.shop, self.sale, plan.settle_timeout) => {
                if let Err(err) = ended {
                    self.say(format!("ending the sale failed: {err:#}"));
                }
                polled.await
            }
        };
        let polls = poll_count.load(Ordering::Relaxed);
        let polls_per_second = polls as f64 / polling.elapsed().as_secs_f64().max(1e-3);
        let mut unfinished = 0;
        let mut last_final = at_once.last_ms;
        for ticket in polled {
            match ticket {
                Some((status, at)) => {
                    *outcomes.entry(status).or_insert(0) += 1;
                    last_final = later(last_final, at);
                }
                None => unfinished += 1,
            }
        }
        for b in [
            &self.progress.entered,
            &self.progress.finals,
            &self.progress.ordered,
        ] {
            b.finish();
        }
        Rush {
            entries,
            outcomes,
            unfinished,
            last_final,
            admitted_ms: at_once.admitted_ms,
            arrivals: arrivals.into_inner(),
            polls,
            polls_per_second,
        }
    }

    /// With `--baseline`: the same buyers order as many units of a fresh product through the
    /// synchronous `POST /orders`.
    async fn baseline(
        &self,
        plan: &Plan,
        entries: &Summary,
        orders_per_second: Option<f64>,
    ) -> anyhow::Result<Baseline> {
        self.say(format!(
            "baseline: {} buyers order {} units through POST /orders ...",
            plan.buyers, plan.units
        ));
        let product = self
            .shop
            .product(&format!("{}-baseline", self.tag), plan.units)
            .await?;
        Ok(baseline(
            &self.client,
            plan,
            product,
            &self.buyers,
            entries,
            orders_per_second,
        )
        .await)
    }
}

/// The later of a moment that may not have happened yet and one that has.
fn later(a: Option<f64>, b: f64) -> Option<f64> {
    Some(a.map_or(b, |a| a.max(b)))
}

fn bar(bars: &MultiProgress, len: usize, label: &str) -> ProgressBar {
    let bar = bars.add(ProgressBar::new(len as u64));
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:40}] {pos}/{len} {per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(label.to_owned());
    bar
}

/// The admin side: catalog-api calls that set the sale up (and the chaos matrix's checkout
/// product).
pub(crate) struct Shop {
    pub(crate) client: reqwest::Client,
    /// catalog-api's base URL.
    pub(crate) catalog: String,
    /// An admin's access token.
    pub(crate) admin: String,
}

impl Shop {
    /// A product with `stock` units, its SKU made of `tag`.
    pub(crate) async fn product(&self, tag: &str, stock: i64) -> anyhow::Result<Uuid> {
        let sku: String = tag
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(60)
            .collect();
        let body = json!({"sku": sku, "name": "Load test sneaker", "price_cents": 12900,
                          "currency": "EUR", "stock": stock});
        self.create("products", body).await
    }

    async fn sale(
        &self,
        product: Uuid,
        units: i64,
        starts_at: DateTime<Utc>,
        prequeue_secs: i64,
    ) -> anyhow::Result<Uuid> {
        let body = json!({"product_id": product, "price_cents": 9900, "quantity": units,
                          "per_member_limit": 1, "starts_at": starts_at,
                          "ends_at": starts_at + chrono::Duration::hours(1),
                          "prequeue_secs": prequeue_secs});
        self.create("flash-sales", body).await
    }

    /// Ends `sale` now (`POST /flash-sales/{id}/end`). Ending is idempotent, so a transport
    /// error or a 5xx (catalog-api restarting, as in the chaos matrix) is retried for a while.
    async fn end(&self, sale: Uuid) -> anyhow::Result<()> {
        let give_up = Instant::now() + Duration::from_secs(20);
        loop {
            let sent = self
                .client
                .post(format!("{}/flash-sales/{sale}/end", self.catalog))
                .bearer_auth(&self.admin)
                .send()
                .await;
            let retry = match &sent {
                Ok(response) if response.status().is_success() => return Ok(()),
                Ok(response) => response.status().is_server_error(),
                Err(_) => true,
            };
            if !retry || Instant::now() >= give_up {
                let response =
                    sent.with_context(|| format!("ending sale {sale} at {}", self.catalog))?;
                bail!(
                    "ending sale {sale}: catalog-api answered {}",
                    response.status()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn create(&self, what: &str, body: Value) -> anyhow::Result<Uuid> {
        let response = self
            .client
            .post(format!("{}/{what}", self.catalog))
            .bearer_auth(&self.admin)
            .json(&body)
            .send()
            .await
            .with_context(|| format!("creating {what} at {}", self.catalog))?;
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("creating {what}: catalog-api answered {status}: {answer}");
        }
        answer["id"]
            .as_str()
            .and_then(|id| id.parse().ok())
            .with_context(|| format!("creating {what}: no id in {answer}"))
    }
}

/// The progress bars of a run.
struct Bars {
    entered: ProgressBar,
    finals: ProgressBar,
    ordered: ProgressBar,
}

/// Tickets that were final as soon as the buyer entered (sold out, turned away).
#[derive(Default)]
struct AtOnce {
    outcomes: BTreeMap<String, u64>,
    last_ms: Option<f64>,
    /// When each 202 came back, in ms after the start (the timeline's admissions).
    admitted_ms: Vec<f64>,
}

/// A ticket still to follow: the buyer's index, its id, and when to poll next.
type Queued = (usize, Uuid, u64);

/// Fires the entries of the buyers in `who`; returns the summary, the queued tickets, and the
/// tickets final at once. With `arrivals`, each ticket's send and answer times are recorded.
#[allow(clippy::too_many_arguments)]
async fn enter_all(
    door: &Connections,
    plan: &Plan,
    sale: Uuid,
    buyers: &Arc<Vec<Buyer>>,
    who: std::ops::Range<usize>,
    progress: &Bars,
    start: Instant,
    arrivals: Option<&Mutex<Vec<Arrival>>>,
) -> (Summary, Vec<Queued>, AtOnce) {
    let queued: Arc<Mutex<Vec<Queued>>> = Arc::default();
    let done: Arc<Mutex<AtOnce>> = Arc::default();
    let spread = plan.ramp.as_secs_f64() / who.len().max(1) as f64;
    let first = who.start;
    let path = format!("/sales/{sale}/tickets");
    let summary = run_batch(
        "POST /sales/{id}/tickets",
        who.len(),
        plan.connections,
        plan.timeout,
        |n| {
            let i = first + n;
            let (path, token) = (&path, &buyers[i].token);
            let (queued, done) = (Arc::clone(&queued), Arc::clone(&done));
            async move {
                if spread > 0.0 {
                    tokio::time::sleep_until(
                        (start + Duration::from_secs_f64(spread * n as f64)).into(),
                    )
                    .await;
                }
                let sent_ms = start.elapsed().as_secs_f64() * 1000.0;
                let Ok(answer) = door.send(Method::POST, path, token).await else {
                    progress.entered.inc(1);
                    return 0;
                };
                let status = answer.status;
                let body: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
                progress.entered.inc(1);
                let ticket = body["ticket_id"].as_str().and_then(|t| t.parse().ok());
                if let (Some(arrivals), Some(ticket)) = (arrivals, ticket) {
                    arrivals.lock().await.push(Arrival {
                        ticket,
                        sent_ms,
                        answered_ms: start.elapsed().as_secs_f64() * 1000.0,
                    });
                }
                if status == 202 {
                    let at = start.elapsed().as_secs_f64() * 1000.0;
                    done.lock().await.admitted_ms.push(at);
                }
                match (ticket, body["poll_after_ms"].as_u64()) {
                    (Some(ticket), Some(after)) => queued.lock().await.push((i, ticket, after)),
                    (Some(_), None) => {
                        let at = start.elapsed().as_secs_f64() * 1000.0;
                        let state = body["status"].as_str().unwrap_or("unknown").to_owned();
                        let mut done = done.lock().await;
                        *done.outcomes.entry(state).or_insert(0) += 1;
                        done.last_ms = later(done.last_ms, at);
                        progress.finals.inc(1);
                    }
                    // No ticket (429, 503, …): that buyer is turned away, which is final too.
                    (None, _) => {
                        let mut done = done.lock().await;
                        *done.outcomes.entry(format!("http {status}")).or_insert(0) += 1;
                        progress.finals.inc(1);
                    }
                }
                status
            }
        },
    )
    .await;
    let queued = std::mem::take(&mut *queued.lock().await);
    let at_once = std::mem::take(&mut *done.lock().await);
    (summary, queued, at_once)
}

/// Has every buyer open the waiting room: the page asks for the buyer's ticket in the sale
/// (none yet, 404), which is also when the door verifies their token.
async fn arrive_all(
    door: &Connections,
    plan: &Plan,
    sale: Uuid,
    buyers: &Arc<Vec<Buyer>>,
) -> Summary {
    let path = format!("/sales/{sale}/tickets/mine");
    run_batch(
        "GET /sales/{id}/tickets/mine (arrival)",
        buyers.len(),
        plan.connections,
        plan.timeout,
        |i| {
            let (path, token) = (&path, &buyers[i].token);
            async move {
                door.send(Method::GET, path, token)
                    .await
                    .map_or(0, |a| a.status)
            }
        },
    )
    .await
}

/// Follows every queued ticket to its end, at most `connections` requests in flight. Each
/// ticket ends as `Some((final status, ms after start))`, or `None` when the run gave up.
async fn poll_all(
    client: &reqwest::Client,
    plan: &Plan,
    buyers: &Arc<Vec<Buyer>>,
    queued: Vec<Queued>,
    progress: &Bars,
    start: Instant,
    polls: &Arc<AtomicU64>,
) -> Vec<Option<(String, f64)>> {
    let permits = Arc::new(Semaphore::new(plan.connections));
    let give_up = tokio::time::Instant::now() + plan.timeout;
    let mut tasks = tokio::task::JoinSet::new();
    for (buyer, ticket, first_after) in queued {
        let follow = Follow {
            client: client.clone(),
            url: format!("{}/tickets/{ticket}", plan.admission_url),
            token: buyers[buyer].token.clone(),
            long_poll_secs: plan.long_poll_secs,
            permits: Arc::clone(&permits),
            polls: Arc::clone(polls),
        };
        let (finals, ordered) = (progress.finals.clone(), progress.ordered.clone());
        tasks.spawn(async move {
            let end = tokio::time::timeout_at(give_up, follow.until_final(first_after))
                .await
                .ok()?;
            // The buyer got an order; how its payment ended is in the payment figures.
            let got_order = TicketStatus::parse(&end).is_some_and(TicketStatus::got_order);
            let end = if got_order {
                TicketStatus::Ordered.as_str().to_owned()
            } else {
                end
            };
            finals.inc(1);
            if got_order {
                ordered.inc(1);
            }
            Some((end, start.elapsed().as_secs_f64() * 1000.0))
        });
    }
    let mut ends = Vec::new();
    while let Some(end) = tasks.join_next().await {
        ends.push(end.unwrap_or(None));
    }
    ends
}

/// One buyer's waiting-room loop.
struct Follow {
    client: reqwest::Client,
    url: String,
    token: String,
    long_poll_secs: u64,
    permits: Arc<Semaphore>,
    polls: Arc<AtomicU64>,
}

impl Follow {
    /// Polls as the page does: wait `poll_after_ms`, then ask, long-polling on the last `ETag`
    /// so an unchanged ticket costs one request per long-poll. Transport errors back off.
    async fn until_final(&self, first_after: u64) -> String {
        let mut after = first_after;
        let mut etag: Option<String> = None;
        loop {
            tokio::time::sleep(Duration::from_millis(after)).await;
            let Ok(_permit) = self.permits.acquire().await else {
                return "unknown".to_owned();
            };
            let mut request = self.client.get(&self.url).bearer_auth(&self.token);
            if let Some(tag) = &etag {
                request = request
                    .query(&[("wait", self.long_poll_secs)])
                    .header(reqwest::header::IF_NONE_MATCH, tag);
            }
            self.polls.fetch_add(1, Ordering::Relaxed);
            let Ok(response) = request.send().await else {
                after = 1000;
                continue;
            };
            if response.status() == reqwest::StatusCode::NOT_MODIFIED {
                after = 0;
                continue;
            }
            if !response.status().is_success() {
                after = 1000;
                continue;
            }
            etag = response
                .headers()
                .get(reqwest::header::ETAG)
                .and_then(|t| t.to_str().ok())
                .map(str::to_owned);
            let body: Value = response.json().await.unwrap_or(Value::Null);
            match body["poll_after_ms"].as_u64() {
                Some(next) => after = next,
                None => return body["status"].as_str().unwrap_or("unknown").to_owned(),
            }
        }
    }
}

/// Orders per second from the sale's start until its units were sold (the `units`-th order;
/// the last order when fewer were made), by PostgreSQL's clock. Counting to the last order
/// instead would time the resale of units that declined payments returned, not the drain.
async fn drain_rate(
    db: &PgPool,
    sale: Uuid,
    starts_at: DateTime<Utc>,
    units: i64,
) -> anyhow::Result<Option<f64>> {
    let (count, sold_at): (i64, Option<DateTime<Utc>>) = sqlx::query_as(
        "select count(*), coalesce(
                (select created_at from orders where flash_sale_id = $1
                 order by created_at offset $2 - 1 limit 1),
                max(created_at))
         from orders where flash_sale_id = $1",
    )
    .bind(sale)
    .bind(units.max(1))
    .fetch_one(db)
    .await?;
    Ok(sold_at.and_then(|at| {
        let secs = (at - starts_at).to_std().ok()?.as_secs_f64();
        (secs > 0.0).then(|| count.min(units) as f64 / secs)
    }))
}

/// Ends the sale through catalog-api once its units are sold for good (none left and no
/// payment pending, so none can come back), or after `bound` whatever is left: until then a
/// unit that comes back goes to a waitlisted buyer, and a waitlisted ticket is final only when
/// the sale ends (`sold_out`).
async fn end_when_sold(
    db: &PgPool,
    shop: &Shop,
    sale: Uuid,
    bound: Duration,
) -> anyhow::Result<()> {
    let give_up = Instant::now() + bound;
    loop {
        let (left, pending): (i32, i64) = sqlx::query_as(
            "select quantity_left, (select count(*) from orders
                                    where flash_sale_id = $1 and status = 'pending_payment')
             from flash_sales where flash_sale_id = $1",
        )
        .bind(sale)
        .fetch_one(db)
        .await?;
        if (left == 0 && pending == 0) || Instant::now() >= give_up {
            return shop.end(sale).await;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits (bounded) until no order of the sale awaits its payment.
async fn settle(db: &PgPool, sale: Uuid, bound: Duration) -> anyhow::Result<()> {
    let give_up = Instant::now() + bound;
    loop {
        let pending: i64 = sqlx::query_scalar(
            "select count(*) from orders where flash_sale_id = $1 and status = 'pending_payment'",
        )
        .bind(sale)
        .fetch_one(db)
        .await?;
        if pending == 0 || Instant::now() >= give_up {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The same buyers buy `units` of a product through the synchronous path.
async fn baseline(
    client: &reqwest::Client,
    plan: &Plan,
    product: Uuid,
    buyers: &Arc<Vec<Buyer>>,
    queue_entries: &Summary,
    queue_orders_per_second: Option<f64>,
) -> Baseline {
    let start = Instant::now();
    let sales: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let orders = run_batch(
        "POST /orders (baseline)",
        plan.buyers,
        plan.connections,
        plan.timeout,
        |i| {
            let request = client
                .post(format!("{}/orders", plan.catalog_url))
                .bearer_auth(&buyers[i].token)
                .header("Idempotency-Key", Uuid::new_v4().to_string())
                .json(&json!({"items": [{"product_id": product, "quantity": 1}]}));
            let sales = Arc::clone(&sales);
            async move {
                let status = request.send().await.map_or(0, |r| r.status().as_u16());
                if status == 201 {
                    sales.lock().await.push(start.elapsed());
                }
                status
            }
        },
    )
    .await;
    // As for the queue: until the units were sold, not until resold returns.
    let mut sales = std::mem::take(&mut *sales.lock().await);
    sales.sort();
    let sold = sales
        .len()
        .min(usize::try_from(plan.units).unwrap_or(usize::MAX));
    let sold_after = sold
        .checked_sub(1)
        .and_then(|i| sales.get(i))
        .map_or(1e-3, |at| at.as_secs_f64().max(1e-3));
    let units_per_second = sold as f64 / sold_after;
    Baseline {
        throughput_ratio: queue_orders_per_second.map(|q| q / units_per_second.max(1e-9)),
        p99_ratio: orders.p99_ms / queue_entries.p99_ms.max(1e-3),
        units_per_second,
        orders,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undersold_counts_units_left_up_to_the_buyers_refused() {
        let outcomes = |sold_out: u64| {
            BTreeMap::from([
                ("ordered".to_owned(), 100),
                ("sold_out".to_owned(), sold_out),
            ])
        };
        assert_eq!(undersold(3, &outcomes(10)), 3);
        assert_eq!(
            undersold(30, &outcomes(10)),
            10,
            "one unit per refused buyer"
        );
        assert_eq!(undersold(3, &outcomes(0)), 0, "no one was refused");
        assert_eq!(undersold(0, &outcomes(10)), 0, "every unit sold");
        assert_eq!(undersold(3, &BTreeMap::new()), 0);
    }
}
