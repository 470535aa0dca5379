//! Admin control of a running flash sale: pause and resume, the outflow rate and an early end
//! (stock added or withdrawn is [`super::stock_change`]; the audit trail, [`super::audit`]).
//!
//! Every change is one PostgreSQL transaction that locks the sale row, applies the change,
//! writes an audit row and the sale event (outbox), and pushes the sale's new state to Redis
//! *before* committing: if Redis cannot be told, nothing is committed and the admin gets 503,
//! so the database and what the door and workers act on never disagree for long. A change that
//! is already in place (pausing a paused sale) answers 200 and writes no audit row.

use axum::{
    Router,
    extract::State,
    routing::{post, put},
};
use chrono::Utc;
use flash_core::{
    ApiError, ProblemType,
    auth::AdminMember,
    extract::{Json, Path},
    problem::ProblemBody,
    redis_model::sale_gate,
    sale_events::{self, SaleEvent},
};
use serde::Deserialize;
use uuid::Uuid;

use super::{
    audit,
    sale::{SaleBody, SaleRow, SaleStatus, lock_running, remaining, sale_columns},
};
use crate::{state::AppState, validation::check_range};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/flash-sales/{id}/pause", post(pause_sale))
        .route("/flash-sales/{id}/resume", post(resume_sale))
        .route("/flash-sales/{id}/outflow", put(set_outflow))
        .route("/flash-sales/{id}/end", post(end_sale))
}

/// Highest outflow accepted: far above what one database takes, low enough to stay an integer.
const MAX_OUTFLOW: i64 = 1_000_000;

/// Tells the door and the workers the sale's new state (see the module docs for why before the
/// commit).
async fn push_meta(state: &AppState, sale: &SaleRow) -> Result<(), ApiError> {
    sale_gate::write_meta(&state.redis, &state.keys, sale.flash_sale_id, &sale.meta())
        .await
        .map_err(ApiError::unavailable)
}

/// Sets or clears `paused_at`; the shared body of pause and resume.
async fn set_paused(
    state: AppState,
    admin: AdminMember,
    id: Uuid,
    pause: bool,
) -> Result<Json<SaleBody>, ApiError> {
    let mut tx = state.db.begin().await?;
    let sale = lock_running(&mut tx, id).await?;
    let sale = if sale.settings.paused_at.is_some() == pause {
        sale
    } else {
        let updated: SaleRow = sqlx::query_as(concat!(
            "update flash_sales set paused_at = case when $2 then now() end
             where flash_sale_id = $1 returning ",
            sale_columns!()
        ))
        .bind(id)
        .bind(pause)
        .fetch_one(&mut *tx)
        .await?;
        let (action, event) = if pause {
            ("paused", SaleEvent::Paused)
        } else {
            ("resumed", SaleEvent::Resumed)
        };
        audit::record(&mut tx, id, &admin, action, serde_json::json!({})).await?;
        sale_events::record(&mut tx, id, event).await?;
        updated
    };
    push_meta(&state, &sale).await?;
    tx.commit().await?;
    let units = remaining(&state, &sale).await;
    Ok(Json(sale.into_body(units)))
}

// POST /flash-sales/{id}/pause → 200 (admin); entries still get tickets, nothing drains
#[utoipa::path(
    post, path = "/flash-sales/{id}/pause", tag = "sale-control",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Flash sale id")),
    responses(
        (status = 200, description = "Paused (or already paused)", body = SaleBody),
        (status = 400, description = "Malformed id", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "Not logged in", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such sale", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "The sale ended or was cancelled", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "Redis unreachable; nothing changed", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all, fields(sale_id = %id))]
pub(crate) async fn pause_sale(
    State(state): State<AppState>,
    admin: AdminMember,
    Path(id): Path<Uuid>,
) -> Result<Json<SaleBody>, ApiError> {
    set_paused(state, admin, id, true).await
}

// POST /flash-sales/{id}/resume → 200 (admin); draining continues in queue order
#[utoipa::path(
    post, path = "/flash-sales/{id}/resume", tag = "sale-control",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Flash sale id")),
    responses(
        (status = 200, description = "Running (or already running)", body = SaleBody),
        (status = 400, description = "Malformed id", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "Not logged in", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such sale", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "The sale ended or was cancelled", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "Redis unreachable; nothing changed", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all, fields(sale_id = %id))]
pub(crate) async fn resume_sale(
    State(state): State<AppState>,
    admin: AdminMember,
    Path(id): Path<Uuid>,
) -> Result<Json<SaleBody>, ApiError> {
    set_paused(state, admin, id, false).await
}

/// A new outflow limit.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Outflow {
    /// Tickets per second turned into orders, all workers together; 0 = as fast as possible.
    #[schema(example = 50, minimum = 0, maximum = 1_000_000)]
    per_second: i64,
}

impl Outflow {
    /// The limit, once in range, as its `integer` column.
    fn checked(&self) -> Result<i32, ApiError> {
        let mut errors = Vec::new();
        check_range("per_second", self.per_second, 0, MAX_OUTFLOW, &mut errors);
        if !errors.is_empty() {
            return Err(ApiError::Validation(errors));
        }
        Ok(i32::try_from(self.per_second).map_err(anyhow::Error::from)?)
    }
}

// PUT /flash-sales/{id}/outflow {per_second} → 200 (admin); takes effect at the workers' next pass
#[utoipa::path(
    put, path = "/flash-sales/{id}/outflow", tag = "sale-control",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Flash sale id")),
    request_body = Outflow,
    responses(
        (status = 200, description = "Limit set", body = SaleBody),
        (status = 400, description = "Malformed JSON or id", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "Not logged in", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such sale", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "The sale ended or was cancelled", body = ProblemBody, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "Out of range", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "Redis unreachable; nothing changed", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all, fields(sale_id = %id))]
pub(crate) async fn set_outflow(
    State(state): State<AppState>,
    admin: AdminMember,
    Path(id): Path<Uuid>,
    Json(outflow): Json<Outflow>,
) -> Result<Json<SaleBody>, ApiError> {
    let to = outflow.checked()?;
    let mut tx = state.db.begin().await?;
    let sale = lock_running(&mut tx, id).await?;
    let from = sale.settings.outflow_per_sec;
    let sale = if from == to {
        sale
    } else {
        let updated: SaleRow = sqlx::query_as(concat!(
            "update flash_sales set outflow_per_sec = $2 where flash_sale_id = $1 returning ",
            sale_columns!()
        ))
        .bind(id)
        .bind(to)
        .fetch_one(&mut *tx)
        .await?;
        audit::record(
            &mut tx,
            id,
            &admin,
            "outflow_changed",
            serde_json::json!({ "from": from, "to": to }),
        )
        .await?;
        sale_events::record(&mut tx, id, SaleEvent::OutflowChanged { from, to }).await?;
        updated
    };
    push_meta(&state, &sale).await?;
    tx.commit().await?;
    let units = remaining(&state, &sale).await;
    Ok(Json(sale.into_body(units)))
}

// POST /flash-sales/{id}/end → 200 (admin); queued tickets still drain
#[utoipa::path(
    post, path = "/flash-sales/{id}/end", tag = "sale-control",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Flash sale id")),
    responses(
        (status = 200, description = "Ended now; tickets already queued still become orders", body = SaleBody),
        (status = 400, description = "Malformed id", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "Not logged in", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such sale", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "Not started (cancel it instead), already ended, or cancelled", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "Redis unreachable; nothing changed", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all, fields(sale_id = %id))]
pub(crate) async fn end_sale(
    State(state): State<AppState>,
    admin: AdminMember,
    Path(id): Path<Uuid>,
) -> Result<Json<SaleBody>, ApiError> {
    let mut tx = state.db.begin().await?;
    let sale = lock_running(&mut tx, id).await?;
    if sale.status(Utc::now()) == SaleStatus::Upcoming {
        return Err(ApiError::new(
            ProblemType::Conflict,
            "the sale has not started; cancel it instead",
        ));
    }
    let ended: SaleRow = sqlx::query_as(concat!(
        "update flash_sales set ends_at = greatest(now(), starts_at + interval '1 millisecond'),
                ended_announced_at = now()
         where flash_sale_id = $1 returning ",
        sale_columns!()
    ))
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    audit::record(&mut tx, id, &admin, "ended", serde_json::json!({})).await?;
    sale_events::record(&mut tx, id, SaleEvent::Ended { early: true }).await?;
    push_meta(&state, &ended).await?;
    tx.commit().await?;
    let units = remaining(&state, &ended).await;
    Ok(Json(ended.into_body(units)))
}
