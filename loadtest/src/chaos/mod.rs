//! `loadtest chaos`: the fault matrix. Starts its own Redis, NATS (JetStream), database and
//! the three services of the flash-sale path as processes, then runs one spike per fault with
//! the fault injected while the drain works: a worker, the door or catalog-api SIGKILLed (and
//! started again), Redis flushed, NATS or PostgreSQL unreachable for a few seconds. Each row
//! says what a buyer would care about (202s given and kept, units oversold or left unsold,
//! charges and mails twice) and how long the door and the tickets took to recover.
//!
//! It runs on servers it starts itself, never the dev stack's: killing or cutting off a server
//! the run did not start is not its to do, and a dev stack's Redis and NATS may be shared.

mod checkouts;
pub mod fault;
mod rig;
mod row;

use std::{path::PathBuf, time::Duration};

use anyhow::Context;
use serde::Serialize;

pub use fault::{Fault, Row};
use rig::{Rig, Setup};
use row::Settings;

/// Options of the fault matrix.
#[derive(clap::Args)]
pub struct ChaosArgs {
    /// Folder holding the `admission`, `workers` and `catalog-api` binaries.
    #[arg(long, env = "CHAOS_BIN_DIR", default_value = "target/release")]
    pub bin_dir: PathBuf,
    /// The PostgreSQL server; the run makes its own database there and drops it afterwards.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pub database_url: String,
    /// The faults to inject, one row each (all by default).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub faults: Vec<Fault>,
    /// Buyers per row.
    #[arg(long, default_value_t = 2_000)]
    pub buyers: usize,
    /// Units on sale per row.
    #[arg(long, default_value_t = 800)]
    pub units: i64,
    /// Seconds the entries are spread over, so a fault lands while buyers still arrive.
    #[arg(long, default_value_t = 6.0)]
    pub ramp_secs: f64,
    /// Seconds NATS or PostgreSQL stays unreachable.
    #[arg(long, default_value_t = 3)]
    pub outage_secs: u64,
    /// Shoppers checking out regular orders while catalog-api is killed.
    #[arg(long, default_value_t = 200)]
    pub shoppers: usize,
    /// Logs, the NATS store and mail go here (a new folder under the temp dir by default;
    /// kept afterwards, so the logs can be read).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Also write the rows as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// The matrix: one row per fault.
#[derive(Debug, Serialize)]
pub struct Matrix {
    /// When it ran (UTC).
    pub ran_at: chrono::DateTime<chrono::Utc>,
    /// Buyers and units per row.
    pub buyers: usize,
    /// Units per row.
    pub units: i64,
    /// The rows.
    pub rows: Vec<Row>,
}

impl Matrix {
    /// True when every row passed.
    pub fn passed(&self) -> bool {
        self.rows.iter().all(Row::passed)
    }

    /// The table.
    pub fn print(&self) {
        println!(
            "\nchaos: {} buyers and {} units per row, {}",
            self.buyers, self.units, self.ran_at
        );
        println!(
            "{:<24} {:>6} {:>6} {:>5} {:>9} {:>8} {:>6} {:>10} {:>10} {:>10}  verdict",
            "fault",
            "202s",
            "final",
            "lost",
            "oversold",
            "charged2",
            "mail2",
            "undersold",
            "door 2xx",
            "all final",
        );
        let secs = |v: Option<f64>| v.map_or("never".to_owned(), |v| format!("{v:.1} s"));
        for row in &self.rows {
            println!(
                "{:<24} {:>6} {:>6} {:>5} {:>9} {:>8} {:>6} {:>10} {:>10} {:>10}  {}",
                row.fault.name(),
                row.accepted,
                row.final_tickets,
                row.lost,
                row.oversold,
                row.double_charges,
                row.mails_twice,
                row.undersold,
                secs(row.door_back_secs),
                secs(row.all_final_secs),
                if row.passed() { "pass" } else { "FAIL" },
            );
            if let Some(c) = &row.checkouts {
                println!(
                    "{:<24} checkouts: {} placed, {} out of stock, {} unanswered",
                    "", c.placed, c.refused, c.unanswered
                );
            }
            for violation in &row.violations {
                println!("{:<24} VIOLATION: {violation}", "");
            }
        }
    }
}

/// The command: runs the matrix, prints it, writes JSON, fails when a row failed.
///
/// # Errors
/// When the rig cannot be started or a row cannot be run, or a row failed.
pub async fn run(args: ChaosArgs) -> anyhow::Result<()> {
    let matrix = run_matrix(&args).await?;
    matrix.print();
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&matrix)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    anyhow::ensure!(matrix.passed(), "a chaos row failed");
    Ok(())
}

/// Starts the rig, runs every row, stops the rig.
///
/// # Errors
/// When the rig cannot be started or a row cannot be run.
pub async fn run_matrix(args: &ChaosArgs) -> anyhow::Result<Matrix> {
    let faults = if args.faults.is_empty() {
        // Every fault, in the order they are declared.
        <Fault as clap::ValueEnum>::value_variants().to_vec()
    } else {
        args.faults.clone()
    };
    let work_dir = args.work_dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("flash-chaos-{}", uuid::Uuid::new_v4().simple()))
    });
    std::fs::create_dir_all(&work_dir)?;
    eprintln!("chaos: logs in {}", work_dir.join("logs").display());
    let settings = Settings {
        buyers: args.buyers,
        units: args.units,
        ramp: Duration::try_from_secs_f64(args.ramp_secs)
            .map_err(|_| anyhow::anyhow!("--ramp-secs must be a finite number of seconds ≥ 0"))?,
        outage: Duration::from_secs(args.outage_secs),
        worker_restart_after: Duration::from_secs(2),
        shoppers: args.shoppers,
    };
    let mut rig = Rig::start(&Setup {
        bin_dir: &args.bin_dir,
        database_url: &args.database_url,
        work_dir: &work_dir,
    })
    .await?;
    for (name, pid) in rig.parts.pids() {
        eprintln!(
            "chaos: {name} pid {}",
            pid.map_or("-".to_owned(), |p| p.to_string())
        );
    }
    let mut rows = Vec::new();
    let mut failed = None;
    for fault in faults {
        eprintln!("chaos: {} ...", fault.name());
        match row::run(&rig.stores, &mut rig.parts, fault, &settings).await {
            Ok(row) => rows.push(row),
            Err(err) => {
                failed = Some(err.context(format!("the row {}", fault.name())));
                break;
            }
        }
    }
    rig.stop().await?;
    match failed {
        Some(err) => Err(err),
        None => Ok(Matrix {
            ran_at: chrono::Utc::now(),
            buyers: args.buyers,
            units: args.units,
            rows,
        }),
    }
}
