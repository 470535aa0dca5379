//! The one error type of every HTTP service, rendered as RFC 7807 `application/problem+json`.
//!
//! Handlers return [`ApiError`]; its `type` URIs ([`ProblemType`]) are a stable contract with
//! clients. 5xx answers never carry the internal cause: it is logged, on a line that ends with
//! the request's path and id.

use std::time::Duration;

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;

/// The content type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Stable problem `type`s. Renaming one is a breaking API change; add new ones instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemType {
    /// The request could not be parsed (malformed JSON, bad id, bad query string).
    BadRequest,
    /// The request parsed but a field is invalid; `errors` names each field.
    Validation,
    /// The body is not `application/json`.
    UnsupportedMediaType,
    /// The body is larger than the configured limit.
    PayloadTooLarge,
    /// No valid access token (missing, malformed, expired, forged or logged out).
    Unauthorized,
    /// Authenticated, but the role does not allow this.
    Forbidden,
    /// No such resource, or it belongs to someone else.
    NotFound,
    /// The path exists but not with this method.
    MethodNotAllowed,
    /// The request conflicts with the current state.
    Conflict,
    /// Signup with an email that already has an account.
    EmailTaken,
    /// An order asked for more units than are left.
    OutOfStock,
    /// A delivered order's return window has closed; `deadline` says when it did.
    ReturnWindowClosed,
    /// The flash sale has not started; `starts_at` says when it does.
    SaleNotStarted,
    /// The flash sale ended or was cancelled.
    SaleEnded,
    /// The flash sale asks each entry for a proof of work; `pow_bits` and `pow_challenge` say
    /// what to solve.
    ProofOfWorkRequired,
    /// Too many requests; retry after `Retry-After` seconds.
    RateLimited,
    /// A dependency (database, Redis, NATS) is unavailable or the server is overloaded.
    Unavailable,
    /// A service behind the front door's gateway refused the connection or failed to answer.
    BadGateway,
    /// A service behind the front door's gateway did not answer in time.
    GatewayTimeout,
    /// An unexpected failure on our side.
    Internal,
}

impl ProblemType {
    /// The `type` URI, relative to the service's origin.
    pub fn uri(self) -> &'static str {
        match self {
            Self::BadRequest => "/problems/bad-request",
            Self::Validation => "/problems/validation",
            Self::UnsupportedMediaType => "/problems/unsupported-media-type",
            Self::PayloadTooLarge => "/problems/payload-too-large",
            Self::Unauthorized => "/problems/unauthorized",
            Self::Forbidden => "/problems/forbidden",
            Self::NotFound => "/problems/not-found",
            Self::MethodNotAllowed => "/problems/method-not-allowed",
            Self::Conflict => "/problems/conflict",
            Self::EmailTaken => "/problems/email-taken",
            Self::OutOfStock => "/problems/out-of-stock",
            Self::ReturnWindowClosed => "/problems/return-window-closed",
            Self::SaleNotStarted => "/problems/sale-not-started",
            Self::SaleEnded => "/problems/sale-ended",
            Self::ProofOfWorkRequired => "/problems/proof-of-work-required",
            Self::RateLimited => "/problems/rate-limited",
            Self::Unavailable => "/problems/unavailable",
            Self::BadGateway => "/problems/bad-gateway",
            Self::GatewayTimeout => "/problems/gateway-timeout",
            Self::Internal => "/problems/internal",
        }
    }

    /// The short, human-readable summary that goes in `title`.
    pub fn title(self) -> &'static str {
        match self {
            Self::BadRequest => "Bad request",
            Self::Validation => "Validation failed",
            Self::UnsupportedMediaType => "Unsupported media type",
            Self::PayloadTooLarge => "Payload too large",
            Self::Unauthorized => "Unauthorized",
            Self::Forbidden => "Forbidden",
            Self::NotFound => "Not found",
            Self::MethodNotAllowed => "Method not allowed",
            Self::Conflict => "Conflict",
            Self::EmailTaken => "Email already registered",
            Self::OutOfStock => "Out of stock",
            Self::ReturnWindowClosed => "Return window closed",
            Self::SaleNotStarted => "Sale not started",
            Self::SaleEnded => "Sale ended",
            Self::ProofOfWorkRequired => "Proof of work required",
            Self::RateLimited => "Too many requests",
            Self::Unavailable => "Service unavailable",
            Self::BadGateway => "Bad gateway",
            Self::GatewayTimeout => "Gateway timeout",
            Self::Internal => "Internal server error",
        }
    }

    /// The HTTP status this type is always sent with.
    pub fn status(self) -> StatusCode {
        match self {
            Self::BadRequest => StatusCode::BAD_REQUEST,
            Self::Validation => StatusCode::UNPROCESSABLE_ENTITY,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict | Self::EmailTaken | Self::OutOfStock | Self::ReturnWindowClosed => {
                StatusCode::CONFLICT
            }
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::SaleNotStarted => StatusCode::TOO_EARLY,
            Self::SaleEnded => StatusCode::GONE,
            Self::ProofOfWorkRequired => StatusCode::PRECONDITION_REQUIRED,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::BadGateway => StatusCode::BAD_GATEWAY,
            Self::GatewayTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// One invalid field of a request body.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct FieldError {
    /// The field's name as sent by the client.
    pub field: String,
    /// What is wrong with it, in words a client can show.
    pub message: String,
}

impl FieldError {
    /// A field error from anything string-like.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// The body of every error response (RFC 7807).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProblemBody {
    /// Stable URI identifying the kind of problem.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Short summary of the kind.
    pub title: &'static str,
    /// The HTTP status, repeated for clients that lose headers.
    pub status: u16,
    /// What went wrong with this request.
    pub detail: String,
    /// Per-field problems, for validation errors.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// When a sale that has not started opens (RFC 7807 extension member).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub starts_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Leading zero bits the proof of work must reach (extension member).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pow_bits: Option<u32>,
    /// What to hash, followed by the nonce (extension member).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pow_challenge: Option<String>,
    /// When a return window closed (extension member).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deadline: Option<chrono::DateTime<chrono::Utc>>,
    /// Each line an order could not have, and why (extension member), so a shopper can fix
    /// the whole cart at once instead of one refusal at a time.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unavailable: Vec<UnavailableItem>,
}

/// A line of a cart or order that cannot be sold as asked.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct UnavailableItem {
    /// The product.
    pub product_id: uuid::Uuid,
    /// `inactive` (no longer sold), `out_of_stock` or `unknown`.
    pub reason: &'static str,
    /// Units asked for.
    pub requested: i32,
    /// Units that could be sold now.
    pub available: i32,
}

/// Every way a request can fail, each mapped to one status and problem type.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A client error of the given kind, with a detail fit to show the client.
    #[error("{detail}")]
    Problem {
        /// The problem type (and so the status).
        kind: ProblemType,
        /// What went wrong, for the client.
        detail: String,
    },
    /// Invalid fields in an otherwise well-formed request.
    #[error("request is invalid")]
    Validation(Vec<FieldError>),
    /// The flash sale opens at `starts_at`; answered 425 with `Retry-After`.
    #[error("the sale has not started")]
    SaleNotStarted {
        /// When it opens.
        starts_at: chrono::DateTime<chrono::Utc>,
    },
    /// The sale wants a proof of work with the entry (428): a nonce such that SHA-256 of
    /// `challenge` + nonce starts with `bits` zero bits.
    #[error("proof of work required")]
    ProofOfWorkRequired {
        /// Leading zero bits required.
        bits: u32,
        /// The text to hash before the nonce.
        challenge: String,
    },
    /// Some lines cannot be sold as asked (409 out of stock); each is named.
    #[error("items unavailable")]
    ItemsUnavailable(Vec<UnavailableItem>),
    /// The order's return window closed at `deadline` (409).
    #[error("the return window closed")]
    ReturnWindowClosed {
        /// When it closed.
        deadline: chrono::DateTime<chrono::Utc>,
    },
    /// Too many requests; the client may retry after the given time.
    #[error("too many requests")]
    RateLimited {
        /// When a retry may succeed.
        retry_after: Duration,
    },
    /// A dependency is down or the server is overloaded; retrying later may succeed.
    #[error("service unavailable")]
    Unavailable {
        /// When a retry may succeed.
        retry_after: Duration,
        /// What the client is told: which of the service's 503s this is, in words that name
        /// no internals.
        detail: &'static str,
        /// The cause, logged and never sent.
        #[source]
        source: anyhow::Error,
    },
    /// An unexpected failure; logged, answered with an opaque 500.
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    /// A client error of `kind` with a detail for the client.
    pub fn new(kind: ProblemType, detail: impl Into<String>) -> Self {
        Self::Problem {
            kind,
            detail: detail.into(),
        }
    }

    /// 400 with the given detail.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(ProblemType::BadRequest, detail)
    }

    /// 401 with the given detail.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(ProblemType::Unauthorized, detail)
    }

    /// 404 with the given detail.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(ProblemType::NotFound, detail)
    }

    /// 422 for a single invalid field.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError::new(field, message)])
    }

    /// 503 caused by an unreachable dependency.
    pub fn unavailable(source: impl Into<anyhow::Error>) -> Self {
        Self::unavailable_because("a dependency is unavailable; retry later", source)
    }

    /// A 503 whose answer says which it is (`detail`), for a service with several, so a
    /// client can tell them apart; `source` is logged, never sent.
    pub fn unavailable_because(detail: &'static str, source: impl Into<anyhow::Error>) -> Self {
        Self::Unavailable {
            retry_after: Duration::from_secs(1),
            detail,
            source: source.into(),
        }
    }

    /// The problem type this error renders as.
    pub fn kind(&self) -> ProblemType {
        match self {
            Self::Problem { kind, .. } => *kind,
            Self::Validation(_) => ProblemType::Validation,
            Self::SaleNotStarted { .. } => ProblemType::SaleNotStarted,
            Self::ItemsUnavailable(_) => ProblemType::OutOfStock,
            Self::ReturnWindowClosed { .. } => ProblemType::ReturnWindowClosed,
            Self::ProofOfWorkRequired { .. } => ProblemType::ProofOfWorkRequired,
            Self::RateLimited { .. } => ProblemType::RateLimited,
            Self::Unavailable { .. } => ProblemType::Unavailable,
            Self::Internal(_) => ProblemType::Internal,
        }
    }
}

impl From<sqlx::Error> for ApiError {
    /// A pool that cannot hand out a connection, or a lost connection, is a dependency being
    /// unavailable (503); anything else is a bug or a schema mismatch (500).
    fn from(err: sqlx::Error) -> Self {
        match err {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                Self::unavailable(anyhow::Error::new(err).context("PostgreSQL unavailable"))
            }
            other => Self::Internal(anyhow::Error::new(other).context("database error")),
        }
    }
}

impl From<::redis::RedisError> for ApiError {
    fn from(err: ::redis::RedisError) -> Self {
        Self::unavailable(anyhow::Error::new(err).context("Redis unavailable"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let kind = self.kind();
        let mut errors = Vec::new();
        let mut retry_after = None;
        let mut starts_at = None;
        let mut pow = None;
        let mut deadline = None;
        let mut unavailable = Vec::new();
        let detail = match self {
            Self::Problem { detail, .. } => detail,
            Self::Validation(fields) => {
                let detail = fields
                    .iter()
                    .map(|f| format!("{}: {}", f.field, f.message))
                    .collect::<Vec<_>>()
                    .join("; ");
                errors = fields;
                detail
            }
            Self::SaleNotStarted { starts_at: opens } => {
                let wait = (opens - chrono::Utc::now()).to_std().unwrap_or_default();
                retry_after = Some(wait);
                starts_at = Some(opens);
                format!("the sale starts at {}", opens.to_rfc3339())
            }
            Self::ItemsUnavailable(items) => {
                let detail = format!(
                    "{} item(s) cannot be sold as asked; see `unavailable`",
                    items.len()
                );
                unavailable = items;
                detail
            }
            Self::ReturnWindowClosed { deadline: closed } => {
                deadline = Some(closed);
                format!("the return window closed at {}", closed.to_rfc3339())
            }
            Self::ProofOfWorkRequired { bits, challenge } => {
                let detail = format!(
                    "send X-Proof-Of-Work: a nonce such that SHA-256(pow_challenge + nonce) starts with {bits} zero bits"
                );
                pow = Some((bits, challenge));
                detail
            }
            Self::RateLimited { retry_after: wait } => {
                retry_after = Some(wait);
                "too many requests; retry later".to_owned()
            }
            Self::Unavailable {
                retry_after: wait,
                detail,
                source,
            } => {
                tracing::warn!(error.cause_chain = ?source, error.message = %source, "dependency unavailable");
                retry_after = Some(wait);
                detail.to_owned()
            }
            Self::Internal(source) => {
                tracing::error!(error.cause_chain = ?source, error.message = %source, "request failed");
                "an internal error occurred".to_owned()
            }
        };
        let mut response =
            problem_response(kind, detail, errors, retry_after).with_starts_at(starts_at);
        if let Some((bits, challenge)) = pow {
            response.body.pow_bits = Some(bits);
            response.body.pow_challenge = Some(challenge);
        }
        response.body.deadline = deadline;
        response.body.unavailable = unavailable;
        response.into_response()
    }
}

/// Builds a problem+json response; used by [`ApiError`] and by middleware that has no error
/// value (panics, timeouts, fallbacks).
pub fn problem_response(
    kind: ProblemType,
    detail: String,
    errors: Vec<FieldError>,
    retry_after: Option<Duration>,
) -> ProblemResponse {
    ProblemResponse {
        body: ProblemBody {
            kind: kind.uri(),
            title: kind.title(),
            status: kind.status().as_u16(),
            detail,
            errors,
            starts_at: None,
            pow_bits: None,
            pow_challenge: None,
            deadline: None,
            unavailable: Vec::new(),
        },
        retry_after,
    }
}

/// A problem about to be sent; extension members can still be added.
pub struct ProblemResponse {
    body: ProblemBody,
    retry_after: Option<Duration>,
}

impl ProblemResponse {
    /// Adds the `starts_at` extension member (sales that have not started).
    #[must_use]
    pub fn with_starts_at(mut self, starts_at: Option<chrono::DateTime<chrono::Utc>>) -> Self {
        self.body.starts_at = starts_at;
        self
    }
}

impl IntoResponse for ProblemResponse {
    fn into_response(self) -> Response {
        render(self.body, self.retry_after)
    }
}

fn render(body: ProblemBody, retry_after: Option<Duration>) -> Response {
    let status = StatusCode::from_u16(body.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let unauthorized = status == StatusCode::UNAUTHORIZED;
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    let mut response = (status, bytes).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    if let Some(wait) = retry_after {
        // Retry-After is whole seconds; round up so a client never retries too early.
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        headers.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    }
    if unauthorized {
        headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

/// Maps a named database constraint violation to a client error at the call site.
pub trait ResultExt<T> {
    /// If the error is a violation of `constraint`, turn it into `map(..)`; any other error
    /// becomes an [`ApiError`] as usual.
    fn on_constraint(
        self,
        constraint: &str,
        map: impl FnOnce(Box<dyn sqlx::error::DatabaseError>) -> ApiError,
    ) -> Result<T, ApiError>;
}

impl<T> ResultExt<T> for Result<T, sqlx::Error> {
    fn on_constraint(
        self,
        constraint: &str,
        map: impl FnOnce(Box<dyn sqlx::error::DatabaseError>) -> ApiError,
    ) -> Result<T, ApiError> {
        self.map_err(|err| match err {
            sqlx::Error::Database(db) if db.constraint() == Some(constraint) => map(db),
            other => ApiError::from(other),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_type_has_a_distinct_uri() {
        let all = [
            ProblemType::BadRequest,
            ProblemType::Validation,
            ProblemType::UnsupportedMediaType,
            ProblemType::PayloadTooLarge,
            ProblemType::Unauthorized,
            ProblemType::Forbidden,
            ProblemType::NotFound,
            ProblemType::MethodNotAllowed,
            ProblemType::Conflict,
            ProblemType::EmailTaken,
            ProblemType::OutOfStock,
            ProblemType::SaleNotStarted,
            ProblemType::SaleEnded,
            ProblemType::RateLimited,
            ProblemType::Unavailable,
            ProblemType::BadGateway,
            ProblemType::GatewayTimeout,
            ProblemType::Internal,
        ];
        let uris: std::collections::HashSet<_> = all.iter().map(|k| k.uri()).collect();
        assert_eq!(uris.len(), all.len());
    }

    #[test]
    fn retry_after_is_rounded_up_to_whole_seconds() {
        let response = problem_response(
            ProblemType::RateLimited,
            "slow down".into(),
            vec![],
            Some(Duration::from_millis(1200)),
        )
        .into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        assert_eq!(response.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
    }

    #[tokio::test]
    async fn internal_errors_do_not_leak_their_cause() {
        let err = ApiError::Internal(anyhow::anyhow!("password=hunter2 in connection string"));
        let response = err.into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap();
        let body = String::from_utf8(body.to_vec()).unwrap();
        assert!(!body.contains("hunter2"), "{body}");
        assert!(body.contains("/problems/internal"), "{body}");
    }
}
