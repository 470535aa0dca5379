//! CORS, paid for only by requests that can be CORS requests.
//!
//! tower-http's CORS layer builds a header map for every request and adds its headers to every
//! response: ~4,600 instructions of a waiting-room poll that costs ~67,000 in all (callgrind).
//! Only a request carrying `Origin` can be a CORS request (the Fetch standard), so the others
//! skip the layer; their responses still get its `Vary`, which a cache needs either way.

use std::{
    convert::Infallible,
    sync::Arc,
    task::{Context, Poll},
};

use axum::{
    extract::Request,
    http::{HeaderValue, header},
    response::Response,
};
use futures::{
    FutureExt,
    future::{Either, Map},
};
use tower::{Layer, Service};
use tower_http::cors::{CorsLayer, ResponseFuture};

/// What tower-http's layer puts in `Vary` (its default), for responses that skip it.
const VARY: HeaderValue = HeaderValue::from_static(
    "origin, access-control-request-method, access-control-request-headers",
);

/// Wraps each route in [`OriginGated`].
#[derive(Clone)]
pub(super) struct OriginGatedLayer {
    cors: Arc<CorsLayer>,
}

impl OriginGatedLayer {
    /// Applies `cors` to requests that carry `Origin`.
    pub(super) fn new(cors: CorsLayer) -> Self {
        Self {
            cors: Arc::new(cors),
        }
    }
}

impl<S> Layer<S> for OriginGatedLayer {
    type Service = OriginGated<S>;

    fn layer(&self, inner: S) -> OriginGated<S> {
        OriginGated {
            cors: Arc::clone(&self.cors),
            inner,
        }
    }
}

/// The route behind CORS for requests with `Origin`, and straight for the rest.
///
/// axum clones a route for every request it serves, so the CORS settings sit behind an `Arc`
/// and the CORS service is built only for a request that needs it.
#[derive(Clone)]
pub(super) struct OriginGated<S> {
    cors: Arc<CorsLayer>,
    inner: S,
}

type Plain<F> = Map<F, fn(Result<Response, Infallible>) -> Result<Response, Infallible>>;

impl<S> Service<Request> for OriginGated<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<ResponseFuture<S::Future>, Plain<S::Future>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        if request.headers().contains_key(header::ORIGIN) {
            // The clone that was made ready serves this request; a fresh one waits for the
            // next. The CORS service adds nothing to readiness: its settings are checked when
            // the rules are built (a list of origins, no credentials, no wildcards).
            let ready = self.inner.clone();
            let inner = std::mem::replace(&mut self.inner, ready);
            Either::Left(self.cors.layer(inner).call(request))
        } else {
            let vary: fn(Result<Response, Infallible>) -> Result<Response, Infallible> =
                |response| {
                    response.map(|mut response| {
                        response.headers_mut().append(header::VARY, VARY);
                        response
                    })
                };
            Either::Right(self.inner.call(request).map(vary))
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::{Router, body::Body, routing::get};
    use tower::ServiceExt;

    use crate::config::HttpArgs;

    fn app() -> Router {
        let args = HttpArgs {
            http_body_limit_bytes: 1024,
            http_request_timeout_ms: 1_000,
            http_max_in_flight: 16,
            http_header_read_timeout_ms: 1_000,
            http_max_connections: 16,
            listener: None,
            ops_addr: None,
            shutdown_grace_ms: 1_000,
            cors_allowed_origins: vec!["https://shop.example".to_owned()],
        };
        super::super::with_middleware(Router::new().route("/cors", get(|| async { "ok" })), &args)
    }

    fn request(origin: Option<&str>) -> Request<Body> {
        let mut request = axum::http::Request::get("/cors");
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        request.body(Body::empty()).expect("a static request")
    }

    use axum::http::Request;

    #[tokio::test]
    async fn an_allowed_origin_gets_cors_headers_and_others_do_not() {
        let allowed = app()
            .oneshot(request(Some("https://shop.example")))
            .await
            .unwrap();
        assert_eq!(
            allowed.headers()["access-control-allow-origin"],
            "https://shop.example"
        );
        assert!(
            allowed
                .headers()
                .contains_key("access-control-expose-headers")
        );
        let stranger = app()
            .oneshot(request(Some("https://elsewhere.example")))
            .await
            .unwrap();
        assert!(
            !stranger
                .headers()
                .contains_key("access-control-allow-origin")
        );
    }

    #[tokio::test]
    async fn a_request_without_origin_skips_cors_but_keeps_vary() {
        let plain = app().oneshot(request(None)).await.unwrap();
        assert_eq!(plain.status(), 200);
        assert!(
            !plain
                .headers()
                .contains_key("access-control-expose-headers")
        );
        let vary: Vec<_> = plain.headers().get_all("vary").iter().collect();
        assert_eq!(vary, [super::VARY]);
        let with_origin = app()
            .oneshot(request(Some("https://shop.example")))
            .await
            .unwrap();
        let vary = with_origin.headers().get_all("vary").iter();
        assert_eq!(
            vary.map(|v| v.to_str().unwrap())
                .collect::<Vec<_>>()
                .join(", "),
            super::VARY.to_str().unwrap()
        );
    }
}
