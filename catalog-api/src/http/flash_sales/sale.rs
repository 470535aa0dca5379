//! A flash sale as every part of `/flash-sales` sees it: the stored row, its status, the body
//! the API shows, loading and locking it, and the units it reserves from its product. The parts
//! (definitions, control, stock changes, audit, stats) take what they share from here, never
//! from each other's handlers.

use chrono::{DateTime, Utc};
use flash_core::{
    ApiError, ProblemType,
    redis_model::sale_gate::{self, SaleMeta, SaleSettings},
};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    state::AppState,
    stock::{self, Shortfall, Taken},
};

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
    pub(super) price_cents: i64,
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

/// The columns of a [`SaleRow`], spliced into SQL at compile time (queries stay `'static`).
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

pub(super) fn not_found(id: Uuid) -> ApiError {
    ApiError::not_found(format!("no flash sale {id}"))
}

/// The sale `id`, row-locked when `lock` (to change it).
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

/// Locks the sale for a change, refusing a sale that is over.
pub(super) async fn lock_running(conn: &mut PgConnection, id: Uuid) -> Result<SaleRow, ApiError> {
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

/// Takes `quantity` units (negative: gives them back) from an active product's stock for a
/// sale, in the caller's transaction.
pub(super) async fn reserve_stock(
    conn: &mut PgConnection,
    product: Uuid,
    quantity: i64,
) -> Result<Taken, ApiError> {
    stock::take(conn, product, quantity)
        .await?
        .map_err(|shortfall| match shortfall {
            Shortfall::Unknown => ApiError::invalid("product_id", "no such product"),
            Shortfall::Inactive { .. } => {
                ApiError::invalid("product_id", "the product is inactive")
            }
            Shortfall::Short { stock, .. } => {
                ApiError::invalid("quantity", format!("exceeds the product's stock ({stock})"))
            }
        })
}
