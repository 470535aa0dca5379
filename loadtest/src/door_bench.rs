//! `loadtest door`: what the flash-sale front door sustains.
//!
//! Mints real EdDSA access tokens with the dev private key for synthetic buyers (admission
//! verifies tokens and never looks members up, so no member rows are needed), arms a sale in
//! Redis through the same `flash_core::redis_model::sale_gate::arm` catalog-api uses, has every buyer open
//! the waiting room before the start (`GET /sales/{id}/tickets/mine`, as the page does; the
//! door verifies the token then, not in the rush; `--cold` skips this), opens the sale, fires
//! every buyer's entry over C connections, then polls the tickets. The sale is held (paused)
//! throughout, so the workers leave its tickets in the queue: it exists only in Redis, and
//! draining it would only reject every ticket as an unknown sale while taking a fifth of the
//! machine from the door being measured (`loadtest drain` measures the drain). Afterwards it
//! removes what it queued (the sale's messages and keys).

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context;
use chrono::Utc;
use flash_core::{
    config::{NatsArgs, RedisArgs},
    domain::{MemberId, Role},
    redis::scan_keys,
    redis_model::Keys,
    redis_model::sale_gate::{self, Arm, SaleMeta},
};
use http::Method;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::{
    connections::{Answer, Connections},
    measure::{Summary, print_table, run_batch},
};

/// Options of the front-door benchmark.
#[derive(clap::Args)]
pub struct DoorArgs {
    /// admission base URL.
    #[arg(long, env = "ADMISSION_URL", default_value = "http://127.0.0.1:8080")]
    admission_url: String,
    /// Buyers entering the sale.
    #[arg(long, default_value_t = 50_000)]
    buyers: usize,
    /// Units on sale; the rest of the buyers take the sold-out path.
    #[arg(long, default_value_t = 50_000)]
    units: i64,
    /// Polls of `GET /tickets/{id}` after the entries.
    #[arg(long, default_value_t = 100_000)]
    polls: usize,
    /// Connections (requests in flight).
    #[arg(long, default_value_t = 256)]
    connections: usize,
    /// Skip the arrival: the door sees each token for the first time at the entry (as if no
    /// buyer had the waiting room open before the start), so every entry pays the EdDSA verify.
    #[arg(long)]
    cold: bool,
    /// Key and claims the buyers' tokens are minted with.
    #[command(flatten)]
    pub mint: crate::seed::MintArgs,
    #[command(flatten)]
    redis: RedisArgs,
    #[command(flatten)]
    nats: NatsArgs,
    /// Give up on any one phase after this many seconds.
    #[arg(long, default_value_t = 300)]
    phase_timeout_secs: u64,
    /// Also write the figures as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Serialize)]
struct Report {
    sale_id: Uuid,
    phases: Vec<Summary>,
}

/// Runs the front-door benchmark and prints its table.
///
/// # Errors
/// When a service or store cannot be reached.
pub async fn run(args: DoorArgs) -> anyhow::Result<()> {
    let signer = args.mint.signer()?;
    eprintln!("minting {} buyer tokens ...", args.buyers);
    let tokens: Arc<Vec<String>> = Arc::new(
        (0..args.buyers)
            .map(|_| {
                signer
                    .mint(MemberId::new(), Role::Buyer, Uuid::new_v4())
                    .map(|(t, _)| t)
            })
            .collect::<anyhow::Result<_>>()?,
    );

    let redis = flash_core::redis::connect(&args.redis).await?;
    let keys = Keys::new(&args.redis.redis_key_prefix);
    let sale = Uuid::now_v7();
    let now = Utc::now();
    // Upcoming while the buyers arrive; the start moves to now once they are all there.
    let mut meta = SaleMeta::open(
        now + chrono::Duration::hours(1),
        now + chrono::Duration::hours(2),
        1,
    );
    meta.paused = true;
    sale_gate::arm(&redis, &keys, sale, args.units, &meta, Arm::IfAbsent).await?;

    let door = Connections::to(&args.admission_url, args.connections).await?;
    let deadline = Duration::from_secs(args.phase_timeout_secs);
    let tickets: Arc<Mutex<Vec<(usize, String)>>> =
        Arc::new(Mutex::new(Vec::with_capacity(args.buyers)));

    let mut phases = Vec::new();
    let mine = format!("/sales/{sale}/tickets/mine");
    if !args.cold {
        eprintln!("{} buyers open the waiting room ...", args.buyers);
        phases.push(
            run_batch(
                "GET /sales/{id}/tickets/mine (arrival)",
                args.buyers,
                args.connections,
                deadline,
                |i| {
                    let (door, mine, token) = (&door, &mine, &tokens[i]);
                    async move { status(door.send(Method::GET, mine, token).await) }
                },
            )
            .await,
        );
    }
    meta.starts_at = Utc::now() - chrono::Duration::seconds(1);
    sale_gate::write_meta(&redis, &keys, sale, &meta).await?;
    let enter = format!("/sales/{sale}/tickets");
    eprintln!(
        "{} entries over {} connections into sale {sale} ({} units) ...",
        args.buyers, args.connections, args.units
    );
    let entries = run_batch(
        "POST /sales/{id}/tickets",
        args.buyers,
        args.connections,
        deadline,
        |i| {
            let (door, enter, token) = (&door, &enter, &tokens[i]);
            let tickets = Arc::clone(&tickets);
            async move {
                let Ok(answer) = door.send(Method::POST, enter, token).await else {
                    return 0;
                };
                if let Ok(Issued {
                    ticket_id: Some(ticket),
                }) = serde_json::from_slice(&answer.body)
                {
                    tickets.lock().await.push((i, ticket));
                }
                answer.status
            }
        },
    )
    .await;

    let issued = Arc::new(tickets.lock().await.clone());
    eprintln!("{} polls ...", args.polls);
    let polls = if issued.is_empty() {
        None
    } else {
        Some(
            run_batch(
                "GET /tickets/{id}",
                args.polls,
                args.connections,
                deadline,
                |i| {
                    let (buyer, ticket) = &issued[i % issued.len()];
                    let (door, token) = (&door, &tokens[*buyer]);
                    let path = format!("/tickets/{ticket}");
                    async move { status(door.send(Method::GET, &path, token).await) }
                },
            )
            .await,
        )
    };

    clean_up(&args, &redis, &keys, sale).await?;
    phases.push(entries);
    phases.extend(polls);
    print_table(&phases);
    if let Some(path) = &args.json {
        std::fs::write(
            path,
            serde_json::to_vec_pretty(&Report {
                sale_id: sale,
                phases,
            })?,
        )
        .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// What the door's answer to an entry says, as far as the benchmark cares.
#[derive(Deserialize)]
struct Issued {
    ticket_id: Option<String>,
}

/// The HTTP status of an exchange, 0 when it broke off.
fn status(answer: anyhow::Result<Answer>) -> u16 {
    answer.map_or(0, |a| a.status)
}

/// Removes the synthetic sale: its queued messages and its Redis keys.
async fn clean_up(
    args: &DoorArgs,
    redis: &flash_core::redis::Redis,
    keys: &Keys,
    sale: Uuid,
) -> anyhow::Result<()> {
    let nats = flash_core::nats::connect(&args.nats, "loadtest").await?;
    let js = async_nats::jetstream::new(nats);
    let subject =
        flash_core::nats::Subjects::new(&args.nats.nats_subject_prefix).flash_tickets(sale);
    let stream = js
        .get_stream(&args.nats.nats_flash_stream)
        .await
        .context("opening the flash stream")?;
    stream
        .purge()
        .filter(subject)
        .await
        .context("purging the bench's tickets")?;
    let mut conn = redis.clone();
    let sale_keys = scan_keys(&conn, &format!("{}{{sale:{sale}}}*", keys.prefix())).await?;
    // The door lists the sale under its ticket-id tag; that set may hold other sales too.
    for tag_set in scan_keys(&conn, &format!("{}sale-tag:*", keys.prefix())).await? {
        redis::cmd("SREM")
            .arg(tag_set)
            .arg(sale.to_string())
            .query_async::<()>(&mut conn)
            .await?;
    }
    for chunk in sale_keys.chunks(1000) {
        redis::cmd("DEL")
            .arg(chunk)
            .query_async::<()>(&mut conn)
            .await?;
    }
    Ok(())
}
