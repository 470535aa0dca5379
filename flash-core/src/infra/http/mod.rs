//! The HTTP plumbing every service shares: the middleware stack, the problem+json fallbacks,
//! `/healthz` `/readyz` `/metrics`, and serving with graceful shutdown.

mod cors;
mod edge;
mod serve;

pub use edge::{LongPollGrant, LongPolls};

use std::{net::SocketAddr, sync::Arc, time::Duration};

use crate::redis::Redis;
use anyhow::Context;
use axum::{
    Router,
    extract::{DefaultBodyLimit, State},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde::Serialize;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    config::HttpArgs,
    problem::{ApiError, ProblemType},
    telemetry,
};

/// Adds the `bearer` (JWT) security scheme that protected operations of every service's
/// OpenAPI document refer to.
pub struct BearerSecurity;

impl utoipa::Modify for BearerSecurity {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// Header that carries the request id in and out (set when the client sent none). A
/// `HeaderName`, not a `&str`: a `&str` is parsed into a name at every lookup, three times a
/// request.
pub const REQUEST_ID: header::HeaderName = header::HeaderName::from_static("x-request-id");

/// Wraps a service's routes in the shared middleware and problem+json fallbacks.
///
/// Layers, outermost first: CORS (for requests with `Origin`) → the edge layer (request
/// id, log label, latency histogram, panic to 500, 503 beyond `http_max_in_flight` requests at
/// once, 503 after the timeout) → body limit (413, enforced by the JSON extractor).
///
/// The three go on as one layer: `Router::layer` wraps every route in a boxed route per call,
/// and a request clones each box, and everything inside it, on its way in. Three calls made a
/// waiting-room poll clone ten boxes; one makes it clone three.
pub fn with_middleware(router: Router, args: &HttpArgs) -> Router {
    layered(router, args, None)
}

/// [`with_middleware`], with one route whose requests may wait past the request timeout
/// without taking an in-flight place (see [`LongPolls`]).
pub fn with_middleware_and_long_polls(
    router: Router,
    args: &HttpArgs,
    long_polls: LongPolls,
) -> Router {
    layered(router, args, Some(long_polls))
}

fn layered(router: Router, args: &HttpArgs, long_polls: Option<LongPolls>) -> Router {
    router
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer((
            cors::OriginGatedLayer::new(cors(&args.cors_allowed_origins)),
            edge::EdgeLayer::new(args.http_max_in_flight, args.request_timeout(), long_polls),
            DefaultBodyLimit::max(args.http_body_limit_bytes),
        ))
}

fn cors(origins: &[String]) -> tower_http::cors::CorsLayer {
    let allowed: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o.trim()).ok())
        .collect();
    tower_http::cors::CorsLayer::new()
        .allow_origin(allowed)
        .allow_methods([
            axum::http::Method::GET,
            axum::http::Method::POST,
            axum::http::Method::PUT,
            axum::http::Method::PATCH,
            axum::http::Method::DELETE,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::IF_NONE_MATCH,
            header::HeaderName::from_static("idempotency-key"),
        ])
        .expose_headers([header::LOCATION, header::ETAG, header::RETRY_AFTER])
        .max_age(Duration::from_secs(600))
}

async fn route_not_found() -> ApiError {
    ApiError::not_found("no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ProblemType::MethodNotAllowed,
        "this route does not accept that method",
    )
}

/// The dependencies `/readyz` checks; a service registers the ones it uses.
#[derive(Clone)]
pub struct Readiness {
    pg: Option<PgPool>,
    redis: Option<Redis>,
    nats: Option<async_nats::Client>,
    shutdown: CancellationToken,
}

impl Readiness {
    /// Checks nothing yet; reports not ready once `shutdown` is cancelled, so a load balancer
    /// stops sending traffic before the listener closes.
    pub fn new(shutdown: CancellationToken) -> Self {
        Self {
            pg: None,
            redis: None,
            nats: None,
            shutdown,
        }
    }

    /// Also check PostgreSQL.
    #[must_use]
    pub fn with_pg(mut self, pool: PgPool) -> Self {
        self.pg = Some(pool);
        self
    }

    /// Also check Redis.
    #[must_use]
    pub fn with_redis(mut self, redis: Redis) -> Self {
        self.redis = Some(redis);
        self
    }

    /// Also check NATS.
    #[must_use]
    pub fn with_nats(mut self, nats: async_nats::Client) -> Self {
        self.nats = Some(nats);
        self
    }
}

#[derive(Serialize)]
struct ReadyBody {
    ready: bool,
    checks: Vec<Check>,
}

#[derive(Serialize)]
struct Check {
    name: &'static str,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// The ops routes a service's main address serves: `/healthz` (the process is alive), and
/// `/readyz` (its dependencies answer) and `/metrics` unless `http.ops_addr` moves those two to
/// their own address ([`Server::with_ops`]).
///
/// Installs the metrics recorder, so counters recorded from now on are kept.
pub fn ops_router(readiness: Readiness, http: &HttpArgs) -> Router {
    telemetry::metrics_handle();
    if http.ops_addr.is_some() {
        return Router::new().route("/healthz", get(healthz));
    }
    all_ops(readiness)
}

/// `/healthz`, `/readyz` and `/metrics`.
fn all_ops(readiness: Readiness) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        // axum clones the state for every request: one Arc, not three clients.
        .with_state(Arc::new(readiness))
}

async fn healthz() -> &'static str {
    "ok"
}

const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

async fn readyz(State(readiness): State<Arc<Readiness>>) -> Response {
    let mut checks = Vec::new();
    if let Some(pool) = &readiness.pg {
        let outcome = within_timeout(sqlx::query("select 1").execute(pool)).await;
        checks.push(check("postgres", outcome));
    }
    if let Some(redis) = &readiness.redis {
        let mut redis = redis.clone();
        let ping = redis::cmd("PING");
        let outcome = within_timeout(ping.query_async::<String>(&mut redis)).await;
        checks.push(check("redis", outcome));
    }
    if let Some(nats) = &readiness.nats {
        let state = nats.connection_state();
        let outcome = match state {
            async_nats::connection::State::Connected => Ok(()),
            other => Err(format!("connection is {other}")),
        };
        checks.push(check("nats", outcome));
    }
    if readiness.shutdown.is_cancelled() {
        checks.push(check("shutdown", Err("shutting down".to_owned())));
    }
    let ready = checks.iter().all(|c| c.ok);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(ReadyBody { ready, checks })).into_response()
}

async fn within_timeout<T, E: std::fmt::Display>(
    probe: impl Future<Output = Result<T, E>>,
) -> Result<(), String> {
    match tokio::time::timeout(CHECK_TIMEOUT, probe).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err(format!("no answer within {CHECK_TIMEOUT:?}")),
    }
}

fn check(name: &'static str, outcome: Result<(), String>) -> Check {
    match outcome {
        Ok(()) => Check {
            name,
            ok: true,
            error: None,
        },
        Err(error) => Check {
            name,
            ok: false,
            error: Some(error),
        },
    }
}

async fn metrics() -> Response {
    let mut response = telemetry::render_metrics().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// Binds `addr`, naming it in the error so a port clash is obvious.
///
/// # Errors
/// When the address is taken or not local.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))
}

/// A bound HTTP server, ready to serve: what every service's `App` is built around. Binding
/// happens before serving so that the address (port 0 in tests) is known up front.
pub struct Server {
    listener: TcpListener,
    router: Router,
    /// The ops address's listener and routes, when `OPS_ADDR` is set.
    ops: Option<(TcpListener, Router)>,
    shutdown: CancellationToken,
    grace: Duration,
    connections: serve::Connections,
}

impl Server {
    /// Binds `addr` (or takes `http.listener`, bound already) for `router`; the server stops
    /// when `shutdown` is cancelled.
    ///
    /// # Errors
    /// When the address is taken or not local.
    pub async fn bind(
        addr: SocketAddr,
        router: Router,
        shutdown: CancellationToken,
        http: &HttpArgs,
    ) -> anyhow::Result<Self> {
        let listener = match &http.listener {
            Some(bound) => {
                let bound = bound.try_clone().context("taking the bound socket")?;
                bound
                    .set_nonblocking(true)
                    .context("making the bound socket non-blocking")?;
                TcpListener::from_std(bound).context("serving on the bound socket")?
            }
            None => bind(addr).await?,
        };
        Ok(Self {
            listener,
            router,
            ops: None,
            shutdown,
            grace: http.shutdown_grace(),
            connections: serve::Connections {
                header_read_timeout: Duration::from_millis(http.http_header_read_timeout_ms),
                max: http.http_max_connections,
            },
        })
    }

    /// Binds `http.ops_addr`, if set, for `/healthz`, `/readyz` and `/metrics` (the main
    /// address's [`ops_router`] then leaves the last two out).
    ///
    /// # Errors
    /// When the ops address is taken or not local.
    pub async fn with_ops(mut self, readiness: Readiness, http: &HttpArgs) -> anyhow::Result<Self> {
        if let Some(addr) = http.ops_addr {
            let listener = bind(addr).await?;
            self.ops = Some((listener, with_middleware(all_ops(readiness), http)));
        }
        Ok(self)
    }

    /// The bound address.
    ///
    /// # Errors
    /// When the socket has no local address, which would be an OS failure.
    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.listener
            .local_addr()
            .context("reading the bound address")
    }

    /// The ops address as bound (tests bind port 0), when there is one.
    ///
    /// # Errors
    /// When the socket has no local address, which would be an OS failure.
    pub fn ops_addr(&self) -> anyhow::Result<Option<SocketAddr>> {
        self.ops
            .as_ref()
            .map(|(listener, _)| listener.local_addr().context("reading the ops address"))
            .transpose()
    }

    /// Serves until shutdown, then stops accepting, lets in-flight requests finish, and gives
    /// up after the grace period.
    ///
    /// # Errors
    /// When the server fails (not on a clean shutdown).
    pub async fn run(self) -> anyhow::Result<()> {
        let main = serve::serve(
            self.listener,
            self.router,
            &self.shutdown,
            self.grace,
            self.connections,
        );
        let Some((listener, router)) = self.ops else {
            return main.await;
        };
        let ops = serve::serve(
            listener,
            router,
            &self.shutdown,
            self.grace,
            self.connections,
        );
        tokio::try_join!(main, ops).map(|((), ())| ())
    }
}
