//! `GET /sales/{id}`: the waiting-room page (plain HTML, CSS and JS; no build step).
//!
//! The page is rendered once at start-up with the public URLs of member-api (login) and
//! catalog-api (sale details); see [`flash_core::page`] for how it is served.

use std::sync::Arc;

use axum::{Router, extract::State, response::Response, routing::get};
use flash_core::{extract::Path, page::Page};
use uuid::Uuid;

use super::AppState;

const TEMPLATE: &str = include_str!("waiting_room.html");

/// Renders the page for the given public URLs.
pub(crate) fn waiting_room_page(member_url: &str, catalog_url: &str) -> anyhow::Result<Arc<Page>> {
    Ok(Arc::new(Page::render(
        TEMPLATE,
        &[("MEMBER_URL", member_url), ("CATALOG_URL", catalog_url)],
    )?))
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
    fn the_page_calls_member_api_and_catalog_api() {
        let page = waiting_room_page("http://members.example/", "http://catalog.example").unwrap();
        assert!(page.html().contains(r#"content="http://members.example""#));
        assert!(!page.html().contains("{{"));
        let csp = page.csp().to_str().unwrap();
        assert!(
            csp.contains("connect-src 'self' http://members.example http://catalog.example"),
            "{csp}"
        );
    }
}
