//! Logs (tracing) and metrics (Prometheus text) set up once per process.

use std::{
    sync::OnceLock,
    time::{Duration, Instant},
};

use axum::{
    extract::{MatchedPath, Request},
    http::Method,
    middleware::Next,
    response::Response,
};
use metrics::{Label, SharedString};
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
        LogFormat::Compact => registry.with(fmt::layer().compact()).try_init(),
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

/// Middleware that observes every request's latency, labelled by method, route template
/// (never the raw path, which would explode label cardinality) and status. The histogram's
/// `_count` is the request count.
pub async fn record_http_metrics(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let route: SharedString = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(SharedString::const_str("unmatched"), |p| {
            SharedString::from_owned(p.as_str().to_owned())
        });
    let response = next.run(request).await;
    let status = SharedString::from_owned(response.status().as_str().to_owned());
    let labels = vec![
        Label::from_static_parts("method", method),
        Label::new("route", route),
        Label::new("status", status),
    ];
    metrics::histogram!("flash_http_request_duration_seconds", labels)
        .record(started.elapsed().as_secs_f64());
    response
}

/// The method as a label without an allocation; methods outside the standard ones share one.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}
