//! `/flash-sales`: admins define sales; anyone reads them with live `remaining`.
//!
//! Creating a sale reserves its units from the product's stock in the same transaction and
//! then arms the sale's Redis gate for the admission front door.

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use chrono::{DateTime, Utc};
use flash_core::{
    ApiError, ProblemType,
    auth::AdminMember,
    extract::{Json, Path, Query},
    pagination::{self, Cursor, Page},
    problem::{FieldError, ProblemBody},
    redis_model::sale_gate::{self, Arm},
    sale_events::{self, SaleEvent},
};
use serde::Deserialize;
use uuid::Uuid;

use super::sale::{
    MAX_QUANTITY, SaleBody, SaleRow, SaleStatus, fetch_sale, not_found, remaining, reserve_stock,
    sale_columns,
};
use crate::{state::AppState, stock, validation::check_range};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/flash-sales",
            get(list_flash_sales).post(create_flash_sale),
        )
        .route(
            "/flash-sales/{id}",
            get(get_flash_sale).patch(update_flash_sale),
        )
        .route("/flash-sales/{id}/cancel", post(cancel_flash_sale))
}

/// Query of `GET /flash-sales`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListSales {
    /// Only sales in this state.
    status: Option<SaleStatus>,
    /// Page size, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

// GET /flash-sales?status=&limit=&cursor= → 200 {items, next_cursor}, by start time
#[utoipa::path(
    get, path = "/flash-sales", tag = "flash-sales",
    params(ListSales),
    responses(
        (status = 200, description = "A page of sales", body = Page<SaleBody>),
        (status = 400, description = "Bad status, limit or cursor", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all)]
pub(crate) async fn list_flash_sales(
    State(state): State<AppState>,
    Query(query): Query<ListSales>,
) -> Result<Json<Page<SaleBody>>, ApiError> {
    let limit = pagination::limit(query.limit)?;
    let after = query.cursor.as_deref().map(Cursor::decode).transpose()?;
    let status = query.status.map(|s| match s {
        SaleStatus::Upcoming => "upcoming",
        SaleStatus::Live => "live",
        SaleStatus::Ended => "ended",
        SaleStatus::Cancelled => "cancelled",
    });
    let rows: Vec<SaleRow> = sqlx::query_as(concat!(
        "select ",
        sale_columns!(),
        " from flash_sales
         where ($1::text is null or $1 = case
                  when cancelled_at is not null then 'cancelled'
                  when now() < starts_at then 'upcoming'
                  when now() < ends_at then 'live'
                  else 'ended' end)
           and ($2::timestamptz is null or (starts_at, flash_sale_id) > ($2, $3))
         order by starts_at, flash_sale_id
         limit $4"
    ))
    .bind(status)
    .bind(after.map(|c| c.at))
    .bind(after.map(|c| c.id))
    .bind(limit + 1)
    .fetch_all(&state.db)
    .await?;
    let rows = Page::from_rows(rows, limit, |row| Cursor {
        at: row.settings.starts_at,
        id: row.flash_sale_id,
    });
    let mut items = Vec::with_capacity(rows.items.len());
    for row in rows.items {
        let units = remaining(&state, &row).await;
        items.push(row.into_body(units));
    }
    Ok(Json(Page {
        items,
        next_cursor: rows.next_cursor,
    }))
}

// GET /flash-sales/{id} → 200 with live `remaining` / 404
#[utoipa::path(
    get, path = "/flash-sales/{id}", tag = "flash-sales",
    params(("id" = Uuid, Path, description = "Flash sale id")),
    responses(
        (status = 200, description = "The sale", body = SaleBody),
        (status = 400, description = "Malformed id", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such sale", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all, fields(sale_id = %id))]
pub(crate) async fn get_flash_sale(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> Result<Json<SaleBody>, ApiError> {
    let mut conn = state.db.acquire().await?;
    let sale = fetch_sale(&mut conn, id, false)
        .await?
        .ok_or_else(|| not_found(id))?;
    drop(conn);
    let units = remaining(&state, &sale).await;
    Ok(Json(sale.into_body(units)))
}

/// A new flash sale.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewSale {
    product_id: Uuid,
    /// Sale price in minor units of the product's currency.
    #[schema(example = 9900, minimum = 0)]
    price_cents: i64,
    /// Units to sell, reserved from the product's stock.
    #[schema(example = 500, minimum = 1)]
    quantity: i64,
    /// Live orders one member may hold (default 1).
    #[serde(default = "one")]
    #[schema(minimum = 1)]
    per_member_limit: i64,
    starts_at: DateTime<Utc>,
    ends_at: DateTime<Utc>,
    /// Buyers who may join a waitlist once the units are gone, to get one that comes back
    /// (a failed payment, a cancelled order, added stock). Omitted: as many as the sale has
    /// units (at most the maximum), so a returned unit always finds a refused buyer; 0 turns
    /// the waitlist off, on purpose.
    #[schema(minimum = 0, maximum = 10_000_000)]
    waitlist_limit: Option<i64>,
    /// Open a pre-queue this many seconds before the start (0, the default = none): whoever
    /// enters then is ordered by a seeded random draw at the start, ahead of later arrivals.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 86_400)]
    prequeue_secs: i64,
    /// Bot friction: each entry must carry a proof of work with this many leading zero bits
    /// (0, the default = none; 16 costs a browser about a second, a script entering thousands
    /// of accounts that many seconds).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 24)]
    pow_bits: i64,
    /// Expire a queued ticket whose buyer has not polled for this many seconds, when the
    /// workers reach it; its unit goes back (to the waitlist first). 0, the default = never.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 86_400)]
    abandon_after_secs: i64,
}

fn one() -> i64 {
    1
}

impl NewSale {
    fn figures(&self) -> SaleFigures {
        SaleFigures {
            price: self.price_cents,
            quantity: self.quantity,
            limit: self.per_member_limit,
            waitlist: self
                .waitlist_limit
                .unwrap_or_else(|| self.quantity.clamp(0, MAX_QUANTITY)),
            prequeue: self.prequeue_secs,
            pow: self.pow_bits,
            abandon: self.abandon_after_secs,
            starts: self.starts_at,
            ends: self.ends_at,
        }
    }
}

/// Changes to a sale that has not started; absent fields stay as they are.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SaleChanges {
    price_cents: Option<i64>,
    quantity: Option<i64>,
    per_member_limit: Option<i64>,
    starts_at: Option<DateTime<Utc>>,
    ends_at: Option<DateTime<Utc>>,
    waitlist_limit: Option<i64>,
    prequeue_secs: Option<i64>,
    pow_bits: Option<i64>,
    abandon_after_secs: Option<i64>,
}

impl SaleChanges {
    /// The figures of `sale` with these changes made.
    fn over(&self, sale: &SaleRow) -> SaleFigures {
        let current = &sale.settings;
        SaleFigures {
            price: self.price_cents.unwrap_or(sale.price_cents),
            quantity: self.quantity.unwrap_or(i64::from(sale.quantity)),
            limit: self
                .per_member_limit
                .unwrap_or(i64::from(current.per_member_limit)),
            waitlist: self
                .waitlist_limit
                .unwrap_or(i64::from(current.waitlist_limit)),
            prequeue: self
                .prequeue_secs
                .unwrap_or(i64::from(current.prequeue_secs)),
            pow: self.pow_bits.unwrap_or(i64::from(current.pow_bits)),
            abandon: self
                .abandon_after_secs
                .unwrap_or(i64::from(current.abandon_after_secs)),
            starts: self.starts_at.unwrap_or(current.starts_at),
            ends: self.ends_at.unwrap_or(current.ends_at),
        }
    }
}

/// The figures a new or changed sale is checked on.
struct SaleFigures {
    price: i64,
    quantity: i64,
    limit: i64,
    waitlist: i64,
    prequeue: i64,
    pow: i64,
    abandon: i64,
    starts: DateTime<Utc>,
    ends: DateTime<Utc>,
}

impl SaleFigures {
    fn validate(&self) -> Result<(), ApiError> {
        let mut errors = Vec::new();
        check_range("price_cents", self.price, 0, 100_000_000_000, &mut errors);
        check_range("quantity", self.quantity, 1, MAX_QUANTITY, &mut errors);
        check_range("per_member_limit", self.limit, 1, MAX_QUANTITY, &mut errors);
        check_range(
            "waitlist_limit",
            self.waitlist,
            0,
            MAX_QUANTITY,
            &mut errors,
        );
        check_range("prequeue_secs", self.prequeue, 0, 86_400, &mut errors);
        check_range("pow_bits", self.pow, 0, 24, &mut errors);
        check_range("abandon_after_secs", self.abandon, 0, 86_400, &mut errors);
        if self.starts >= self.ends {
            errors.push(FieldError::new("ends_at", "must be after starts_at"));
        }
        if self.ends <= Utc::now() {
            errors.push(FieldError::new("ends_at", "must be in the future"));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Validation(errors))
        }
    }
}

/// A validated figure as its `integer` column (validation keeps every figure in range, so a
/// failure here is a bug, answered 500).
fn column(figure: i64) -> Result<i32, ApiError> {
    Ok(i32::try_from(figure).map_err(anyhow::Error::from)?)
}

// POST /flash-sales → 201 (admin); reserves stock, arms the gate
#[utoipa::path(
    post, path = "/flash-sales", tag = "flash-sales",
    security(("bearer" = [])),
    request_body = NewSale,
    responses(
        (status = 201, description = "Created and armed", body = SaleBody),
        (status = 400, description = "Malformed JSON", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "Not logged in", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = ProblemBody, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields, unknown or inactive product, or not enough stock", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all)]
pub(crate) async fn create_flash_sale(
    State(state): State<AppState>,
    _admin: AdminMember,
    Json(new): Json<NewSale>,
) -> Result<Response, ApiError> {
    let figures = new.figures();
    figures.validate()?;
    let mut tx = state.db.begin().await?;
    let reserved = reserve_stock(&mut tx, new.product_id, figures.quantity).await?;
    let sale: SaleRow = sqlx::query_as(concat!(
        "insert into flash_sales (flash_sale_id, product_id, price_cents, currency, quantity, quantity_left,
                                  per_member_limit, starts_at, ends_at, waitlist_limit, prequeue_secs, pow_bits,
                                  abandon_after_secs)
         values ($1, $2, $3, $4, $5, $5, $6, $7, $8, $9, $10, $11, $12)
         returning ", sale_columns!()
    ))
    .bind(Uuid::now_v7())
    .bind(new.product_id)
    .bind(figures.price)
    .bind(reserved.currency)
    .bind(column(figures.quantity)?)
    .bind(column(figures.limit)?)
    .bind(figures.starts)
    .bind(figures.ends)
    .bind(column(figures.waitlist)?)
    .bind(column(figures.prequeue)?)
    .bind(column(figures.pow)?)
    .bind(column(figures.abandon)?)
    .fetch_one(&mut *tx)
    .await?;
    sale_events::record(
        &mut tx,
        sale.flash_sale_id,
        SaleEvent::Armed {
            quantity: sale.quantity,
            starts_at: sale.settings.starts_at,
        },
    )
    .await?;
    tx.commit().await?;
    state
        .cache
        .invalidate(new.product_id, reserved.version)
        .await;
    arm_gate(&state, &sale, Arm::IfAbsent).await;
    let location = format!("/flash-sales/{}", sale.flash_sale_id);
    let units = i64::from(sale.quantity_left);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(sale.into_body(units)),
    )
        .into_response())
}

/// Arms (or re-arms) the sale's gate. A Redis failure is logged, not returned: the sale exists
/// in PostgreSQL and the workers' reconciler arms gates it finds missing.
async fn arm_gate(state: &AppState, sale: &SaleRow, mode: Arm) {
    let units = i64::from(sale.quantity_left);
    if let Err(err) = sale_gate::arm(
        &state.redis,
        &state.keys,
        sale.flash_sale_id,
        units,
        &sale.meta(),
        mode,
    )
    .await
    {
        tracing::warn!(error = %err, sale_id = %sale.flash_sale_id, "arming the sale gate failed; the reconciler will retry");
    }
}

// PATCH /flash-sales/{id} → 200 (admin); only before the sale starts; re-arms the gate
#[utoipa::path(
    patch, path = "/flash-sales/{id}", tag = "flash-sales",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Flash sale id")),
    request_body = SaleChanges,
    responses(
        (status = 200, description = "Updated and re-armed", body = SaleBody),
        (status = 400, description = "Malformed JSON or id", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "Not logged in", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such sale", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "The sale already started, ended or was cancelled", body = ProblemBody, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields or not enough stock", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all, fields(sale_id = %id))]
pub(crate) async fn update_flash_sale(
    State(state): State<AppState>,
    _admin: AdminMember,
    Path(id): Path<Uuid>,
    Json(changes): Json<SaleChanges>,
) -> Result<Json<SaleBody>, ApiError> {
    let mut tx = state.db.begin().await?;
    let sale = fetch_sale(&mut tx, id, true)
        .await?
        .ok_or_else(|| not_found(id))?;
    if sale.status(Utc::now()) != SaleStatus::Upcoming {
        return Err(ApiError::new(
            ProblemType::Conflict,
            "only a sale that has not started can be changed",
        ));
    }
    let figures = changes.over(&sale);
    figures.validate()?;
    let delta = figures.quantity - i64::from(sale.quantity);
    let product_version = if delta == 0 {
        None
    } else {
        Some(
            reserve_stock(&mut tx, sale.product_id, delta)
                .await?
                .version,
        )
    };
    // Nobody can have been admitted before the start, so the whole quantity is still left.
    let updated: SaleRow = sqlx::query_as(concat!(
        "update flash_sales set price_cents = $2, quantity = $3, quantity_left = $3,
                per_member_limit = $4, starts_at = $5, ends_at = $6, waitlist_limit = $7,
                prequeue_secs = $8, pow_bits = $9, abandon_after_secs = $10
         where flash_sale_id = $1
         returning ",
        sale_columns!()
    ))
    .bind(id)
    .bind(figures.price)
    .bind(column(figures.quantity)?)
    .bind(column(figures.limit)?)
    .bind(figures.starts)
    .bind(figures.ends)
    .bind(column(figures.waitlist)?)
    .bind(column(figures.prequeue)?)
    .bind(column(figures.pow)?)
    .bind(column(figures.abandon)?)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    if let Some(version) = product_version {
        state.cache.invalidate(sale.product_id, version).await;
    }
    arm_gate(&state, &updated, Arm::Replace).await;
    let units = i64::from(updated.quantity_left);
    Ok(Json(updated.into_body(units)))
}

// POST /flash-sales/{id}/cancel → 200 (admin); unsold units go back to the product
#[utoipa::path(
    post, path = "/flash-sales/{id}/cancel", tag = "flash-sales",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Flash sale id")),
    responses(
        (status = 200, description = "Cancelled (or already cancelled)", body = SaleBody),
        (status = 400, description = "Malformed id", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "Not logged in", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such sale", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "The sale already ended", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all, fields(sale_id = %id))]
pub(crate) async fn cancel_flash_sale(
    State(state): State<AppState>,
    _admin: AdminMember,
    Path(id): Path<Uuid>,
) -> Result<Json<SaleBody>, ApiError> {
    let mut tx = state.db.begin().await?;
    let sale = fetch_sale(&mut tx, id, true)
        .await?
        .ok_or_else(|| not_found(id))?;
    match sale.status(Utc::now()) {
        SaleStatus::Cancelled => return Ok(Json(sale.into_body(0))),
        SaleStatus::Ended => {
            return Err(ApiError::new(
                ProblemType::Conflict,
                "the sale already ended",
            ));
        }
        SaleStatus::Upcoming | SaleStatus::Live => {}
    }
    // INVARIANT: quantity_left + live orders = quantity. The unsold units leave the sale (both
    // sides drop by quantity_left) and return to the product's stock.
    let version = stock::give_back(&mut tx, sale.product_id, sale.quantity_left).await?;
    let cancelled: SaleRow = sqlx::query_as(concat!(
        "update flash_sales set quantity = quantity - quantity_left, quantity_left = 0, cancelled_at = now()
         where flash_sale_id = $1
         returning ", sale_columns!()
    ))
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    sale_events::record(&mut tx, id, SaleEvent::Cancelled).await?;
    tx.commit().await?;
    state.cache.invalidate(sale.product_id, version).await;
    arm_gate(&state, &cancelled, Arm::Replace).await;
    Ok(Json(cancelled.into_body(0)))
}
