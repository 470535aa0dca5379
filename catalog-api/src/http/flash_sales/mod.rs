//! `/flash-sales`: the definitions admins make and anyone reads, the admin controls of a
//! running sale, its audit trail and its live figures. Every part takes what it shares (the
//! sale row, its status and body, loading and locking it) from [`sale`]; this module only
//! wires their routes.

pub(super) mod audit;
pub(super) mod control;
pub(super) mod definitions;
mod sale;
pub(super) mod stats;
pub(super) mod stock_change;

use axum::Router;

use crate::state::AppState;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .merge(definitions::router())
        .merge(control::router())
        .merge(stock_change::router())
        .merge(audit::router())
        .merge(stats::router())
}
