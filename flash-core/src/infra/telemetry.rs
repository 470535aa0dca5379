//! Logs (tracing) and metrics (Prometheus text) set up once per process.

use std::{future::Future, io::IsTerminal, sync::OnceLock, time::Duration};

use axum::http::{HeaderValue, Uri};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing::{Event, Subscriber};
use tracing_subscriber::{
    EnvFilter, Layer, fmt,
    fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter, format::Writer},
    layer::SubscriberExt,
    registry::LookupSpan,
    util::SubscriberInitExt,
};

use crate::config::{LogArgs, LogFormat};

/// Installs the global tracing subscriber. `RUST_LOG` sets levels (default `info`); calling it
/// twice (as tests do) keeps the first subscriber.
pub fn init(args: &LogArgs) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,async_nats=warn"));
    // Colour only for a person at a terminal: escape codes in a log file are noise.
    let ansi = std::io::stdout().is_terminal();
    // A second init (tests) fails harmlessly: the first subscriber stays.
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(log_lines(args.log_format, std::io::stdout, ansi))
        .try_init();
}

/// The layer that writes log lines in `format` to `writer`, each line written while serving a
/// request ending with that request's path and id (see [`serving`]).
fn log_lines<S, W>(format: LogFormat, writer: W, ansi: bool) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    match format {
        LogFormat::Json => fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(writer)
            .map_event_format(|inner| Labelled { inner, json: true })
            .boxed(),
        LogFormat::Compact => fmt::layer()
            .compact()
            .with_ansi(ansi)
            .with_writer(writer)
            // The line is formatted into a buffer first, which has no colour of its own.
            .map_event_format(|inner| Labelled {
                inner: inner.with_ansi(ansi),
                json: false,
            })
            .boxed(),
    }
}

tokio::task_local! {
    /// The request the current task is serving, for its log lines.
    static REQUEST: RequestLabel;
}

/// What a log line written while serving a request says about it: the path (which names the
/// sale, ticket or order the request is about) and the request id (which the client was
/// given in `x-request-id`).
///
/// A task-local rather than a tracing span: the log formatter writes a span's fields into a
/// string when the span is made, and registering, entering and closing it cost more again,
/// ~10,000 instructions of a waiting-room poll of ~49,000, for every request whether or not it
/// logs anything. A label is two reference-counted handles, formatted only into the lines that
/// are written.
pub struct RequestLabel {
    uri: Uri,
    request_id: HeaderValue,
}

impl RequestLabel {
    /// The label of the request for `uri` (only its path is logged) with id `request_id`.
    #[must_use]
    pub fn new(uri: Uri, request_id: HeaderValue) -> Self {
        Self { uri, request_id }
    }
}

/// Runs `future`, the serving of the request `label` names: every line it logs ends with the
/// request's path and id.
pub fn serving<F: Future>(label: RequestLabel, future: F) -> impl Future<Output = F::Output> {
    REQUEST.scope(label, future)
}

/// tracing's own line format with the request's label added to lines written while serving
/// one: ` path=… request_id=…` at the end of a compact line, two more keys in a JSON one.
struct Labelled<E> {
    inner: E,
    json: bool,
}

impl<S, N, E> FormatEvent<S, N> for Labelled<E>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    E: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let labelled = REQUEST.try_with(|label| {
            let mut line = String::with_capacity(256);
            self.inner
                .format_event(ctx, Writer::new(&mut line), event)?;
            let line = line.trim_end_matches('\n');
            let path = label.uri.path();
            let request_id = label.request_id.to_str().unwrap_or("-");
            match line.strip_suffix('}').filter(|_| self.json) {
                Some(open) => writeln!(
                    writer,
                    "{open},\"path\":{},\"request_id\":{}}}",
                    serde_json::Value::from(path),
                    serde_json::Value::from(request_id),
                ),
                None => writeln!(writer, "{line} path={path} request_id={request_id}"),
            }
        });
        labelled.unwrap_or_else(|_| self.inner.format_event(ctx, writer, event))
    }
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
/// upkeep every few seconds (`UPKEEP_EVERY`).
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

#[cfg(test)]
mod tests {
    use std::{
        io,
        sync::{Arc, Mutex, PoisonError},
    };

    use super::*;

    /// Keeps what the log layer writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl MakeWriter<'_> for Captured {
        type Writer = Self;

        fn make_writer(&self) -> Self {
            self.clone()
        }
    }

    /// The lines `format` writes for one event before a request, one while serving it (after
    /// the task yielded once) and one after it.
    async fn lines(format: LogFormat) -> Vec<String> {
        let captured = Captured::default();
        let subscriber =
            tracing_subscriber::registry().with(log_lines(format, captured.clone(), false));
        let _default = tracing::subscriber::set_default(subscriber);
        tracing::info!("before");
        let label = RequestLabel::new(
            Uri::from_static("/tickets/abc?wait=5"),
            HeaderValue::from_static("req\"1"),
        );
        serving(label, async {
            tokio::task::yield_now().await;
            tracing::warn!(n = 2, "inside");
        })
        .await;
        tracing::info!("after");
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_owned).collect()
    }

    #[tokio::test]
    async fn a_compact_line_written_serving_a_request_ends_with_its_path_and_id() {
        let lines = lines(LogFormat::Compact).await;
        assert_eq!(lines.len(), 3, "{lines:#?}");
        assert!(
            lines[1].ends_with("inside n=2 path=/tickets/abc request_id=req\"1"),
            "{}",
            lines[1]
        );
        assert!(lines[0].ends_with("before"), "{}", lines[0]);
        assert!(lines[2].ends_with("after"), "{}", lines[2]);
    }

    #[tokio::test]
    async fn a_json_line_written_serving_a_request_has_its_path_and_id() {
        let lines: Vec<serde_json::Value> = lines(LogFormat::Json)
            .await
            .iter()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(lines.len(), 3, "{lines:#?}");
        assert_eq!(lines[1]["message"], "inside");
        assert_eq!(lines[1]["n"], 2);
        assert_eq!(lines[1]["path"], "/tickets/abc");
        assert_eq!(lines[1]["request_id"], "req\"1");
        for outside in [&lines[0], &lines[2]] {
            assert!(outside.get("path").is_none(), "{outside}");
            assert!(outside.get("request_id").is_none(), "{outside}");
        }
    }
}
