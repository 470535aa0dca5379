//! The gateway: the door also forwards `/members*` and `/auth/*` to member-api and
//! `/products*`, `/flash-sales*`, `/orders*`, `/cart*` to catalog-api, so a browser or app
//! talks to one origin. Pooled keep-alive connections, a connect and a response timeout
//! (502/504 problem+json), a body limit (413) and per-route-group rate limits (429).
//!
//! These are routes of their own: the flash-sale routes (`/sales/...`, `/tickets/...`) pay
//! nothing for them.

mod forward;
mod limits;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Router,
    body::Body,
    extract::{ConnectInfo, Request, State},
    response::Response,
    routing::any,
};
use flash_core::{ApiError, config::HttpArgs};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioTimer},
};
use tokio::sync::Semaphore;

use flash_core::client_address::ClientAddress;

use crate::config::GatewayArgs;
use forward::{Origin, Upstream};

/// Idle pooled connections are closed after this long, before a typical upstream or
/// firewall would drop them under a request.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Which upstream a path belongs to, and which rate limit it counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RouteGroup {
    /// `/auth/*` (member-api): login, refresh, logout; limited tightly.
    Auth,
    /// `/members*` (member-api): signup, profile, email verification.
    Members,
    /// catalog-api's routes: products, flash sales, orders, cart.
    Catalog,
}

impl RouteGroup {
    /// The group's name in metrics.
    fn name(self) -> &'static str {
        match self {
            Self::Auth => "auth",
            Self::Members => "members",
            Self::Catalog => "catalog",
        }
    }
}

/// Each forwarded prefix: the path itself and everything below it.
const ROUTES: [(&str, RouteGroup); 6] = [
    ("/auth", RouteGroup::Auth),
    ("/members", RouteGroup::Members),
    ("/products", RouteGroup::Catalog),
    ("/flash-sales", RouteGroup::Catalog),
    ("/orders", RouteGroup::Catalog),
    ("/cart", RouteGroup::Catalog),
];

/// What the forwarding routes share: the pooled client, the upstreams and the limits.
pub(crate) struct Gateway {
    client: Client<HttpConnector, Body>,
    members: Upstream,
    catalog: Upstream,
    limits: limits::RouteLimits,
    client_address: ClientAddress,
    upstream_timeout: Duration,
    body_limit: usize,
    /// One permit per forwarded request in flight (`GATEWAY_MAX_IN_FLIGHT`).
    in_flight: Semaphore,
}

impl Gateway {
    /// The gateway the settings describe; the body limit is the door's own
    /// (`HTTP_BODY_LIMIT_BYTES`). No connection is opened until a request needs one.
    ///
    /// # Errors
    /// When an upstream URL is not `http://host:port`.
    pub(crate) fn new(
        args: &GatewayArgs,
        http: &HttpArgs,
        client_address: ClientAddress,
    ) -> anyhow::Result<Self> {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(args.connect_timeout()));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build(connector);
        Ok(Self {
            client,
            members: Upstream::parse("member-api", &args.member_upstream_url)?,
            catalog: Upstream::parse("catalog-api", &args.catalog_upstream_url)?,
            limits: limits::RouteLimits::new(args),
            client_address,
            upstream_timeout: args.upstream_timeout(),
            body_limit: http.http_body_limit_bytes,
            in_flight: Semaphore::new(args.gateway_max_in_flight.clamp(1, Semaphore::MAX_PERMITS)),
        })
    }

    /// Forgets client addresses whose quotas have fully replenished; run periodically.
    pub(crate) fn forget_idle(&self) {
        self.limits.forget_idle();
    }

    fn upstream(&self, group: RouteGroup) -> &Upstream {
        match group {
            RouteGroup::Auth | RouteGroup::Members => &self.members,
            RouteGroup::Catalog => &self.catalog,
        }
    }

    /// Forwards one request to its group's upstream (any method) and streams the answer back.
    async fn forward(
        &self,
        group: RouteGroup,
        peer: SocketAddr,
        request: Request,
    ) -> Result<Response, ApiError> {
        self.limits
            .check(group, self.client_address.of(request.headers(), peer))?;
        forward::check_declared_length(request.headers(), self.body_limit)?;
        // Held until the upstream's response head is in: the door's own slots stay free for
        // the flash-sale routes however slow an upstream gets.
        let _permit = self.in_flight.try_acquire().map_err(|_| {
            ApiError::unavailable(anyhow::anyhow!("the gateway's in-flight limit is reached"))
        })?;
        let upstream = self.upstream(group);
        let origin = Origin {
            peer: peer.ip(),
            behind_balancer: self.client_address.trusts(peer.ip()),
        };
        let request = forward::upstream_request(request, upstream, origin, self.body_limit)?;
        match tokio::time::timeout(self.upstream_timeout, self.client.request(request)).await {
            Err(_elapsed) => Err(forward::timed_out(upstream)),
            Ok(Err(error)) => Err(forward::failure(upstream, &error, self.body_limit)),
            Ok(Ok(response)) => Ok(forward::client_response(response.map(Body::new))),
        }
    }
}

/// The forwarding routes, each prefix and everything below it, for any method.
pub(crate) fn router(gateway: Arc<Gateway>) -> Router {
    let mut router = Router::new();
    for (prefix, group) in ROUTES {
        let handler = any(
            move |State(gateway): State<Arc<Gateway>>,
                  ConnectInfo(peer): ConnectInfo<SocketAddr>,
                  request: Request| async move {
                gateway.forward(group, peer, request).await
            },
        );
        router = router
            .route(prefix, handler.clone())
            .route(&format!("{prefix}/{{*rest}}"), handler);
    }
    router.with_state(gateway)
}
