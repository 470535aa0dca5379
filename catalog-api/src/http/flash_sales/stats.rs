//! `GET /flash-sales/{id}/stats`: a running sale's live figures for the admin console, one
//! Redis pipeline and two small PostgreSQL counts. Rates (admitted and drained per second) are
//! the console's differences of the cumulative counters between two reads, so any number of
//! consoles cost the door and the workers nothing.

use std::collections::BTreeMap;

use axum::{Router, extract::State, routing::get};
use chrono::{DateTime, Utc};
use flash_core::{
    ApiError,
    auth::AdminMember,
    extract::{Json, Path},
    problem::ProblemBody,
};
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use super::sale::{SaleStatus, fetch_sale, not_found};
use crate::state::AppState;

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/flash-sales/{id}/stats", get(sale_stats))
}

/// The gate, sequence counter, served counter, waitlist length and drain rate of a sale.
type RedisFigures = (Option<i64>, Option<i64>, Option<i64>, i64, Option<f64>);

/// A sale's live figures.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct SaleStats {
    sale_id: Uuid,
    status: SaleStatus,
    paused: bool,
    outflow_per_sec: i32,
    /// Units on sale.
    quantity: i32,
    /// Units the door can still admit (the gate; absent when Redis lost it).
    remaining: Option<i64>,
    /// Units not in a live order (PostgreSQL's `quantity_left`).
    quantity_left: i32,
    /// Tickets the door has queued so far (the sale's sequence counter).
    admitted: i64,
    /// Highest queue number the workers have decided (the served counter).
    served: i64,
    /// Tickets admitted and not yet decided.
    queue_depth: i64,
    /// Buyers on the waitlist.
    waitlist_length: i64,
    /// Tickets per second the workers decided lately (absent before the first measure).
    drain_rate: Option<f64>,
    /// The sale's orders by status.
    orders: BTreeMap<String, i64>,
    /// The payments of the sale's orders by status.
    payments: BTreeMap<String, i64>,
    /// When these figures were read.
    at: DateTime<Utc>,
}

// GET /flash-sales/{id}/stats → 200 (admin)
#[utoipa::path(
    get, path = "/flash-sales/{id}/stats", tag = "sale-control",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Flash sale id")),
    responses(
        (status = 200, description = "Live figures", body = SaleStats),
        (status = 400, description = "Malformed id", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "Not logged in", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such sale", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "Redis unreachable", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all, fields(sale_id = %id))]
pub(crate) async fn sale_stats(
    State(state): State<AppState>,
    _admin: AdminMember,
    Path(id): Path<Uuid>,
) -> Result<Json<SaleStats>, ApiError> {
    let mut conn = state.db.acquire().await?;
    let sale = fetch_sale(&mut conn, id, false)
        .await?
        .ok_or_else(|| not_found(id))?;
    let (orders, payments) = count_by_status(&mut conn, id).await?;
    drop(conn);
    let (gate, admitted, served, waitlist, rate) = redis_figures(&state, id).await?;
    let (admitted, served) = (admitted.unwrap_or(0), served.unwrap_or(0));
    Ok(Json(SaleStats {
        sale_id: id,
        status: sale.status(Utc::now()),
        paused: sale.settings.paused_at.is_some(),
        outflow_per_sec: sale.settings.outflow_per_sec,
        quantity: sale.quantity,
        remaining: gate.map(|g| g.max(0)),
        quantity_left: sale.quantity_left,
        admitted,
        served,
        queue_depth: (admitted - served).max(0),
        waitlist_length: waitlist,
        drain_rate: rate,
        orders: orders.into_iter().collect(),
        payments: payments.into_iter().collect(),
        at: Utc::now(),
    }))
}

/// The sale's orders, and their payments, counted by status.
async fn count_by_status(
    conn: &mut PgConnection,
    id: Uuid,
) -> sqlx::Result<(Vec<(String, i64)>, Vec<(String, i64)>)> {
    let orders: Vec<(String, i64)> = sqlx::query_as(
        "select status, count(*) from orders where flash_sale_id = $1 group by status",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    let payments: Vec<(String, i64)> = sqlx::query_as(
        "select p.status, count(*) from payments p join orders o using (order_id)
         where o.flash_sale_id = $1 group by p.status",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    Ok((orders, payments))
}

/// The sale's figures in Redis, in one round trip.
async fn redis_figures(state: &AppState, id: Uuid) -> redis::RedisResult<RedisFigures> {
    let keys = &state.keys;
    let mut redis = state.redis.clone();
    redis::pipe()
        .cmd("GET")
        .arg(keys.sale_gate(id))
        .cmd("GET")
        .arg(keys.sale_seq(id))
        .cmd("GET")
        .arg(keys.sale_served(id))
        .cmd("LLEN")
        .arg(keys.sale_waitlist(id))
        .cmd("GET")
        .arg(keys.sale_drain_rate(id))
        .query_async(&mut redis)
        .await
}
