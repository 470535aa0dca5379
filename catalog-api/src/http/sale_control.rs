//! Admin control of a running flash sale: pause and resume, the outflow rate, stock added or
//! withdrawn, an early end, and the audit trail of all of them.
//!
//! Every change is one PostgreSQL transaction that locks the sale row, applies the change,
//! writes an audit row and the sale event (outbox), and pushes the sale's new state to Redis
//! *before* committing: if Redis cannot be told, nothing is committed and the admin gets 503,
//! so the database and what the door and workers act on never disagree for long. A change that
//! is already in place (pausing a paused sale) answers 200 and writes no audit row.

use axum::{
    Router,
    extract::State,
    routing::{get, post, put},
};
use chrono::{DateTime, Utc};
use flash_core::{
    ApiError, ProblemType,
    auth::AdminMember,
    extract::{Json, Path, Query},
    problem::ProblemBody,
    redis_model::sale_gate::{self, Taken},
    sale_events::{self, SaleEvent},
};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{
    AppState,
    flash_sales::{
        MAX_QUANTITY, SaleBody, SaleRow, SaleStatus, fetch_sale, not_found, remaining,
        reserve_stock, sale_columns,
    },
    products::check_range,
};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/flash-sales/{id}/pause", post(pause_sale))
        .route("/flash-sales/{id}/resume", post(resume_sale))
        .route("/flash-sales/{id}/outflow", put(set_outflow))
        .route("/flash-sales/{id}/stock", post(change_stock))
        .route("/flash-sales/{id}/end", post(end_sale))
        .route("/flash-sales/{id}/audit", get(sale_audit))
}

/// Highest outflow accepted: far above what one database takes, low enough to stay an integer.
const MAX_OUTFLOW: i64 = 1_000_000;

/// Locks the sale for a change, refusing a sale that is over.
async fn lock_running(conn: &mut PgConnection, id: Uuid) -> Result<SaleRow, ApiError> {
    let sale = fetch_sale(conn, id, true)
        .await?
        .ok_or_else(|| not_found(id))?;
    match sale.status(Utc::now()) {
        SaleStatus::Upcoming | SaleStatus::Live => Ok(sale),
        SaleStatus::Ended => Err(ApiError::new(
            ProblemType::Conflict,
            "the sale already ended",
        )),
        SaleStatus::Cancelled => Err(ApiError::new(
            ProblemType::Conflict,
            "the sale was cancelled",
        )),
    }
}

/// Writes the audit row of a change by `admin`.
async fn audit(
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
        audit(&mut tx, id, &admin, action, serde_json::json!({})).await?;
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
    let mut errors = Vec::new();
    check_range(
        "per_second",
        outflow.per_second,
        0,
        MAX_OUTFLOW,
        &mut errors,
    );
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let to = i32::try_from(outflow.per_second).map_err(anyhow::Error::from)?;
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
        audit(
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

/// Units to add to (positive) or withdraw from (negative) a sale.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct StockChange {
    /// Added units come from the product's stock; withdrawn ones go back to it.
    #[schema(example = 20)]
    delta: i64,
}

// POST /flash-sales/{id}/stock {delta} → 200 (admin); never withdraws a unit already promised
#[utoipa::path(
    post, path = "/flash-sales/{id}/stock", tag = "sale-control",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Flash sale id")),
    request_body = StockChange,
    responses(
        (status = 200, description = "Stock changed", body = SaleBody),
        (status = 400, description = "Malformed JSON or id", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "Not logged in", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such sale", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "Ended or cancelled, or more withdrawn than is still unpromised", body = ProblemBody, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "Zero or out of range, or not enough product stock", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "Redis unreachable or the gate not armed yet; nothing changed", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all, fields(sale_id = %id))]
pub(crate) async fn change_stock(
    State(state): State<AppState>,
    admin: AdminMember,
    Path(id): Path<Uuid>,
    Json(change): Json<StockChange>,
) -> Result<Json<SaleBody>, ApiError> {
    let mut errors = Vec::new();
    check_range(
        "delta",
        change.delta,
        -MAX_QUANTITY,
        MAX_QUANTITY,
        &mut errors,
    );
    if change.delta == 0 && errors.is_empty() {
        return Err(ApiError::invalid("delta", "must not be 0"));
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let delta = i32::try_from(change.delta).map_err(anyhow::Error::from)?;
    let mut tx = state.db.begin().await?;
    let sale = lock_running(&mut tx, id).await?;
    if i64::from(sale.quantity) + i64::from(delta) > MAX_QUANTITY {
        return Err(ApiError::invalid(
            "delta",
            format!("a sale holds at most {MAX_QUANTITY} units"),
        ));
    }
    let (updated, version) = if delta > 0 {
        add_stock(&mut tx, &sale, delta).await?
    } else {
        withdraw_stock(&mut tx, &sale, -delta).await?
    };
    let action = if delta > 0 {
        "stock_added"
    } else {
        "stock_withdrawn"
    };
    audit(
        &mut tx,
        id,
        &admin,
        action,
        serde_json::json!({ "delta": delta }),
    )
    .await?;
    sale_events::record(
        &mut tx,
        id,
        SaleEvent::StockChanged {
            delta,
            quantity: updated.quantity,
        },
    )
    .await?;
    move_gate(&state, id, delta).await?;
    if let Err(err) = tx.commit().await {
        undo_gate(&state, id, delta).await;
        return Err(err.into());
    }
    state.cache.invalidate(sale.product_id, version).await;
    let units = remaining(&state, &updated).await;
    Ok(Json(updated.into_body(units)))
}

/// Takes `units` from the product and adds them to the sale; returns the sale and the
/// product's new version.
///
/// INVARIANT: `quantity_left + live orders = quantity` — both sides grow by `units`.
async fn add_stock(
    conn: &mut PgConnection,
    sale: &SaleRow,
    units: i32,
) -> Result<(SaleRow, i64), ApiError> {
    let (_, version) = reserve_stock(conn, sale.product_id, i64::from(units))
        .await
        .map_err(|err| match err {
            ApiError::Validation(_) => ApiError::invalid(
                "delta",
                "exceeds the product's stock, or the product is inactive",
            ),
            other => other,
        })?;
    let updated: SaleRow = sqlx::query_as(concat!(
        "update flash_sales set quantity = quantity + $2, quantity_left = quantity_left + $2
         where flash_sale_id = $1 returning ",
        sale_columns!()
    ))
    .bind(sale.flash_sale_id)
    .bind(units)
    .fetch_one(&mut *conn)
    .await?;
    Ok((updated, version))
}

/// Takes `units` out of the sale and gives them back to the product; returns the sale and the
/// product's new version.
///
/// INVARIANT: `quantity_left + live orders = quantity` — both sides drop by `units`. Which
/// units may go at all is the gate's call ([`move_gate`]): only those not yet promised to a
/// queued buyer, so `quantity_left` stays at least the queued tickets.
async fn withdraw_stock(
    conn: &mut PgConnection,
    sale: &SaleRow,
    units: i32,
) -> Result<(SaleRow, i64), ApiError> {
    if units >= sale.quantity {
        return Err(ApiError::new(
            ProblemType::Conflict,
            "a sale keeps at least one unit; cancel it to withdraw everything",
        ));
    }
    let updated: Option<SaleRow> = sqlx::query_as(concat!(
        "update flash_sales set quantity = quantity - $2, quantity_left = quantity_left - $2
         where flash_sale_id = $1 and quantity_left >= $2 returning ",
        sale_columns!()
    ))
    .bind(sale.flash_sale_id)
    .bind(units)
    .fetch_optional(&mut *conn)
    .await?;
    let updated = updated.ok_or_else(|| {
        ApiError::new(
            ProblemType::Conflict,
            format!("only {} units are left", sale.quantity_left),
        )
    })?;
    let (version,): (i64,) = sqlx::query_as(
        "update products set stock = stock + $2, version = version + 1
         where product_id = $1 returning version",
    )
    .bind(sale.product_id)
    .bind(units)
    .fetch_one(&mut *conn)
    .await?;
    Ok((updated, version))
}

/// Moves the gate by `delta` units, last before the commit. A withdrawal takes only units the
/// gate still holds, atomically with the door's admissions: a unit already handed to a queued
/// buyer is promised and stays.
async fn move_gate(state: &AppState, sale: Uuid, delta: i32) -> Result<(), ApiError> {
    if delta > 0 {
        return match sale_gate::add_units(&state.redis, &state.keys, sale, i64::from(delta))
            .await
            .map_err(ApiError::unavailable)?
        {
            Some(_) => Ok(()),
            None => Err(gate_unarmed()),
        };
    }
    match sale_gate::take_units(&state.redis, &state.keys, sale, i64::from(-delta))
        .await
        .map_err(ApiError::unavailable)?
    {
        Taken::Taken(_) => Ok(()),
        Taken::Short(left) => Err(ApiError::new(
            ProblemType::Conflict,
            format!("only {} units are not yet promised to a buyer", left.max(0)),
        )),
        Taken::Unarmed => Err(gate_unarmed()),
    }
}

/// Reverses a gate move of `delta` units whose transaction did not commit. Best effort, logged
/// loudly when it fails: too many units in the gate cost some buyers a `sold_out` after
/// queueing (the workers' truth is `quantity_left`), never an oversell; too few undersell until
/// Redis next loses the gate and the reconciler re-arms it.
async fn undo_gate(state: &AppState, sale: Uuid, delta: i32) {
    let outcome = if delta > 0 {
        sale_gate::take_units(&state.redis, &state.keys, sale, i64::from(delta))
            .await
            .map(|taken| matches!(taken, Taken::Taken(_)))
    } else {
        sale_gate::add_units(&state.redis, &state.keys, sale, i64::from(-delta))
            .await
            .map(|armed| armed.is_some())
    };
    if !matches!(outcome, Ok(true)) {
        tracing::error!(sale_id = %sale, delta, ?outcome, "could not undo the gate move of a stock change that did not commit");
    }
}

fn gate_unarmed() -> ApiError {
    ApiError::unavailable(anyhow::anyhow!(
        "the sale's gate is not armed; the workers' reconciler arms it within seconds"
    ))
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
    audit(&mut tx, id, &admin, "ended", serde_json::json!({})).await?;
    sale_events::record(&mut tx, id, SaleEvent::Ended { early: true }).await?;
    push_meta(&state, &ended).await?;
    tx.commit().await?;
    let units = remaining(&state, &ended).await;
    Ok(Json(ended.into_body(units)))
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
