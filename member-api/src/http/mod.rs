//! The HTTP surface of member-api: shared state, the router, and the OpenAPI document.

mod auth;
mod members;

use std::sync::Arc;

use axum::{Router, extract::FromRef, routing::get};
use flash_core::http::BearerSecurity;
use flash_core::{
    auth::{Authenticator, keys::JwtSigner},
    client_address::ClientAddress,
    config::HttpArgs,
    http::Readiness,
    nats::Subjects,
    problem::{FieldError, ProblemBody},
};
use sqlx::PgPool;
use utoipa::OpenApi;

use crate::{limits::Limits, order_history::OrderHistory, password::Passwords};

/// What every handler can reach.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) db: PgPool,
    pub(crate) auth: Arc<Authenticator>,
    pub(crate) signer: Arc<JwtSigner>,
    pub(crate) passwords: Arc<Passwords>,
    pub(crate) limits: Arc<Limits>,
    /// Who the client is, for the login limit per address.
    pub(crate) client_address: ClientAddress,
    pub(crate) jetstream: async_nats::jetstream::Context,
    pub(crate) subjects: Subjects,
    pub(crate) refresh_ttl: chrono::Duration,
    pub(crate) order_history: Arc<OrderHistory>,
}

impl FromRef<AppState> for Arc<Authenticator> {
    fn from_ref(state: &AppState) -> Self {
        Arc::clone(&state.auth)
    }
}

/// The whole application: API routes, ops routes, OpenAPI, and the shared middleware.
pub(crate) fn router(state: AppState, readiness: Readiness, http: &HttpArgs) -> Router {
    let api = Router::new()
        .merge(members::router())
        .merge(auth::router())
        .route("/openapi.json", get(openapi_json))
        .with_state(state);
    flash_core::http::with_middleware(
        api.merge(flash_core::http::ops_router(readiness, http)),
        http,
    )
}

async fn openapi_json() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(ApiDoc::openapi())
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "member-api",
        description = "Members of the flash-sale shop: signup, login with rotating refresh \
                       tokens, logout, profile and email verification. Errors are RFC 7807 \
                       application/problem+json."
    ),
    paths(
        members::create_member,
        members::get_me,
        members::request_verification_email,
        members::verify_email,
        auth::login,
        auth::refresh,
        auth::logout,
    ),
    components(schemas(ProblemBody, FieldError)),
    modifiers(&BearerSecurity),
    tags((name = "members"), (name = "auth"))
)]
struct ApiDoc;
