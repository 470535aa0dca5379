//! The audit trail of admin changes to a running sale: the row each change writes in its own
//! transaction, and `GET /flash-sales/{id}/audit` to read them back.

use axum::{Router, extract::State, routing::get};
use chrono::{DateTime, Utc};
use flash_core::{
    ApiError,
    auth::AdminMember,
    extract::{Json, Path, Query},
    problem::ProblemBody,
};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use super::sale::{fetch_sale, not_found};
use crate::state::AppState;

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/flash-sales/{id}/audit", get(sale_audit))
}

/// Writes the audit row of a change by `admin`.
pub(super) async fn record(
    conn: &mut PgConnection,
    sale: Uuid,
    admin: &AdminMember,
    action: &str,
    detail: serde_json::Value,
) -> Result<(), ApiError> {
    sqlx::query(
        "insert into flash_sale_audit (audit_id, flash_sale_id, admin_id, action, detail)
         values ($1, $2, $3, $4, $5)",
    )
    .bind(Uuid::now_v7())
    .bind(sale)
    .bind(admin.0.member_id.get())
    .bind(action)
    .bind(detail)
    .execute(conn)
    .await?;
    Ok(())
}

/// One audited change.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub(crate) struct AuditEntry {
    audit_id: Uuid,
    /// The admin who made it.
    admin_id: Uuid,
    /// `paused`, `resumed`, `outflow_changed`, `stock_added`, `stock_withdrawn` or `ended`.
    action: String,
    /// The change's figures, e.g. `{"delta": 20}`.
    #[schema(value_type = Object)]
    detail: serde_json::Value,
    at: DateTime<Utc>,
}

/// The audit trail of a sale.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct AuditTrail {
    /// Oldest first.
    items: Vec<AuditEntry>,
}

/// Query of `GET /flash-sales/{id}/audit`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct AuditQuery {
    /// The newest this many changes, 1 to 500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
}

// GET /flash-sales/{id}/audit → 200 {items} (admin)
#[utoipa::path(
    get, path = "/flash-sales/{id}/audit", tag = "sale-control",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Flash sale id"), AuditQuery),
    responses(
        (status = 200, description = "The audit trail, oldest first", body = AuditTrail),
        (status = 400, description = "Malformed id or limit", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "Not logged in", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such sale", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all, fields(sale_id = %id))]
pub(crate) async fn sale_audit(
    State(state): State<AppState>,
    _admin: AdminMember,
    Path(id): Path<Uuid>,
    Query(query): Query<AuditQuery>,
) -> Result<Json<AuditTrail>, ApiError> {
    let limit = match query.limit {
        None => 100,
        Some(n @ 1..=500) => i64::from(n),
        Some(_) => return Err(ApiError::bad_request("limit must be between 1 and 500")),
    };
    let mut conn = state.db.acquire().await?;
    if fetch_sale(&mut conn, id, false).await?.is_none() {
        return Err(not_found(id));
    }
    let mut items: Vec<AuditEntry> = sqlx::query_as(
        "select audit_id, admin_id, action, detail, at from flash_sale_audit
         where flash_sale_id = $1 order by at desc, audit_id desc limit $2",
    )
    .bind(id)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    items.reverse();
    Ok(Json(AuditTrail { items }))
}
