//! `GET /sales/{id}`: the waiting-room page (plain HTML, CSS and JS; no build step).
//!
//! The page calls only its own origin: the door's ticket routes, and member-api (login) and
//! catalog-api (sale details) through the door's gateway. See [`flash_core::page`] for how it
//! is served.

use std::sync::Arc;

use axum::{Router, extract::State, response::Response, routing::get};
use flash_core::{extract::Path, page::HtmlPage};
use uuid::Uuid;

use super::AppState;

const TEMPLATE: &str = include_str!("waiting_room.html");

/// Renders the page (once, at start-up).
pub(crate) fn waiting_room_page() -> anyhow::Result<Arc<HtmlPage>> {
    Ok(Arc::new(HtmlPage::render(TEMPLATE, &[])?))
}

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/sales/{id}", get(waiting_room))
}

// GET /sales/{id} → the waiting-room page (HTML)
async fn waiting_room(State(state): State<AppState>, Path(_sale): Path<Uuid>) -> Response {
    state.waiting_room.response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_calls_only_its_own_origin() {
        let page = waiting_room_page().unwrap();
        assert!(!page.html().contains("{{"));
        assert!(page.html().contains("fetch(`/auth/login`"));
        let csp = page.csp().to_str().unwrap();
        assert!(csp.contains("connect-src 'self';"), "{csp}");
    }
}
