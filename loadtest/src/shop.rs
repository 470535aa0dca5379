//! `loadtest shop`: ordinary shopping at a steady rate, for catalog-api and member-api.
//!
//! Open loop: requests start at the target rate whether or not earlier ones have answered (as
//! real shoppers do), so a slow service shows up as latency and not as a politely lower rate.
//! When `max_in_flight` requests are already waiting, the next one is counted as skipped
//! instead of piling up without bound. The mix per 20 requests: 10 product listings (some with
//! a text filter), 6 product reads, 1 regular order, 1 cart checkout (a line put in the cart,
//! then the checkout, timed together), 2 profile reads.

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use flash_core::{config::PgArgs, domain::Role};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::{Mutex, Semaphore};
use uuid::Uuid;

use crate::{
    measure::{Recorder, Summary, print_table},
    seed,
};

/// Options of the shopping load.
#[derive(clap::Args)]
pub struct ShopArgs {
    /// catalog-api base URL.
    #[arg(long, env = "CATALOG_URL", default_value = "http://127.0.0.1:8081")]
    pub catalog_url: String,
    /// member-api base URL.
    #[arg(long, env = "MEMBER_URL", default_value = "http://127.0.0.1:8082")]
    pub member_url: String,
    /// Requests per second, all kinds together.
    #[arg(long, default_value_t = 500)]
    pub rate: u32,
    /// How long to shop, in seconds.
    #[arg(long, default_value_t = 30)]
    pub duration_secs: u64,
    /// Shoppers (seeded members) sharing the load.
    #[arg(long, default_value_t = 500)]
    pub shoppers: usize,
    /// Products to create for them.
    #[arg(long, default_value_t = 50)]
    pub products: usize,
    /// Requests waiting at once before new ones are skipped.
    #[arg(long, default_value_t = 512)]
    pub max_in_flight: usize,
    /// Key and claims the buyers' tokens are minted with.
    #[command(flatten)]
    pub mint: crate::seed::MintArgs,
    /// The database the services use (shoppers are seeded there).
    #[command(flatten)]
    pub pg: PgArgs,
    /// Also write the figures as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// The kinds of request in the mix.
#[derive(Clone, Copy)]
enum Kind {
    Browse,
    Product,
    Order,
    Checkout,
    Profile,
}

const KINDS: [(Kind, &str); 5] = [
    (Kind::Browse, "GET /products"),
    (Kind::Product, "GET /products/{id}"),
    (Kind::Order, "POST /orders"),
    (Kind::Checkout, "PUT /cart/items + checkout"),
    (Kind::Profile, "GET /members/me"),
];

impl Kind {
    /// The `i`-th request of the run: 10 browse, 6 product, 1 order, 1 checkout, 2 profile
    /// per 20.
    fn of(i: u64) -> Self {
        match i % 20 {
            0..=9 => Self::Browse,
            10..=15 => Self::Product,
            16 => Self::Order,
            17 => Self::Checkout,
            _ => Self::Profile,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

#[derive(Serialize)]
struct Report {
    rate: u32,
    duration_secs: u64,
    skipped: u64,
    kinds: Vec<Summary>,
}

/// Runs the shopping load and prints one row per kind of request.
///
/// # Errors
/// When seeding or creating the products fails.
pub async fn run(args: ShopArgs) -> anyhow::Result<()> {
    let signer = args.mint.signer()?;
    let db = flash_core::db::connect(&args.pg).await?;
    let tag = format!("shop-{}", Uuid::new_v4().simple());
    eprintln!("seeding {} shoppers ...", args.shoppers);
    let admin = seed::members(&db, &signer, &format!("{tag}-admin"), 1, Role::Admin)
        .await?
        .remove(0);
    let shoppers = seed::members(&db, &signer, &tag, args.shoppers.max(1), Role::Buyer).await?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let catalog = args.catalog_url.trim_end_matches('/').to_owned();
    let member = args.member_url.trim_end_matches('/').to_owned();
    let mut products = Vec::with_capacity(args.products);
    for n in 0..args.products.max(1) {
        let sku: String = format!("{tag}{n}").chars().take(60).collect();
        let response = client
            .post(format!("{catalog}/products"))
            .bearer_auth(&admin.token)
            .json(
                &json!({"sku": sku, "name": format!("Shop item {n}"), "price_cents": 1500,
                          "currency": "EUR", "stock": 1_000_000}),
            )
            .send()
            .await
            .context("creating a product")?;
        let body: Value = response.json().await.unwrap_or(Value::Null);
        products.push(
            body["id"]
                .as_str()
                .and_then(|id| id.parse::<Uuid>().ok())
                .with_context(|| format!("creating a product: {body}"))?,
        );
    }

    let total = u64::from(args.rate) * args.duration_secs;
    eprintln!("shopping: {total} requests at {}/s ...", args.rate);
    let recorders: Arc<Vec<Mutex<Recorder>>> =
        Arc::new(KINDS.iter().map(|_| Mutex::default()).collect());
    let in_flight = Arc::new(Semaphore::new(args.max_in_flight.max(1)));
    let skipped = Arc::new(AtomicU64::new(0));
    let (shoppers, products) = (Arc::new(shoppers), Arc::new(products));
    let mut tick =
        tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(args.rate.max(1))));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..total {
        tick.tick().await;
        let Ok(permit) = Arc::clone(&in_flight).try_acquire_owned() else {
            skipped.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let kind = Kind::of(i);
        let who = &shoppers[usize::try_from(i).unwrap_or(0) % shoppers.len()];
        let product = products[usize::try_from(i / 3).unwrap_or(0) % products.len()];
        let request = match kind {
            Kind::Browse if i % 4 == 0 => {
                client.get(format!("{catalog}/products?q=item%201&limit=20"))
            }
            Kind::Browse => client.get(format!("{catalog}/products?limit=20")),
            Kind::Product => client.get(format!("{catalog}/products/{product}")),
            Kind::Order => client
                .post(format!("{catalog}/orders"))
                .header("Idempotency-Key", Uuid::new_v4().to_string())
                .json(&json!({"items": [{"product_id": product, "quantity": 1}]})),
            Kind::Checkout => client
                .put(format!("{catalog}/cart/items/{product}"))
                .json(&json!({"quantity": 1})),
            Kind::Profile => client.get(format!("{member}/members/me")),
        }
        .bearer_auth(&who.token);
        // A checkout follows its cart line, for the same shopper, once the line is in.
        let then = matches!(kind, Kind::Checkout).then(|| {
            client
                .post(format!("{catalog}/cart/checkout"))
                .header("Idempotency-Key", Uuid::new_v4().to_string())
                .bearer_auth(&who.token)
        });
        let recorders = Arc::clone(&recorders);
        tasks.spawn(async move {
            let sent = Instant::now();
            let mut status = request.send().await.map_or(0, |r| r.status().as_u16());
            if let Some(checkout) = then
                && (200..300).contains(&status)
            {
                status = checkout.send().await.map_or(0, |r| r.status().as_u16());
            }
            recorders[kind.index()]
                .lock()
                .await
                .record(status, sent.elapsed());
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    }
    let drain_by = tokio::time::Instant::now() + Duration::from_secs(30);
    while let Ok(Some(_)) = tokio::time::timeout_at(drain_by, tasks.join_next()).await {}
    tasks.abort_all();
    let elapsed = started.elapsed();
    let mut kinds = Vec::new();
    for (kind, name) in KINDS {
        kinds.push(recorders[kind.index()].lock().await.summary(name, elapsed));
    }
    print_table(&kinds);
    let skipped = skipped.load(Ordering::Relaxed);
    println!(
        "skipped (more than {} in flight): {skipped}",
        args.max_in_flight
    );
    if let Some(path) = &args.json {
        let report = Report {
            rate: args.rate,
            duration_secs: args.duration_secs,
            skipped,
            kinds,
        };
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
