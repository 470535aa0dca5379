//! `loadtest summary`: one table over several spike reports, for `scripts/bench`.

use std::path::PathBuf;

use anyhow::Context;
use serde_json::Value;

/// Options of the summary table.
#[derive(clap::Args)]
pub struct SummaryArgs {
    /// `LABEL=PATH` pairs: a name for the row and a report written by `loadtest spike --json`.
    #[arg(required = true)]
    pub reports: Vec<String>,
}

/// Prints one row per report; fails when a report cannot be read.
///
/// # Errors
/// When an argument is not `LABEL=PATH` or its file is not a spike report.
pub fn run(args: &SummaryArgs) -> anyhow::Result<()> {
    println!(
        "{:<28} {:>7} {:>6} {:>10} {:>8} {:>8} {:>9} {:>10} {:>10} {:>10} {:>8} {:>10}",
        "run",
        "buyers",
        "units",
        "entries/s",
        "p50 ms",
        "p99 ms",
        "polls/s",
        "final ms",
        "orders/s",
        "sync u/s",
        "gain",
        "violations"
    );
    for pair in &args.reports {
        let (label, path) = pair
            .split_once('=')
            .with_context(|| format!("{pair}: expected LABEL=PATH"))?;
        let path = PathBuf::from(path);
        let report: Value = serde_json::from_slice(
            &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
        )
        .with_context(|| format!("{} is not JSON", path.display()))?;
        let num = |v: &Value| v.as_f64().map_or("-".to_owned(), |v| format!("{v:.0}"));
        let fixed = |v: &Value| v.as_f64().map_or("-".to_owned(), |v| format!("{v:.1}"));
        let baseline = &report["baseline"];
        let violations = report["check"]["violations"].as_array().map_or(0, Vec::len)
            + usize::try_from(report["unfinished"].as_u64().unwrap_or(0)).unwrap_or(usize::MAX);
        println!(
            "{:<28} {:>7} {:>6} {:>10} {:>8} {:>8} {:>9} {:>10} {:>10} {:>10} {:>8} {:>10}",
            label,
            num(&report["buyers"]),
            num(&report["units"]),
            num(&report["entries"]["per_second"]),
            fixed(&report["entries"]["p50_ms"]),
            fixed(&report["entries"]["p99_ms"]),
            num(&report["polls_per_second"]),
            num(&report["all_final_ms"]),
            num(&report["orders_per_second"]),
            num(&baseline["units_per_second"]),
            baseline["throughput_ratio"]
                .as_f64()
                .map_or("-".to_owned(), |r| format!("{r:.1}×")),
            violations,
        );
    }
    Ok(())
}
