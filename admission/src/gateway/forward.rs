//! One forwarded exchange: where it goes, how its headers are rewritten both ways
//! (hop-by-hop headers out, `X-Forwarded-*` in), the body limit, and what an upstream failure
//! is answered with (502, 504, 413). Path, query, method, the end-to-end headers and the body
//! (streamed) pass unchanged.

use std::net::IpAddr;

use anyhow::Context;
use axum::{
    body::Body,
    extract::Request,
    http::{
        HeaderMap, HeaderName, HeaderValue, Uri, header,
        uri::{Authority, Scheme},
    },
    response::Response,
};
use flash_core::{ApiError, ProblemType};
use http_body_util::{LengthLimitError, Limited};

/// Headers about one connection rather than the message (RFC 9110 §7.6.1), never forwarded
/// either way; so are the headers `Connection` names. `proxy-connection` is the non-standard
/// spelling some old clients still send.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// A service behind the gateway.
#[derive(Debug, Clone)]
pub(super) struct Upstream {
    /// Its name in logs and problem details.
    pub(super) name: &'static str,
    scheme: Scheme,
    authority: Authority,
}

impl Upstream {
    /// `url` must be `http://host:port` with no path: the gateway keeps paths as they are.
    ///
    /// # Errors
    /// When `url` is not such a URL (HTTPS would need a TLS connector the door does not carry;
    /// upstreams are on the private network).
    pub(super) fn parse(name: &'static str, url: &str) -> anyhow::Result<Self> {
        let uri: Uri = url
            .parse()
            .with_context(|| format!("{name} upstream URL {url:?} is not a URL"))?;
        let path_is_root = uri.path_and_query().is_none_or(|p| p.as_str() == "/");
        match (uri.scheme(), uri.authority()) {
            (Some(scheme), Some(authority)) if *scheme == Scheme::HTTP && path_is_root => {
                Ok(Self {
                    name,
                    scheme: scheme.clone(),
                    authority: authority.clone(),
                })
            }
            _ => anyhow::bail!("{name} upstream URL {url:?} must be http://host:port, no path"),
        }
    }

    /// The upstream URI for `original`'s path and query.
    fn uri(&self, original: &Uri) -> Result<Uri, ApiError> {
        let mut parts = original.clone().into_parts();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        Uri::from_parts(parts)
            .map_err(|e| ApiError::bad_request(format!("bad request target: {e}")))
    }
}

/// Where the request came from, as the `X-Forwarded-*` headers will tell the upstream.
#[derive(Debug, Clone, Copy)]
pub(super) struct Origin {
    /// The address the connection came from (the client, or the balancer in front).
    pub(super) peer: IpAddr,
    /// Whether a trusted balancer stands in front, so incoming `X-Forwarded-*` are its own.
    pub(super) behind_balancer: bool,
}

/// 413 before anything is sent upstream when the declared length is over `limit`.
pub(super) fn check_declared_length(headers: &HeaderMap, limit: usize) -> Result<(), ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(length) if length > limit as u64 => Err(too_large(limit)),
        _ => Ok(()),
    }
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        ProblemType::PayloadTooLarge,
        format!("the request body is larger than {limit} bytes"),
    )
}

/// The request as it goes to `upstream`: same method, path, query and end-to-end headers,
/// hop-by-hop headers removed, `X-Forwarded-*` set, `Host` left for the client to set to the
/// upstream's, and the body streamed through a limit of `body_limit` bytes (for bodies
/// without a declared length).
pub(super) fn upstream_request(
    request: Request,
    upstream: &Upstream,
    origin: Origin,
    body_limit: usize,
) -> Result<Request, ApiError> {
    let (mut parts, body) = request.into_parts();
    parts.uri = upstream.uri(&parts.uri)?;
    let headers = &mut parts.headers;
    strip_hop_by_hop(headers);
    // The door already answered any `100-continue` when it started reading the body.
    headers.remove(header::EXPECT);
    set_forwarded(headers, origin);
    headers.remove(header::HOST);
    Ok(Request::from_parts(
        parts,
        Body::new(Limited::new(body, body_limit)),
    ))
}

/// The upstream's response as the client gets it: hop-by-hop headers removed, and the
/// upstream's CORS headers too (at the door's origin the door's CORS policy applies), body
/// streamed.
pub(super) fn client_response(mut response: Response) -> Response {
    let headers = response.headers_mut();
    strip_hop_by_hop(headers);
    let cors: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("access-control-"))
        .cloned()
        .collect();
    for name in cors {
        headers.remove(name);
    }
    response
}

/// What a failed exchange with `upstream` is answered with: 413 when the body outgrew the
/// limit on the way, else 502 (refused, no connection within the connect timeout, reset, or
/// not HTTP). The cause is logged, not sent.
pub(super) fn failure(
    upstream: &Upstream,
    error: &hyper_util::client::legacy::Error,
    limit: usize,
) -> ApiError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(err) = cause {
        if err.is::<LengthLimitError>() {
            return too_large(limit);
        }
        cause = err.source();
    }
    tracing::warn!(upstream = upstream.name, error = ?error, "upstream failed");
    ApiError::new(
        ProblemType::BadGateway,
        format!("{} is not answering; retry later", upstream.name),
    )
}

/// 504 for an upstream that did not answer in time.
pub(super) fn timed_out(upstream: &Upstream) -> ApiError {
    tracing::warn!(upstream = upstream.name, "upstream timed out");
    ApiError::new(
        ProblemType::GatewayTimeout,
        format!("{} did not answer in time; retry later", upstream.name),
    )
}

/// Removes the hop-by-hop headers and every header `Connection` names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::try_from(token.trim()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

/// `X-Forwarded-For` gets the peer appended to what a trusted balancer sent (or is just the
/// peer: a client's own claim is dropped); `X-Forwarded-Proto` and `X-Forwarded-Host` keep a
/// trusted balancer's values, else say what this hop saw.
fn set_forwarded(headers: &mut HeaderMap, origin: Origin) {
    let peer = origin.peer.to_string();
    let chain = origin
        .behind_balancer
        .then(|| joined(headers, &X_FORWARDED_FOR))
        .flatten()
        .map_or_else(|| peer.clone(), |earlier| format!("{earlier}, {peer}"));
    let host = headers.get(header::HOST).cloned();
    if !origin.behind_balancer {
        headers.remove(X_FORWARDED_PROTO);
        headers.remove(X_FORWARDED_HOST);
    }
    if let Ok(chain) = HeaderValue::try_from(chain) {
        headers.insert(X_FORWARDED_FOR, chain);
    }
    if !headers.contains_key(X_FORWARDED_PROTO) {
        // The door serves plain HTTP; TLS ends at the balancer, which then says `https`.
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    }
    if let (false, Some(host)) = (headers.contains_key(X_FORWARDED_HOST), host) {
        headers.insert(X_FORWARDED_HOST, host);
    }
}

/// Every value of `name`, joined as one comma-separated list (`None` when absent).
fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let values: Vec<&str> = headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!values.is_empty()).then(|| values.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_urls_must_be_plain_http_origins() {
        assert!(Upstream::parse("m", "http://127.0.0.1:8082").is_ok());
        assert!(Upstream::parse("m", "http://members.internal:80/").is_ok());
        for bad in [
            "https://x:1",
            "http://x:1/api",
            "x:1",
            "/just/a/path",
            "http://x:1/?q",
        ] {
            assert!(Upstream::parse("m", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn connection_named_headers_are_stripped_with_the_standard_ones() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_static("x-a, X-B"));
        headers.insert("x-a", HeaderValue::from_static("1"));
        headers.insert("x-b", HeaderValue::from_static("2"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1, "{headers:?}");
        assert!(headers.contains_key(header::AUTHORIZATION));
    }

    #[test]
    fn a_clients_own_forwarded_claims_are_replaced_unless_a_balancer_is_trusted() {
        let claims = || {
            let mut headers = HeaderMap::new();
            headers.insert(header::HOST, HeaderValue::from_static("shop.example"));
            headers.append(X_FORWARDED_FOR, HeaderValue::from_static("1.1.1.1"));
            headers.append(X_FORWARDED_FOR, HeaderValue::from_static("2.2.2.2"));
            headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
            headers
        };
        let peer: IpAddr = "10.0.0.9".parse().unwrap();

        let mut direct = claims();
        set_forwarded(
            &mut direct,
            Origin {
                peer,
                behind_balancer: false,
            },
        );
        assert_eq!(direct[&X_FORWARDED_FOR], "10.0.0.9");
        assert_eq!(direct[&X_FORWARDED_PROTO], "http");
        assert_eq!(direct[&X_FORWARDED_HOST], "shop.example");

        let mut balanced = claims();
        set_forwarded(
            &mut balanced,
            Origin {
                peer,
                behind_balancer: true,
            },
        );
        assert_eq!(balanced[&X_FORWARDED_FOR], "1.1.1.1, 2.2.2.2, 10.0.0.9");
        assert_eq!(balanced[&X_FORWARDED_PROTO], "https");
    }
}
