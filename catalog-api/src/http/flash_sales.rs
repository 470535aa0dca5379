//! `/flash-sales`: admins define sales; anyone reads them with live `remaining`.
//!
//! Creating a sale reserves its units from the product's stock in the same transaction and
//! then arms the sale's Redis gate for the admission front door (DESIGN.md, Arm).

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
    redis_model::sale_gate::{self, Arm, SaleMeta, SaleSettings},
    sale_events::{self, SaleEvent},
};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{AppState, products::check_range};

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
        .merge(super::sale_control::router())
        .merge(super::sale_stats::router())
}

/// Largest sale accepted.
pub(super) const MAX_QUANTITY: i64 = 10_000_000;

/// Where a sale is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum SaleStatus {
    /// Not started yet; can still be changed.
    Upcoming,
    /// Between `starts_at` and `ends_at`.
    Live,
    /// Past `ends_at`.
    Ended,
    /// Cancelled by an admin; its unsold units went back to the product.
    Cancelled,
}

/// A flash sale as stored.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct SaleRow {
    pub(super) flash_sale_id: Uuid,
    pub(super) product_id: Uuid,
    price_cents: i64,
    currency: String,
    pub(super) quantity: i32,
    pub(super) quantity_left: i32,
    draw_seed: Option<i64>,
    /// What the door and the workers act on (see [`SaleSettings`]).
    #[sqlx(flatten)]
    pub(super) settings: SaleSettings,
}

impl SaleRow {
    pub(super) fn status(&self, now: DateTime<Utc>) -> SaleStatus {
        if self.settings.cancelled_at.is_some() {
            SaleStatus::Cancelled
        } else if now < self.settings.starts_at {
            SaleStatus::Upcoming
        } else if now < self.settings.ends_at {
            SaleStatus::Live
        } else {
            SaleStatus::Ended
        }
    }

    pub(super) fn meta(&self) -> SaleMeta {
        self.settings.meta()
    }

    pub(super) fn into_body(self, remaining: i64) -> SaleBody {
        let status = self.status(Utc::now());
        SaleBody {
            id: self.flash_sale_id,
            product_id: self.product_id,
            price_cents: self.price_cents,
            currency: self.currency,
            quantity: self.quantity,
            remaining,
            per_member_limit: self.settings.per_member_limit,
            starts_at: self.settings.starts_at,
            ends_at: self.settings.ends_at,
            status,
            paused: self.settings.paused_at.is_some(),
            outflow_per_sec: self.settings.outflow_per_sec,
            waitlist_limit: self.settings.waitlist_limit,
            prequeue_secs: self.settings.prequeue_secs,
            draw_seed: self.draw_seed,
            released_at: self.settings.released_at,
            pow_bits: self.settings.pow_bits,
            abandon_after_secs: self.settings.abandon_after_secs,
        }
    }
}

macro_rules! sale_columns {
    () => {
        "flash_sale_id, product_id, price_cents, currency, quantity, quantity_left, per_member_limit,
         starts_at, ends_at, cancelled_at, paused_at, outflow_per_sec, waitlist_limit,
         prequeue_secs, draw_seed, released_at, pow_bits, abandon_after_secs"
    };
}
pub(super) use sale_columns;

/// A flash sale as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct SaleBody {
    id: Uuid,
    product_id: Uuid,
    /// Sale price in minor units of `currency`.
    price_cents: i64,
    currency: String,
    /// Units on sale.
    quantity: i32,
    /// Units the front door can still admit (live, from the Redis gate; from PostgreSQL when
    /// Redis cannot say).
    remaining: i64,
    per_member_limit: i32,
    starts_at: DateTime<Utc>,
    ends_at: DateTime<Utc>,
    status: SaleStatus,
    /// An admin holds the sale: entries still get tickets, nothing drains.
    paused: bool,
    /// Tickets per second turned into orders (0 = as fast as possible).
    outflow_per_sec: i32,
    /// Buyers who may wait for a unit to come back once the sale is sold out (0 = none).
    waitlist_limit: i32,
    /// The pre-queue opens this many seconds before the start (0 = none).
    prequeue_secs: i32,
    /// The seed of the pre-queue draw, once drawn: with the tickets, it replays the order
    /// (`flash_core::prequeue::draw`; the order itself is in `prequeue_draws`).
    draw_seed: Option<i64>,
    /// When the drawn pre-queue was released into the queue.
    released_at: Option<DateTime<Utc>>,
    /// Leading zero bits of the proof of work each entry must carry (0 = none).
    pow_bits: i32,
    /// A queued ticket not polled for this many seconds is expired (0 = never).
    abandon_after_secs: i32,
}

/// `remaining` for a sale: the gate while the sale can admit, else PostgreSQL's count.
pub(super) async fn remaining(state: &AppState, sale: &SaleRow) -> i64 {
    if matches!(
        sale.status(Utc::now()),
        SaleStatus::Upcoming | SaleStatus::Live
    ) {
        match sale_gate::remaining(&state.redis, &state.keys, sale.flash_sale_id).await {
            Ok(Some(units)) => return units.max(0),
            Ok(None) => {
                tracing::warn!(sale_id = %sale.flash_sale_id, "sale gate not armed; showing PostgreSQL's count")
            }
            Err(err) => {
                tracing::warn!(error = %err, "Redis unavailable; showing PostgreSQL's count")
            }
        }
    }
    i64::from(sale.quantity_left)
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
    let has_more = rows.len() > usize::try_from(limit).unwrap_or(usize::MAX);
    let mut items = Vec::with_capacity(rows.len());
    let mut last = None;
    for row in rows
        .into_iter()
        .take(usize::try_from(limit).unwrap_or(usize::MAX))
    {
        last = Some(Cursor {
            at: row.settings.starts_at,
            id: row.flash_sale_id,
        });
        let units = remaining(&state, &row).await;
        items.push(row.into_body(units));
    }
    let next_cursor = if has_more {
        last.map(|c| c.encode())
    } else {
        None
    };
    Ok(Json(Page { items, next_cursor }))
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

pub(super) fn not_found(id: Uuid) -> ApiError {
    ApiError::not_found(format!("no flash sale {id}"))
}

pub(super) async fn fetch_sale(
    conn: &mut PgConnection,
    id: Uuid,
    lock: bool,
) -> sqlx::Result<Option<SaleRow>> {
    let sql = if lock {
        concat!(
            "select ",
            sale_columns!(),
            " from flash_sales where flash_sale_id = $1 for update"
        )
    } else {
        concat!(
            "select ",
            sale_columns!(),
            " from flash_sales where flash_sale_id = $1"
        )
    };
    sqlx::query_as(sql).bind(id).fetch_optional(conn).await
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
    /// (a failed payment, a cancelled order, added stock); 0 (the default) = no waitlist.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 10_000_000)]
    waitlist_limit: i64,
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

/// The figures of a sale a new or changed sale is checked on.
struct SaleFigures {
    price: i64,
    quantity: i64,
    limit: i64,
    waitlist: i64,
    prequeue: i64,
    pow: i64,
    abandon: i64,
}

fn validate_sale(
    figures: &SaleFigures,
    starts: DateTime<Utc>,
    ends: DateTime<Utc>,
) -> Result<(), ApiError> {
    let mut errors = Vec::new();
    check_range(
        "price_cents",
        figures.price,
        0,
        100_000_000_000,
        &mut errors,
    );
    check_range("quantity", figures.quantity, 1, MAX_QUANTITY, &mut errors);
    check_range(
        "per_member_limit",
        figures.limit,
        1,
        MAX_QUANTITY,
        &mut errors,
    );
    check_range(
        "waitlist_limit",
        figures.waitlist,
        0,
        MAX_QUANTITY,
        &mut errors,
    );
    check_range("prequeue_secs", figures.prequeue, 0, 86_400, &mut errors);
    check_range("pow_bits", figures.pow, 0, 24, &mut errors);
    check_range(
        "abandon_after_secs",
        figures.abandon,
        0,
        86_400,
        &mut errors,
    );
    if starts >= ends {
        errors.push(FieldError::new("ends_at", "must be after starts_at"));
    }
    if ends <= Utc::now() {
        errors.push(FieldError::new("ends_at", "must be in the future"));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Validation(errors))
    }
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
    validate_sale(
        &SaleFigures {
            price: new.price_cents,
            quantity: new.quantity,
            limit: new.per_member_limit,
            waitlist: new.waitlist_limit,
            prequeue: new.prequeue_secs,
            pow: new.pow_bits,
            abandon: new.abandon_after_secs,
        },
        new.starts_at,
        new.ends_at,
    )?;
    let mut tx = state.db.begin().await?;
    let (currency, product_version) = reserve_stock(&mut tx, new.product_id, new.quantity).await?;
    let sale: SaleRow = sqlx::query_as(concat!(
        "insert into flash_sales (flash_sale_id, product_id, price_cents, currency, quantity, quantity_left,
                                  per_member_limit, starts_at, ends_at, waitlist_limit, prequeue_secs, pow_bits,
                                  abandon_after_secs)
         values ($1, $2, $3, $4, $5, $5, $6, $7, $8, $9, $10, $11, $12)
         returning ", sale_columns!()
    ))
    .bind(Uuid::now_v7())
    .bind(new.product_id)
    .bind(new.price_cents)
    .bind(currency)
    .bind(i32::try_from(new.quantity).map_err(anyhow::Error::from)?)
    .bind(i32::try_from(new.per_member_limit).map_err(anyhow::Error::from)?)
    .bind(new.starts_at)
    .bind(new.ends_at)
    .bind(i32::try_from(new.waitlist_limit).map_err(anyhow::Error::from)?)
    .bind(i32::try_from(new.prequeue_secs).map_err(anyhow::Error::from)?)
    .bind(i32::try_from(new.pow_bits).map_err(anyhow::Error::from)?)
    .bind(i32::try_from(new.abandon_after_secs).map_err(anyhow::Error::from)?)
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
        .invalidate(new.product_id, product_version)
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

/// Takes `quantity` units (negative: gives them back) from an active product's stock, in the
/// caller's transaction; returns the product's currency and new version.
pub(super) async fn reserve_stock(
    conn: &mut PgConnection,
    product: Uuid,
    quantity: i64,
) -> Result<(String, i64), ApiError> {
    // INVARIANT: products.stock never < 0: the guard refuses a reservation larger than stock.
    let reserved: Option<(String, i64)> = sqlx::query_as(
        "update products set stock = stock - $2, version = version + 1
         where product_id = $1 and active and stock >= $2
         returning currency, version",
    )
    .bind(product)
    .bind(quantity)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(found) = reserved {
        return Ok(found);
    }
    let product_row: Option<(bool, i32)> =
        sqlx::query_as("select active, stock from products where product_id = $1")
            .bind(product)
            .fetch_optional(&mut *conn)
            .await?;
    Err(match product_row {
        None => ApiError::invalid("product_id", "no such product"),
        Some((false, _)) => ApiError::invalid("product_id", "the product is inactive"),
        Some((true, stock)) => {
            ApiError::invalid("quantity", format!("exceeds the product's stock ({stock})"))
        }
    })
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
    let price = changes.price_cents.unwrap_or(sale.price_cents);
    let quantity = changes.quantity.unwrap_or(i64::from(sale.quantity));
    let limit = changes
        .per_member_limit
        .unwrap_or(i64::from(sale.settings.per_member_limit));
    let starts = changes.starts_at.unwrap_or(sale.settings.starts_at);
    let ends = changes.ends_at.unwrap_or(sale.settings.ends_at);
    let waitlist = changes
        .waitlist_limit
        .unwrap_or(i64::from(sale.settings.waitlist_limit));
    let prequeue = changes
        .prequeue_secs
        .unwrap_or(i64::from(sale.settings.prequeue_secs));
    let pow = changes
        .pow_bits
        .unwrap_or(i64::from(sale.settings.pow_bits));
    let abandon = changes
        .abandon_after_secs
        .unwrap_or(i64::from(sale.settings.abandon_after_secs));
    validate_sale(
        &SaleFigures {
            price,
            quantity,
            limit,
            waitlist,
            prequeue,
            pow,
            abandon,
        },
        starts,
        ends,
    )?;
    let delta = quantity - i64::from(sale.quantity);
    let product_version = if delta == 0 {
        None
    } else {
        Some(reserve_stock(&mut tx, sale.product_id, delta).await?.1)
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
    .bind(price)
    .bind(i32::try_from(quantity).map_err(anyhow::Error::from)?)
    .bind(i32::try_from(limit).map_err(anyhow::Error::from)?)
    .bind(starts)
    .bind(ends)
    .bind(i32::try_from(waitlist).map_err(anyhow::Error::from)?)
    .bind(i32::try_from(prequeue).map_err(anyhow::Error::from)?)
    .bind(i32::try_from(pow).map_err(anyhow::Error::from)?)
    .bind(i32::try_from(abandon).map_err(anyhow::Error::from)?)
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
    let (version,): (i64,) = sqlx::query_as(
        "update products set stock = stock + $2, version = version + 1 where product_id = $1 returning version",
    )
    .bind(sale.product_id)
    .bind(sale.quantity_left)
    .fetch_one(&mut *tx)
    .await?;
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
