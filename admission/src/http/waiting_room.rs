//! `GET /sales/{id}`: the waiting-room page (plain HTML, CSS and JS; no build step).
//!
//! The page is rendered once at start-up with the public URLs of member-api (login) and
//! catalog-api (sale details), and served with a Content-Security-Policy that allows exactly
//! its own inline script and style (by hash) and calls to this origin and those two.

use std::sync::Arc;

use axum::{
    Router,
    extract::State,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
    routing::get,
};
use base64::{Engine, engine::general_purpose::STANDARD};
use flash_core::extract::Path;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::AppState;

const TEMPLATE: &str = include_str!("waiting_room.html");

/// The rendered page and its security policy.
pub(crate) struct WaitingRoom {
    html: String,
    csp: HeaderValue,
}

impl WaitingRoom {
    /// Renders the page for the given public URLs.
    pub(crate) fn new(member_url: &str, catalog_url: &str) -> anyhow::Result<Arc<Self>> {
        let member_url = attribute(member_url.trim_end_matches('/'));
        let catalog_url = attribute(catalog_url.trim_end_matches('/'));
        let html = TEMPLATE
            .replace("{{MEMBER_URL}}", &member_url)
            .replace("{{CATALOG_URL}}", &catalog_url);
        let csp = format!(
            "default-src 'none'; script-src '{}'; style-src '{}'; connect-src 'self' {member_url} {catalog_url}; \
             base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            inline_hash(&html, "<script>", "</script>"),
            inline_hash(&html, "<style>", "</style>"),
        );
        Ok(Arc::new(Self {
            html,
            csp: HeaderValue::from_str(&csp)?,
        }))
    }
}

/// Escapes text for an HTML attribute value.
fn attribute(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The CSP source (`sha256-…`) of the element between `open` and `close`.
fn inline_hash(html: &str, open: &str, close: &str) -> String {
    let body = html
        .split_once(open)
        .and_then(|(_, rest)| rest.split_once(close))
        .map_or("", |(inner, _)| inner);
    format!(
        "sha256-{}",
        STANDARD.encode(Sha256::digest(body.as_bytes()))
    )
}

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/sales/{id}", get(waiting_room))
}

// GET /sales/{id} → the waiting-room page (HTML)
async fn waiting_room(State(state): State<AppState>, Path(_sale): Path<Uuid>) -> Response {
    let page = &state.waiting_room;
    let mut response = page.html.clone().into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CONTENT_SECURITY_POLICY, page.csp.clone());
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_names_its_services_and_pins_its_inline_code() {
        let page = WaitingRoom::new("http://members.example/", "http://catalog.example").unwrap();
        assert!(page.html.contains(r#"content="http://members.example""#));
        assert!(!page.html.contains("{{"));
        let csp = page.csp.to_str().unwrap();
        assert!(csp.contains("script-src 'sha256-"), "{csp}");
        assert!(
            csp.contains("connect-src 'self' http://members.example http://catalog.example"),
            "{csp}"
        );
    }

    #[test]
    fn urls_cannot_break_out_of_the_attribute() {
        let page = WaitingRoom::new(r#"http://x"><script>alert(1)</script>"#, "http://c").unwrap();
        assert!(!page.html.contains("<script>alert(1)"));
    }
}
