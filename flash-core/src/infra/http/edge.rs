//! The one layer every request of every service passes through before its route: request id,
//! log label, latency histogram, panic guard, in-flight limit and timeout, in a single future.
//!
//! These used to be six tower and tower-http layers. Each of them is cheap, but each wrapped the
//! request in a future of its own, cloned the services beneath it and allocated, and a flash-sale
//! poll is cheap enough that the stack cost a third of the door's polls per second (measured:
//! 12,100 polls/s through the stack, 18,100 with no middleware at all). One layer does the
//! same work with one boxed future per request.

use std::{
    cell::RefCell,
    collections::HashMap,
    convert::Infallible,
    panic::AssertUnwindSafe,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::{
    extract::{MatchedPath, Request},
    http::{HeaderValue, Method, StatusCode},
    response::{IntoResponse, Response},
};
use futures::{FutureExt, future::BoxFuture};
use tower::{Layer, Service};
use uuid::Uuid;

use super::REQUEST_ID;
use crate::{
    problem::{ProblemType, problem_response},
    telemetry::{RequestLabel, serving},
};

/// How long a client told "overloaded" or "timed out" should wait before retrying.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Builds [`Edge`] around each route; every route of a router shares one in-flight count, so
/// `max_in_flight` bounds the whole service, not each route.
#[derive(Clone)]
pub(super) struct EdgeLayer {
    limits: Arc<Limits>,
}

struct Limits {
    in_flight: AtomicUsize,
    max_in_flight: usize,
    timeout: Duration,
    long_polls: Option<LongPolls>,
    /// Long-polls waiting now, counted apart from `in_flight`.
    waiting: AtomicUsize,
}

/// A route whose requests may wait for a change (`?wait=N`, N > 0) longer than the request
/// timeout allows. Up to `max_waiting` of them at once run outside the in-flight limit, with
/// the timeout stretched by `max_wait`, and are told so by a [`LongPollGrant`] among the
/// request's extensions; the rest are ordinary requests, and their handler must not wait.
#[derive(Debug, Clone)]
pub struct LongPolls {
    /// The route template, as routed (`/tickets/{id}`).
    pub route: &'static str,
    /// The longest a granted request may wait.
    pub max_wait: Duration,
    /// Granted requests waiting at once in this process.
    pub max_waiting: usize,
}

/// Put among a long-poll's extensions when it may wait up to `max_wait`: it holds no in-flight
/// place, and the timeout leaves it that long.
#[derive(Debug, Clone, Copy)]
pub struct LongPollGrant {
    /// The longest the request may wait before it answers.
    pub max_wait: Duration,
}

impl EdgeLayer {
    /// At most `max_in_flight` requests run at once (more are answered 503 at once instead of
    /// queueing without bound), each for at most `timeout` (then 503).
    /// Installs the metrics recorder first: a histogram handle taken before it would record
    /// nowhere, and handles are kept.
    pub(super) fn new(
        max_in_flight: usize,
        timeout: Duration,
        long_polls: Option<LongPolls>,
    ) -> Self {
        crate::telemetry::metrics_handle();
        Self {
            limits: Arc::new(Limits {
                in_flight: AtomicUsize::new(0),
                max_in_flight,
                timeout,
                long_polls,
                waiting: AtomicUsize::new(0),
            }),
        }
    }
}

impl<S> Layer<S> for EdgeLayer {
    type Service = Edge<S>;

    fn layer(&self, inner: S) -> Edge<S> {
        Edge {
            inner,
            limits: Arc::clone(&self.limits),
        }
    }
}

/// The service [`EdgeLayer`] wraps a route in.
#[derive(Clone)]
pub(super) struct Edge<S> {
    inner: S,
    limits: Arc<Limits>,
}

impl<S> Service<Request> for Edge<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let started = Instant::now();
        let request_id = match request.headers().get(REQUEST_ID) {
            Some(id) => id.clone(),
            None => {
                let id = new_request_id();
                request.headers_mut().insert(REQUEST_ID, id.clone());
                id
            }
        };
        let method = method_label(request.method());
        let route = request.extensions().get::<MatchedPath>().cloned();
        let label = RequestLabel::new(request.uri().clone(), request_id.clone());
        let waiting = Waiting::enter(&self.limits, &request, route.as_ref());
        if let Some(waiting) = &waiting {
            request.extensions_mut().insert(waiting.grant);
        }
        // Calling here, not inside the future, spares a clone of the routes beneath for every
        // request; futures are lazy, so a request turned away below has done no work. A panic
        // in `call` itself is caught as one in the future is.
        let called = std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.call(request)));
        let limits = Arc::clone(&self.limits);
        let served = async move {
            // A granted long-poll holds its waiting place instead of an in-flight one.
            let place = match &waiting {
                Some(_) => Some(None),
                None => InFlight::enter(&limits).map(Some),
            };
            let timeout = limits.timeout
                + waiting
                    .as_ref()
                    .map_or(Duration::ZERO, |w| w.grant.max_wait);
            let mut response = match (place, called) {
                (None, _) => overloaded(),
                (Some(_place), Err(_panic)) => panicked(),
                (Some(_place), Ok(future)) => {
                    let guarded = AssertUnwindSafe(future).catch_unwind();
                    match tokio::time::timeout(timeout, guarded).await {
                        Ok(Ok(Ok(response))) => response,
                        Ok(Ok(Err(never))) => match never {},
                        Ok(Err(_panic)) => panicked(),
                        Err(_elapsed) => timed_out(),
                    }
                }
            };
            drop(waiting);
            response.headers_mut().insert(REQUEST_ID, request_id);
            let latency = started.elapsed();
            let status = response.status();
            record_latency(method, route.as_ref(), status, latency);
            if status.is_server_error() {
                tracing::error!(method, status = status.as_u16(), ?latency, "request failed");
            } else {
                tracing::debug!(status = status.as_u16(), ?latency, "request finished");
            }
            Ok(response)
        };
        serving(label, served).boxed()
    }
}

/// A place among the requests in flight, given back when dropped.
struct InFlight<'a>(&'a Limits);

impl<'a> InFlight<'a> {
    fn enter(limits: &'a Limits) -> Option<Self> {
        let before = limits.in_flight.fetch_add(1, Ordering::AcqRel);
        let slot = Self(limits);
        // Over the limit: dropping the slot gives the place straight back.
        (before < limits.max_in_flight).then_some(slot)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A waiting long-poll's place, given back when dropped.
struct Waiting {
    limits: Arc<Limits>,
    grant: LongPollGrant,
}

impl Waiting {
    /// A place for `request` when it is a long-poll (`wait` > 0 on the long-poll route) and
    /// fewer than the most allowed are waiting.
    fn enter(limits: &Arc<Limits>, request: &Request, route: Option<&MatchedPath>) -> Option<Self> {
        let long_polls = limits.long_polls.as_ref()?;
        if route.map(MatchedPath::as_str) != Some(long_polls.route)
            || !asks_to_wait(request.uri().query())
        {
            return None;
        }
        let before = limits.waiting.fetch_add(1, Ordering::AcqRel);
        let place = Self {
            limits: Arc::clone(limits),
            grant: LongPollGrant {
                max_wait: long_polls.max_wait,
            },
        };
        (before < long_polls.max_waiting).then_some(place)
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.limits.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Whether a query asks to wait: a `wait` parameter other than 0.
fn asks_to_wait(query: Option<&str>) -> bool {
    query.is_some_and(|query| {
        query.split('&').any(|pair| {
            pair.strip_prefix("wait=")
                .is_some_and(|n| !n.is_empty() && n.bytes().any(|b| b != b'0'))
        })
    })
}

/// A fresh id for a request that came without one.
fn new_request_id() -> HeaderValue {
    let mut text = Uuid::encode_buffer();
    let text = Uuid::new_v4().hyphenated().encode_lower(&mut text);
    // A hyphenated UUID is always a valid header value.
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

fn overloaded() -> Response {
    unavailable("the server is overloaded; retry later")
}

fn timed_out() -> Response {
    tracing::warn!("request timed out");
    unavailable("the request took too long; retry later")
}

/// 503 + `Retry-After`: nothing was done, and the same request may succeed shortly.
fn unavailable(detail: &str) -> Response {
    problem_response(
        ProblemType::Unavailable,
        detail.to_owned(),
        vec![],
        Some(RETRY_AFTER),
    )
    .into_response()
}

fn panicked() -> Response {
    tracing::error!("request handler panicked");
    problem_response(
        ProblemType::Internal,
        "an internal error occurred".to_owned(),
        vec![],
        None,
    )
    .into_response()
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

/// Histogram handles by route, then method and status. Routes are templates, methods and
/// statuses few, so the map stays small. One per thread: no lock on the request path.
type Histograms = HashMap<Box<str>, Vec<(&'static str, StatusCode, metrics::Histogram)>>;

thread_local! {
    static HISTOGRAMS: RefCell<Histograms> = RefCell::new(HashMap::new());
}

/// Observes a request's latency, labelled by method, route template (never the raw path, which
/// would explode label cardinality) and status. The histogram's `_count` is the request count.
/// Looking the handle up here instead of building its labelled key each time is what keeps the
/// recorder off the request's bill.
fn record_latency(
    method: &'static str,
    route: Option<&MatchedPath>,
    status: StatusCode,
    latency: Duration,
) {
    let route = route.map_or("unmatched", MatchedPath::as_str);
    HISTOGRAMS.with_borrow_mut(|histograms| {
        if !histograms.contains_key(route) {
            histograms.insert(Box::from(route), Vec::new());
        }
        let Some(handles) = histograms.get_mut(route) else {
            return;
        };
        let known = handles
            .iter()
            .find(|(m, s, _)| *m == method && *s == status)
            .map(|(_, _, histogram)| histogram);
        if let Some(histogram) = known {
            histogram.record(latency.as_secs_f64());
            return;
        }
        let histogram = metrics::histogram!(
            "flash_http_request_duration_seconds",
            "method" => method,
            "route" => route.to_owned(),
            "status" => status.as_str().to_owned(),
        );
        histogram.record(latency.as_secs_f64());
        handles.push((method, status, histogram));
    });
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::{Router, body::Body, routing::get};
    use tokio::sync::Notify;
    use tower::ServiceExt;

    use super::*;
    use crate::config::HttpArgs;

    fn args(max_in_flight: usize, timeout_ms: u64) -> HttpArgs {
        HttpArgs {
            http_body_limit_bytes: 1024,
            http_request_timeout_ms: timeout_ms,
            http_max_in_flight: max_in_flight,
            http_header_read_timeout_ms: 1_000,
            http_max_connections: 16,
            listener: None,
            ops_addr: None,
            shutdown_grace_ms: 1_000,
            cors_allowed_origins: vec![],
        }
    }

    fn get_request(path: &str) -> Request {
        Request::get(path)
            .body(Body::empty())
            .expect("a static request")
    }

    async fn problem_type(response: Response) -> String {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        body["type"].as_str().unwrap().to_owned()
    }

    #[tokio::test]
    async fn a_request_without_an_id_gets_one_and_a_given_id_is_echoed() {
        let app = super::super::with_middleware(
            Router::new().route("/edge/id", get(|| async { "ok" })),
            &args(16, 1_000),
        );
        let generated = app.clone().oneshot(get_request("/edge/id")).await.unwrap();
        let id = generated.headers()[REQUEST_ID].to_str().unwrap();
        assert!(Uuid::parse_str(id).is_ok(), "{id} is not a UUID");

        let mut request = get_request("/edge/id");
        request
            .headers_mut()
            .insert(REQUEST_ID, HeaderValue::from_static("caller-7"));
        let echoed = app.oneshot(request).await.unwrap();
        assert_eq!(echoed.headers()[REQUEST_ID], "caller-7");
    }

    async fn buggy() -> &'static str {
        panic!("handler bug")
    }

    #[tokio::test]
    async fn a_panicking_handler_is_answered_500_problem_and_the_service_goes_on() {
        let app = super::super::with_middleware(
            Router::new()
                .route("/edge/panic", get(buggy))
                .route("/edge/fine", get(|| async { "ok" })),
            &args(1, 1_000),
        );
        let response = app
            .clone()
            .oneshot(get_request("/edge/panic"))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(response.headers().contains_key(REQUEST_ID));
        assert_eq!(problem_type(response).await, "/problems/internal");
        // The panicked request gave its one in-flight place back.
        let next = app.oneshot(get_request("/edge/fine")).await.unwrap();
        assert_eq!(next.status(), StatusCode::OK);
    }

    #[test]
    fn only_a_nonzero_wait_asks_to_wait() {
        for (query, waits) in [
            (None, false),
            (Some(""), false),
            (Some("wait="), false),
            (Some("wait=0"), false),
            (Some("wait=000"), false),
            (Some("await=5"), false),
            (Some("wait=20"), true),
            (Some("a=1&wait=05"), true),
        ] {
            assert_eq!(asks_to_wait(query), waits, "{query:?}");
        }
    }

    #[tokio::test]
    async fn a_request_over_the_timeout_is_answered_503_with_retry_after() {
        let app = super::super::with_middleware(
            Router::new().route(
                "/edge/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    "too late"
                }),
            ),
            &args(16, 50),
        );
        let response = app.oneshot(get_request("/edge/slow")).await.unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()["retry-after"], "1");
        assert_eq!(problem_type(response).await, "/problems/unavailable");
    }

    #[tokio::test]
    async fn requests_beyond_the_in_flight_limit_of_any_route_are_shed_until_a_place_frees() {
        let arrived = Arc::new(Notify::new());
        let release = Arc::new(Notify::new());
        let (arrived_in, release_in) = (Arc::clone(&arrived), Arc::clone(&release));
        let app = super::super::with_middleware(
            Router::new()
                .route(
                    "/edge/held",
                    get(move || {
                        let (arrived, release) = (Arc::clone(&arrived_in), Arc::clone(&release_in));
                        async move {
                            arrived.notify_one();
                            release.notified().await;
                            "released"
                        }
                    }),
                )
                .route("/edge/other", get(|| async { "ok" })),
            &args(1, 10_000),
        );
        let held = tokio::spawn(app.clone().oneshot(get_request("/edge/held")));
        arrived.notified().await;

        // The limit is the service's, not the route's: another route is shed too.
        let shed = app
            .clone()
            .oneshot(get_request("/edge/other"))
            .await
            .unwrap();
        assert_eq!(shed.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(shed.headers()["retry-after"], "1");

        release.notify_one();
        assert_eq!(held.await.unwrap().unwrap().status(), StatusCode::OK);
        let after = app.oneshot(get_request("/edge/other")).await.unwrap();
        assert_eq!(after.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn every_answer_is_counted_by_route_template_method_and_status() {
        let app = super::super::with_middleware(
            Router::new().route("/edge/counted/{id}", get(|| async { "ok" })),
            &args(16, 1_000),
        );
        for id in ["a", "b", "c"] {
            let path = format!("/edge/counted/{id}");
            let response = app.clone().oneshot(get_request(&path)).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
        }
        let unmatched = app.oneshot(get_request("/edge/nowhere")).await.unwrap();
        assert_eq!(unmatched.status(), StatusCode::NOT_FOUND);

        let text = crate::telemetry::render_metrics();
        let count = |labels: &str| {
            text.lines()
                .find(|l| {
                    l.starts_with("flash_http_request_duration_seconds_count")
                        && labels.split(',').all(|part| l.contains(part))
                })
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|n| n.parse::<u64>().ok())
        };
        assert_eq!(
            count(r#"method="GET",route="/edge/counted/{id}",status="200""#),
            Some(3),
            "{text}"
        );
        assert!(
            count(r#"route="unmatched",status="404""#).is_some(),
            "{text}"
        );
    }
}
