//! The HTTP surface of the front door: shared state, the router, and the OpenAPI document.

mod tickets;
mod waiting_room;

pub(crate) use tickets::LONG_POLL_ROUTE;
pub(crate) use waiting_room::waiting_room_page;

use std::sync::Arc;

use axum::{Router, extract::FromRef, routing::get};
use flash_core::{
    auth::Authenticator,
    client_address::ClientAddress,
    config::HttpArgs,
    http::{BearerSecurity, LongPolls, Readiness},
    problem::{FieldError, ProblemBody},
};
use sqlx::PgPool;
use utoipa::OpenApi;

use crate::{
    gate::Gate,
    limits::{EntryLimits, PollMisses},
    long_polls::MemberLongPolls,
    queue::Queue,
};

/// What every handler can reach: one shared [`Shared`] behind an `Arc`, because axum clones
/// the state for every request and the door's parts (scripts, key prefixes, the JetStream
/// context) would otherwise be copied, allocations and all, thousands of times a second.
#[derive(Clone)]
pub(crate) struct AppState(Arc<Shared>);

impl AppState {
    pub(crate) fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The door's parts every handler uses.
pub(crate) struct Shared {
    pub(crate) db: PgPool,
    pub(crate) auth: Arc<Authenticator>,
    pub(crate) gate: Gate,
    pub(crate) queue: Queue,
    pub(crate) limits: Arc<EntryLimits>,
    /// Polls of tickets that do not exist, per member.
    pub(crate) poll_misses: Arc<PollMisses>,
    pub(crate) queue_max_depth: u64,
    /// Each member's waiting long-polls.
    pub(crate) long_polls: Arc<MemberLongPolls>,
    pub(crate) waiting_room: Arc<flash_core::page::HtmlPage>,
    /// Who the client is, for the per-address entry limit.
    pub(crate) client_address: ClientAddress,
}

impl FromRef<AppState> for Arc<Authenticator> {
    fn from_ref(state: &AppState) -> Self {
        Arc::clone(&state.auth)
    }
}

/// The whole application: API routes, the gateway's forwarding routes, ops routes, OpenAPI,
/// and the shared middleware.
pub(crate) fn router(
    state: AppState,
    gateway: Router,
    readiness: Readiness,
    http: &HttpArgs,
    long_polls: LongPolls,
) -> Router {
    let api = tickets::router()
        .merge(waiting_room::router())
        .route("/openapi.json", get(openapi_json))
        .with_state(state)
        .merge(gateway);
    flash_core::http::with_middleware_and_long_polls(
        api.merge(flash_core::http::ops_router(readiness, http)),
        http,
        long_polls,
    )
}

async fn openapi_json() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(ApiDoc::openapi())
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "admission",
        description = "The flash-sale front door: enter a sale to get a waiting-room ticket, then \
                       poll it until it is final. Errors are RFC 7807 application/problem+json. \
                       The door also forwards /members*, /auth/* (member-api) and /products*, \
                       /flash-sales*, /orders*, /cart* (catalog-api), so browsers and apps use one \
                       origin; those routes are documented in each service's own /openapi.json."
    ),
    paths(tickets::create_ticket, tickets::my_ticket, tickets::get_ticket),
    components(schemas(ProblemBody, FieldError)),
    modifiers(&BearerSecurity),
    tags((name = "tickets"))
)]
struct ApiDoc;
