//! `/auth`: login, refresh and logout.

use std::net::SocketAddr;

use axum::{
    Router,
    extract::{ConnectInfo, State},
    http::{HeaderMap, StatusCode},
    routing::post,
};
use chrono::{DateTime, Utc};
use flash_core::{
    ApiError,
    auth::AuthMember,
    domain::{Email, MemberId, Role},
    extract::Json,
    problem::ProblemBody,
};
use serde::Deserialize;
use uuid::Uuid;

use super::AppState;
use crate::tokens::{self, Refresh, TokenPair};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/auth/login", post(login))
        .route("/auth/refresh", post(refresh))
        .route("/auth/logout", post(logout))
}

/// The one answer for an unknown email and a wrong password alike (no user enumeration).
const BAD_CREDENTIALS: &str = "email or password is incorrect";

/// Credentials.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LoginRequest {
    #[schema(example = "ann@example.com")]
    email: String,
    #[schema(example = "correct horse battery")]
    password: String,
}

// POST /auth/login → 200 token pair; 401 for unknown email and wrong password alike
#[utoipa::path(
    post, path = "/auth/login", tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in", body = TokenPair),
        (status = 400, description = "Malformed JSON", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "Email or password is incorrect", body = ProblemBody, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "Missing or unknown fields", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "Too many attempts; see Retry-After", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all)]
pub(crate) async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(credentials): Json<LoginRequest>,
) -> Result<Json<TokenPair>, ApiError> {
    // The limit key is the normalised email when it parses, else the raw text lower-cased, so
    // case or spacing variants of one address share a quota.
    let email = Email::parse(&credentials.email).ok();
    let key = email.as_ref().map_or_else(
        || credentials.email.trim().to_lowercase(),
        |e| e.as_str().to_owned(),
    );
    let client = state.client_address.of(&headers, peer);
    state.limits.check_login(client, &key)?;

    let account: Option<(MemberId, Role, String)> = match &email {
        Some(email) => {
            sqlx::query_as("select member_id, role, password_hash from members where email = $1")
                .bind(email.as_str())
                .fetch_optional(&state.db)
                .await?
        }
        None => None,
    };
    let (identity, stored_hash) = match account {
        Some((member, role, hash)) => (Some((member, role)), Some(hash)),
        None => (None, None),
    };
    // Always run one Argon2 verification, against a decoy when the email is unknown, so the
    // response time does not reveal whether an account exists.
    let valid = state
        .passwords
        .verify(credentials.password, stored_hash)
        .await?;
    let Some((member, role)) = identity.filter(|_| valid) else {
        metrics::counter!("flash_member_logins_total", "outcome" => "rejected").increment(1);
        return Err(ApiError::unauthorized(BAD_CREDENTIALS));
    };
    let pair =
        tokens::start_session(&state.db, &state.signer, member, role, state.refresh_ttl).await?;
    metrics::counter!("flash_member_logins_total", "outcome" => "ok").increment(1);
    Ok(Json(pair))
}

/// A refresh token to exchange.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RefreshRequest {
    refresh_token: String,
}

// POST /auth/refresh → 200 new pair; 401 on reuse (and the family is revoked)
#[utoipa::path(
    post, path = "/auth/refresh", tag = "auth",
    request_body = RefreshRequest,
    responses(
        (status = 200, description = "New token pair; the presented refresh token is used up", body = TokenPair),
        (status = 400, description = "Malformed JSON", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "Unknown, expired, revoked or reused refresh token", body = ProblemBody, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "Missing or unknown fields", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all)]
pub(crate) async fn refresh(
    State(state): State<AppState>,
    Json(body): Json<RefreshRequest>,
) -> Result<Json<TokenPair>, ApiError> {
    match tokens::rotate(
        &state.db,
        &state.signer,
        &body.refresh_token,
        state.refresh_ttl,
    )
    .await?
    {
        Refresh::Rotated(pair) => Ok(Json(pair)),
        Refresh::Reused {
            family_id,
            deny_until,
        } => {
            tracing::warn!(%family_id, "refresh token reused; session revoked");
            metrics::counter!("flash_member_refresh_reuse_total").increment(1);
            deny(&state, None, family_id, deny_until).await?;
            Err(ApiError::unauthorized(
                "refresh token was already used; the session is revoked",
            ))
        }
        Refresh::Invalid => Err(ApiError::unauthorized(
            "refresh token is invalid or expired",
        )),
    }
}

// POST /auth/logout → 204; the access token and its refresh family stop working
#[utoipa::path(
    post, path = "/auth/logout", tag = "auth",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Logged out"),
        (status = 401, description = "Missing, invalid, expired or logged-out token", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "Redis unavailable: the refresh token is already dead, but retry so the access token is refused at once", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all, fields(member_id = %member.member_id))]
pub(crate) async fn logout(
    State(state): State<AppState>,
    member: AuthMember,
) -> Result<StatusCode, ApiError> {
    let claims = &member.claims;
    // Any other access token of this session was minted at most one TTL ago.
    let session_until = chrono::Utc::now() + chrono::Duration::seconds(state.signer.ttl_secs());
    let mut tx = state.db.begin().await?;
    tokens::revoke_family(&mut tx, claims.sid, session_until).await?;
    tx.commit().await?;
    deny(
        &state,
        Some((claims.jti, claims.exp)),
        claims.sid,
        session_until,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Puts an ended session (and the token that ended it, if any) on the Redis denylist. The
/// session has already ended in PostgreSQL, so this runs on its own task: a client that hangs
/// up now cannot leave Redis without a denial PostgreSQL has recorded.
async fn deny(
    state: &AppState,
    token: Option<(Uuid, i64)>,
    sid: Uuid,
    until: DateTime<Utc>,
) -> Result<(), ApiError> {
    let denylist = state.auth.denylist().clone();
    tokio::spawn(async move {
        if let Some((jti, exp)) = token {
            denylist.deny_token(jti, exp).await?;
        }
        denylist.deny_session(sid, until.timestamp()).await
    })
    .await
    .map_err(|err| ApiError::Internal(anyhow::Error::from(err).context("denying the session")))?
    .map_err(ApiError::from)
}
