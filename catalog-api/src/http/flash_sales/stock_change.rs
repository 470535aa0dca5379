//! `POST /flash-sales/{id}/stock`: units added to or withdrawn from a running sale. Like every
//! control change (see [`super::control`]) it is one transaction with its audit row and sale
//! event, and the gate moves last before the commit; a withdrawal never takes a unit the gate
//! already promised to a queued buyer.

use axum::{Router, extract::State, routing::post};
use flash_core::{
    ApiError, ProblemType,
    auth::AdminMember,
    extract::{Json, Path},
    problem::ProblemBody,
    redis_model::sale_gate::{self, Taken},
    sale_events::{self, SaleEvent},
};
use serde::Deserialize;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{
    audit,
    sale::{MAX_QUANTITY, SaleBody, SaleRow, lock_running, remaining, reserve_stock, sale_columns},
};
use crate::{state::AppState, stock, validation::check_range};

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/flash-sales/{id}/stock", post(change_stock))
}

/// Units to add to (positive) or withdraw from (negative) a sale.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct StockChange {
    /// Added units come from the product's stock; withdrawn ones go back to it.
    #[schema(example = 20)]
    delta: i64,
}

impl StockChange {
    /// The change, once in range and not zero, as an `integer`.
    fn checked(&self) -> Result<i32, ApiError> {
        let mut errors = Vec::new();
        check_range(
            "delta",
            self.delta,
            -MAX_QUANTITY,
            MAX_QUANTITY,
            &mut errors,
        );
        if !errors.is_empty() {
            return Err(ApiError::Validation(errors));
        }
        if self.delta == 0 {
            return Err(ApiError::invalid("delta", "must not be 0"));
        }
        Ok(i32::try_from(self.delta).map_err(anyhow::Error::from)?)
    }
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
    let delta = change.checked()?;
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
    audit::record(
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
    let reserved = reserve_stock(conn, sale.product_id, i64::from(units))
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
    Ok((updated, reserved.version))
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
    let version = stock::give_back(conn, sale.product_id, units).await?;
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
/// loudly when it fails (or skipped, when the request is dropped first): too many units in the
/// gate cost some buyers a `sold_out` after queueing (the workers' truth is `quantity_left`),
/// never an oversell; too few undersell until the workers' reconciler finds the sale quiet and
/// sets the gate to `quantity_left`.
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
