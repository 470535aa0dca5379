//! What every handler can reach. A module of its own so that the HTTP modules depend on it and
//! not on the router that wires them (which depends on them).

use std::sync::Arc;

use axum::extract::FromRef;
use flash_core::redis::Redis;
use flash_core::{auth::Authenticator, redis_model::Keys};
use sqlx::PgPool;

use flash_core::redis_model::product_cache::ProductCache;

/// What every handler can reach.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) db: PgPool,
    pub(crate) redis: Redis,
    pub(crate) keys: Keys,
    pub(crate) auth: Arc<Authenticator>,
    pub(crate) cache: ProductCache,
    pub(crate) console: Arc<flash_core::page::HtmlPage>,
    /// How long after delivery a buyer may still return an order.
    pub(crate) return_window: chrono::TimeDelta,
}

impl FromRef<AppState> for Arc<Authenticator> {
    fn from_ref(state: &AppState) -> Self {
        Arc::clone(&state.auth)
    }
}
