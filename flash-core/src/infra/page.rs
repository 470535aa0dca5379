//! Single-file HTML pages served by the services (the waiting room, the admin console): plain
//! HTML, CSS and JS with no build step, rendered once at start-up with the public URLs they
//! call, and served under a Content-Security-Policy that allows exactly their own inline
//! script and style (by hash) and calls to this origin and those URLs.

use axum::{
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};
use base64::{Engine, engine::general_purpose::STANDARD};
use sha2::{Digest, Sha256};

/// A rendered HTML page and the Content-Security-Policy it is served under.
#[derive(Debug, Clone)]
pub struct HtmlPage {
    html: String,
    csp: HeaderValue,
}

impl HtmlPage {
    /// Renders `template`, replacing each `{{NAME}}` of `urls` with its URL (attribute-escaped,
    /// without a trailing slash); the page may call this origin and exactly those URLs.
    ///
    /// # Errors
    /// When a URL cannot go into a header (a control character).
    pub fn render(template: &str, urls: &[(&str, &str)]) -> anyhow::Result<Self> {
        let mut html = template.to_owned();
        let mut connect = String::from("'self'");
        for (name, url) in urls {
            let url = attribute(url.trim_end_matches('/'));
            html = html.replace(&format!("{{{{{name}}}}}"), &url);
            connect.push(' ');
            connect.push_str(&url);
        }
        let csp = format!(
            "default-src 'none'; script-src '{}'; style-src '{}'; connect-src {connect}; \
             base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            inline_hash(&html, "<script>", "</script>"),
            inline_hash(&html, "<style>", "</style>"),
        );
        Ok(Self {
            csp: HeaderValue::from_str(&csp)?,
            html,
        })
    }

    /// The page's HTML.
    pub fn html(&self) -> &str {
        &self.html
    }

    /// The page's Content-Security-Policy.
    pub fn csp(&self) -> &HeaderValue {
        &self.csp
    }

    /// The page as a response, with its policy and the headers every page carries.
    pub fn response(&self) -> Response {
        let mut response = self.html.clone().into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        headers.insert(header::CONTENT_SECURITY_POLICY, self.csp.clone());
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

#[cfg(test)]
mod tests {
    use super::*;

    const TEMPLATE: &str =
        r#"<meta name="api" content="{{API_URL}}"><style>p{}</style><script>go()</script>"#;

    #[test]
    fn the_page_names_its_services_and_pins_its_inline_code() {
        let page = HtmlPage::render(TEMPLATE, &[("API_URL", "http://api.example/")]).unwrap();
        assert!(page.html().contains(r#"content="http://api.example""#));
        assert!(!page.html().contains("{{"));
        let csp = page.csp().to_str().unwrap();
        assert!(csp.contains("script-src 'sha256-"), "{csp}");
        assert!(
            csp.contains("connect-src 'self' http://api.example;"),
            "{csp}"
        );
    }

    #[test]
    fn urls_cannot_break_out_of_the_attribute() {
        let page = HtmlPage::render(
            TEMPLATE,
            &[("API_URL", r#"http://x"><script>alert(1)</script>"#)],
        )
        .unwrap();
        assert!(!page.html().contains("<script>alert(1)"));
    }
}
