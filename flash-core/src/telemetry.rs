//! Logs (tracing) and metrics (Prometheus text) set up once per process.

use std::{sync::OnceLock, time::Instant};

use axum::{extract::MatchedPath, extract::Request, middleware::Next, response::Response};
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

/// The process-wide Prometheus recorder, installed on first use.
///
/// # Panics
/// Panics if another crate installed a different global `metrics` recorder first, which is a
/// wiring bug, not a runtime condition.
pub fn metrics_handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), LATENCY_BUCKETS)
            .and_then(PrometheusBuilder::install_recorder)
            .expect("BUG: a metrics recorder was installed before flash_core's")
    })
}

/// Renders all metrics in the Prometheus text format, running upkeep first so histograms do
/// not grow without bound between scrapes.
pub fn render_metrics() -> String {
    let handle = metrics_handle();
    handle.run_upkeep();
    handle.render()
}

/// Middleware that counts every request and observes its latency, labelled by route template
/// (never the raw path, which would explode label cardinality) and status.
pub async fn record_http_metrics(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let labels = [("method", method), ("route", route), ("status", status)];
    metrics::counter!("flash_http_requests_total", &labels).increment(1);
    metrics::histogram!("flash_http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}
