//! `/members`: signup, the profile, and email verification.

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use chrono::{DateTime, Utc};
use flash_core::{
    ApiError, ProblemType,
    auth::AuthMember,
    domain::{Email, MemberId, Role},
    extract::Json,
    jobs::{EmailJob, EmailMessage},
    problem::{FieldError, ProblemBody, ResultExt},
};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use super::AppState;
use crate::{order_history::History, password, tokens};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/members", post(create_member))
        .route("/members/me", get(get_me))
        .route(
            "/members/me/verification-email",
            post(request_verification_email),
        )
        .route("/members/verify-email", post(verify_email))
}

/// How long an email verification token stays valid.
const VERIFICATION_TTL: chrono::Duration = chrono::Duration::hours(24);

/// Longest display name accepted.
const MAX_NAME_CHARS: usize = 100;

/// A signup.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewMember {
    /// Login address; trimmed and lower-cased.
    #[schema(example = "ann@example.com", max_length = 254)]
    email: String,
    /// 10 to 128 characters, at least 4 different ones, not the email.
    #[schema(example = "correct horse battery", min_length = 10, max_length = 128)]
    password: String,
    /// Display name, 1 to 100 characters.
    #[schema(example = "Ann", min_length = 1, max_length = 100)]
    name: String,
}

/// A validated signup: everything past this point trusts it.
struct ValidMember {
    email: Email,
    password: String,
    name: String,
}

impl TryFrom<NewMember> for ValidMember {
    type Error = ApiError;

    fn try_from(new: NewMember) -> Result<Self, ApiError> {
        let mut errors = Vec::new();
        let email = Email::parse(&new.email)
            .map_err(|m| errors.push(FieldError::new("email", m)))
            .ok();
        if let Err(message) = password::check_rules(&new.password, new.email.trim()) {
            errors.push(FieldError::new("password", message));
        }
        let name = new.name.trim().to_owned();
        if name.is_empty() {
            errors.push(FieldError::new("name", "must not be empty"));
        } else if name.chars().count() > MAX_NAME_CHARS {
            errors.push(FieldError::new(
                "name",
                format!("must be at most {MAX_NAME_CHARS} characters"),
            ));
        } else if name.chars().any(char::is_control) {
            errors.push(FieldError::new(
                "name",
                "must not contain control characters",
            ));
        }
        match email {
            Some(email) if errors.is_empty() => Ok(Self {
                email,
                password: new.password,
                name,
            }),
            _ => Err(ApiError::Validation(errors)),
        }
    }
}

/// A member as the API shows them.
#[derive(Debug, Serialize, utoipa::ToSchema, sqlx::FromRow)]
pub(crate) struct MemberBody {
    #[sqlx(rename = "member_id")]
    id: MemberId,
    email: String,
    name: String,
    role: Role,
    /// Whether the member confirmed their address.
    email_verified: bool,
    created_at: DateTime<Utc>,
}

// POST /members → 201 member; 409 email taken; 422 invalid (docs/api.md)
#[utoipa::path(
    post, path = "/members", tag = "members",
    request_body = NewMember,
    responses(
        (status = 201, description = "Member created", body = MemberBody),
        (status = 400, description = "Malformed JSON", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "Email already registered", body = ProblemBody, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = ProblemBody, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all)]
pub(crate) async fn create_member(
    State(state): State<AppState>,
    Json(new): Json<NewMember>,
) -> Result<Response, ApiError> {
    let member = ValidMember::try_from(new)?;
    let hash = state.passwords.hash(member.password).await?;
    let body: MemberBody = sqlx::query_as(
        "insert into members (member_id, email, password_hash, name, role)
         values ($1, $2, $3, $4, 'buyer')
         returning member_id, email, name, role, email_verified_at is not null as email_verified, created_at",
    )
    .bind(MemberId::new())
    .bind(member.email.as_str())
    .bind(hash)
    .bind(&member.name)
    .fetch_one(&state.db)
    .await
    .on_constraint("members_email_key", |_| {
        ApiError::new(ProblemType::EmailTaken, "an account with this email already exists")
    })?;
    metrics::counter!("flash_member_signups_total").increment(1);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, "/members/me")],
        Json(body),
    )
        .into_response())
}

/// The caller's profile with their recent orders.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ProfileBody {
    #[serde(flatten)]
    member: MemberBody,
    /// Most recent orders first, as catalog-api shows them; empty when unavailable.
    #[schema(value_type = Vec<Object>)]
    orders: Vec<serde_json::Value>,
    /// True when catalog-api could not be asked (it is failing and the circuit breaker is
    /// open, or it did not answer in time): `orders` is then empty, not "no orders".
    orders_unavailable: bool,
}

// GET /members/me → 200 profile + orders (+ orders_unavailable: true when the breaker is open)
#[utoipa::path(
    get, path = "/members/me", tag = "members",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's profile and recent orders", body = ProfileBody),
        (status = 401, description = "Missing, invalid, expired or logged-out token", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all, fields(member_id = %member.member_id))]
pub(crate) async fn get_me(
    State(state): State<AppState>,
    member: AuthMember,
    headers: HeaderMap,
) -> Result<Json<ProfileBody>, ApiError> {
    let mut conn = state.db.acquire().await?;
    let body = fetch_member(&mut conn, member.member_id)
        .await?
        // A valid token for a member that no longer exists.
        .ok_or_else(|| ApiError::unauthorized("the member of this token no longer exists"))?;
    drop(conn);
    // The extractor already accepted this header, so it is present and valid text.
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let (orders, orders_unavailable) = match state.order_history.recent(authorization).await {
        History::Orders(orders) => (orders, false),
        History::Unavailable => (Vec::new(), true),
    };
    Ok(Json(ProfileBody {
        member: body,
        orders,
        orders_unavailable,
    }))
}

async fn fetch_member(
    conn: &mut PgConnection,
    member: MemberId,
) -> sqlx::Result<Option<MemberBody>> {
    sqlx::query_as(
        "select member_id, email, name, role, email_verified_at is not null as email_verified, created_at
         from members where member_id = $1",
    )
    .bind(member)
    .fetch_optional(conn)
    .await
}

/// The answer to a verification-email request.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct EmailQueued {
    /// Id of the queued email job.
    email_id: Uuid,
}

// POST /members/me/verification-email → 202 at once; the email job runs in the background
#[utoipa::path(
    post, path = "/members/me/verification-email", tag = "members",
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Email job queued", body = EmailQueued),
        (status = 401, description = "Not logged in", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "Email already verified", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "Too many verification emails", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "Job queue unavailable", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all, fields(member_id = %member.member_id))]
pub(crate) async fn request_verification_email(
    State(state): State<AppState>,
    member: AuthMember,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let mut conn = state.db.acquire().await?;
    let profile = fetch_member(&mut conn, member.member_id)
        .await?
        .ok_or_else(|| ApiError::unauthorized("the member of this token no longer exists"))?;
    if profile.email_verified {
        return Err(ApiError::new(
            ProblemType::Conflict,
            "this email address is already verified",
        ));
    }
    state.limits.check_verification(member.member_id)?;
    let (token, hash) = tokens::new_opaque_token();
    sqlx::query(
        "insert into email_verifications (token_hash, member_id, expires_at) values ($1, $2, $3)",
    )
    .bind(hash)
    .bind(member.member_id)
    .bind(Utc::now() + VERIFICATION_TTL)
    .execute(&mut *conn)
    .await?;
    drop(conn);
    let job = EmailJob {
        email_id: Uuid::now_v7(),
        member_id: Some(member.member_id),
        to: profile.email,
        message: EmailMessage::VerifyEmail {
            name: profile.name,
            token,
        },
    };
    let payload = serde_json::to_vec(&job).map_err(anyhow::Error::from)?;
    let request_id = headers
        .get(flash_core::http::REQUEST_ID)
        .and_then(|v| v.to_str().ok());
    // The 202 promises the job is durably queued, so wait for JetStream's ack.
    flash_core::nats::publish_durably(
        &state.jetstream,
        state.subjects.email_jobs(),
        &job.email_id.to_string(),
        payload.into(),
        request_id,
    )
    .await
    .map_err(ApiError::unavailable)?;
    metrics::counter!("flash_member_verification_emails_total").increment(1);
    Ok((
        StatusCode::ACCEPTED,
        Json(EmailQueued {
            email_id: job.email_id,
        }),
    )
        .into_response())
}

/// A verification token from an email.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct VerifyEmail {
    /// The token from the verification email.
    token: String,
}

// POST /members/verify-email → 204; consumes the one-time token from the verification email
#[utoipa::path(
    post, path = "/members/verify-email", tag = "members",
    request_body = VerifyEmail,
    responses(
        (status = 204, description = "Email verified"),
        (status = 400, description = "Malformed JSON", body = ProblemBody, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "Token invalid, used or expired", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all)]
pub(crate) async fn verify_email(
    State(state): State<AppState>,
    Json(body): Json<VerifyEmail>,
) -> Result<StatusCode, ApiError> {
    let mut tx = state.db.begin().await?;
    let member: Option<(MemberId,)> = sqlx::query_as(
        "update email_verifications set used_at = now()
         where token_hash = $1 and used_at is null and expires_at > now()
         returning member_id",
    )
    .bind(tokens::hash_token(&body.token))
    .fetch_optional(&mut *tx)
    .await?;
    let Some((member,)) = member else {
        return Err(ApiError::invalid(
            "token",
            "is invalid, already used or expired",
        ));
    };
    sqlx::query("update members set email_verified_at = coalesce(email_verified_at, now()) where member_id = $1")
        .bind(member)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
