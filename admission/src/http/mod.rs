//! The HTTP surface of the front door: shared state, the router, and the OpenAPI document.

mod tickets;
mod waiting_room;

pub(crate) use waiting_room::waiting_room_page;

use std::sync::Arc;

use axum::{Router, extract::FromRef, routing::get};
use flash_core::{
    auth::Authenticator,
    config::HttpArgs,
    http::{BearerSecurity, Readiness},
    problem::{FieldError, ProblemBody},
};
use sqlx::PgPool;
use utoipa::OpenApi;

use crate::{gate::Gate, limits::EntryLimits, queue::Queue};

/// What every handler can reach.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) db: PgPool,
    pub(crate) auth: Arc<Authenticator>,
    pub(crate) gate: Gate,
    pub(crate) queue: Queue,
    pub(crate) limits: Arc<EntryLimits>,
    pub(crate) queue_max_depth: u64,
    pub(crate) long_poll_max_secs: u64,
    pub(crate) waiting_room: Arc<flash_core::page::Page>,
    /// The header a trusted balancer puts the client's address in (its first entry), if any.
    pub(crate) client_address_header: Option<axum::http::HeaderName>,
}

impl AppState {
    /// The client's address for the per-address entry limit: from the configured header when
    /// it holds one, else the connection's peer.
    pub(crate) fn client_address(
        &self,
        headers: &axum::http::HeaderMap,
        peer: std::net::SocketAddr,
    ) -> std::net::IpAddr {
        self.client_address_header
            .as_ref()
            .and_then(|name| headers.get(name))
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .and_then(|first| first.trim().parse().ok())
            .unwrap_or_else(|| peer.ip())
    }
}

impl FromRef<AppState> for Arc<Authenticator> {
    fn from_ref(state: &AppState) -> Self {
        Arc::clone(&state.auth)
    }
}

/// The whole application: API routes, ops routes, OpenAPI, and the shared middleware.
pub(crate) fn router(state: AppState, readiness: Readiness, http: &HttpArgs) -> Router {
    let api = tickets::router()
        .merge(waiting_room::router())
        .route("/openapi.json", get(openapi_json))
        .with_state(state);
    flash_core::http::with_middleware(api.merge(flash_core::http::ops_router(readiness)), http)
}

async fn openapi_json() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(ApiDoc::openapi())
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "admission",
        description = "The flash-sale front door: enter a sale to get a waiting-room ticket, then \
                       poll it until it is final. Errors are RFC 7807 application/problem+json."
    ),
    paths(tickets::create_ticket, tickets::get_ticket),
    components(schemas(ProblemBody, FieldError)),
    modifiers(&BearerSecurity),
    tags((name = "tickets"))
)]
struct ApiDoc;
