//! Running a bounded batch of concurrent requests and summarising their latencies.

use std::{
    collections::BTreeMap,
    future::Future,
    time::{Duration, Instant},
};

use futures::StreamExt;
use hdrhistogram::Histogram;
use serde::Serialize;

/// Latency and status summary of one batch.
#[derive(Debug, Serialize)]
pub struct Summary {
    /// What was measured.
    pub name: String,
    /// Requests sent.
    pub requests: u64,
    /// Requests per second over the batch's wall time.
    pub per_second: f64,
    /// Latency percentiles in milliseconds.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// The slowest request.
    pub max_ms: f64,
    /// How many answers had each HTTP status (0 = transport error).
    pub statuses: BTreeMap<u16, u64>,
}

/// Runs `count` calls of `call(i)` with at most `concurrency` in flight, giving up on the
/// batch after `deadline`. Each call returns the HTTP status it got (0 for a transport error).
pub(crate) async fn run_batch<F, Fut>(
    name: &str,
    count: usize,
    concurrency: usize,
    deadline: Duration,
    call: F,
) -> Summary
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = u16>,
{
    let mut recorder = Recorder::default();
    let started = Instant::now();
    let mut results = futures::stream::iter(0..count)
        .map(|i| {
            let call = &call;
            async move {
                let sent = Instant::now();
                let status = call(i).await;
                (status, sent.elapsed())
            }
        })
        .buffer_unordered(concurrency.max(1));
    while let Ok(Some((status, latency))) =
        tokio::time::timeout_at((started + deadline).into(), results.next()).await
    {
        recorder.record(status, latency);
    }
    recorder.summary(name, started.elapsed())
}

/// Latencies and statuses of one kind of request, as they come in.
pub(crate) struct Recorder {
    histogram: Histogram<u64>,
    statuses: BTreeMap<u16, u64>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self {
            histogram: Histogram::new_with_bounds(1, 60_000_000, 3)
                .expect("BUG: static histogram bounds"),
            statuses: BTreeMap::new(),
        }
    }
}

impl Recorder {
    /// One answer: its status (0 for a transport error) and how long it took.
    pub(crate) fn record(&mut self, status: u16, latency: Duration) {
        self.histogram.saturating_record(
            u64::try_from(latency.as_micros())
                .unwrap_or(u64::MAX)
                .max(1),
        );
        *self.statuses.entry(status).or_insert(0) += 1;
    }

    /// The summary over `elapsed` of wall time.
    pub(crate) fn summary(&self, name: &str, elapsed: Duration) -> Summary {
        let h = &self.histogram;
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Summary {
            name: name.to_owned(),
            requests: h.len(),
            per_second: h.len() as f64 / elapsed.as_secs_f64().max(1e-6),
            p50_ms: ms(0.5),
            p90_ms: ms(0.9),
            p99_ms: ms(0.99),
            max_ms: h.max() as f64 / 1000.0,
            statuses: self.statuses.clone(),
        }
    }
}

/// Prints summaries as an aligned table.
pub(crate) fn print_table<'a>(rows: impl IntoIterator<Item = &'a Summary>) {
    println!(
        "{:<34} {:>8} {:>10} {:>9} {:>9} {:>9} {:>9}  statuses",
        "measure", "requests", "per sec", "p50 ms", "p90 ms", "p99 ms", "max ms"
    );
    for row in rows {
        let statuses: Vec<String> = row
            .statuses
            .iter()
            .map(|(s, n)| format!("{s}×{n}"))
            .collect();
        println!(
            "{:<34} {:>8} {:>10.1} {:>9.2} {:>9.2} {:>9.2} {:>9.2}  {}",
            row.name,
            row.requests,
            row.per_second,
            row.p50_ms,
            row.p90_ms,
            row.p99_ms,
            row.max_ms,
            statuses.join(" ")
        );
    }
}
