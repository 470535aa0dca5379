//! `GET /console`: the live admin console (plain HTML, CSS and JS; no build step). It logs in
//! through member-api, lists the live and upcoming sales, and every second reads the chosen
//! sale's `/flash-sales/{id}/stats`, showing the figures and a chart of admitted and drained
//! tickets per second over the last minute; pause and resume are one click. The page itself
//! holds no data: every figure comes from an admin-only endpoint.

use std::sync::Arc;

use axum::{Router, extract::State, response::Response, routing::get};
use flash_core::page::HtmlPage;

use crate::state::AppState;

const TEMPLATE: &str = include_str!("console.html");

/// Renders the console for member-api's public URL (where it logs in).
pub(crate) fn console_page(member_url: &str) -> anyhow::Result<Arc<HtmlPage>> {
    Ok(Arc::new(HtmlPage::render(
        TEMPLATE,
        &[("MEMBER_URL", member_url)],
    )?))
}

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/console", get(console))
}

// GET /console → the admin console (HTML)
async fn console(State(state): State<AppState>) -> Response {
    state.console.response()
}
