//! Logs (tracing) and metrics (Prometheus text) set up once per process.

use std::{io::IsTerminal, sync::OnceLock, time::Duration};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::{EnvFilter, fmt, layer::SubscriberExt, util::SubscriberInitExt};

use crate::config::{LogArgs, LogFormat};

/// Installs the global tracing subscriber. `RUST_LOG` sets levels (default `info`); calling it
/// twice (as tests do) keeps the first subscriber.
pub fn init(args: &LogArgs) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,async_nats=warn"));
    let registry = tracing_subscriber::registry().with(filter);
    // A second init (tests) fails harmlessly: the first subscriber stays.
    let _ = match args.log_format {
        LogFormat::Json => registry
            .with(fmt::layer().json().flatten_event(true))
            .try_init(),
        // Colour only for a person at a terminal: escape codes in a log file are noise, and
        // writing them into every request span's fields cost the door about 5 % of a poll.
        LogFormat::Compact => registry
            .with(
                fmt::layer()
                    .compact()
                    .with_ansi(std::io::stdout().is_terminal()),
            )
            .try_init(),
    };
}

/// Buckets for every `*_seconds` histogram: 100 µs to 10 s, dense where requests usually land.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// How often the recorder folds the samples histograms collected into their buckets. The
/// recorder keeps every sample until then, so without it a process nobody scrapes would grow
/// by every request it serves.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The process-wide Prometheus recorder, installed on first use, with a thread that runs its
/// upkeep every [`UPKEEP_EVERY`].
///
/// # Panics
/// Panics if another crate installed a different global `metrics` recorder first, or the
/// upkeep thread cannot start: wiring bugs, not runtime conditions.
pub fn metrics_handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let handle = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), LATENCY_BUCKETS)
            .and_then(PrometheusBuilder::install_recorder)
            .expect("BUG: a metrics recorder was installed before flash_core's");
        let upkeep = handle.clone();
        std::thread::Builder::new()
            .name("metrics-upkeep".to_owned())
            .spawn(move || {
                loop {
                    std::thread::sleep(UPKEEP_EVERY);
                    upkeep.run_upkeep();
                }
            })
            .expect("BUG: the metrics upkeep thread could not start");
        handle
    })
}

/// Renders all metrics in the Prometheus text format, with the samples collected since the
/// last upkeep folded in.
pub fn render_metrics() -> String {
    let handle = metrics_handle();
    handle.run_upkeep();
    handle.render()
}
