//! `/cart`: what a member means to buy. The cart holds products and quantities only; prices and
//! stock are read live, and checkout turns it into a regular order through the same guarded
//! stock path (and Idempotency-Key) as `POST /orders`.

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::Response,
    routing::{get, post, put},
};
use flash_core::{
    ApiError, ProblemType,
    auth::AuthMember,
    domain::MemberId,
    extract::{Json, Path},
    problem::ProblemBody,
};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use super::orders::{self, LineSource};
use crate::state::AppState;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/cart", get(get_cart))
        .route(
            "/cart/items/{product_id}",
            put(put_item).delete(delete_item),
        )
        .route("/cart/checkout", post(checkout))
}

/// Most distinct products one cart holds (the most lines one order may have).
const MAX_LINES: i64 = 50;
/// Most units of one product in a cart.
const MAX_UNITS: i64 = 1000;

/// One line of the cart, with the product as it is now.
#[derive(Debug, Serialize, utoipa::ToSchema, sqlx::FromRow)]
pub(crate) struct CartLine {
    product_id: Uuid,
    name: String,
    quantity: i32,
    /// Today's price per unit, in minor units (checkout charges the price at checkout).
    unit_price_cents: i64,
    currency: String,
    /// Whether the product is still sold.
    active: bool,
    /// Whether enough units are in stock right now (checkout checks again).
    in_stock: bool,
}

/// A member's cart.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct CartBody {
    /// Lines by product id.
    items: Vec<CartLine>,
    /// Sum of the lines at today's prices, in minor units; absent when the lines mix
    /// currencies (checkout refuses those) or the cart is empty.
    #[serde(skip_serializing_if = "Option::is_none")]
    total_cents: Option<i64>,
    /// The lines' currency, when they share one.
    #[serde(skip_serializing_if = "Option::is_none")]
    currency: Option<String>,
}

/// The new quantity of a cart line.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CartQuantity {
    #[schema(minimum = 1, maximum = 1000)]
    quantity: i64,
}

async fn load_cart(conn: &mut PgConnection, member: MemberId) -> sqlx::Result<CartBody> {
    let items: Vec<CartLine> = sqlx::query_as(
        "select c.product_id, p.name, c.quantity, p.price_cents as unit_price_cents, p.currency, p.active,
                (p.active and p.stock >= c.quantity) as in_stock
         from cart_items c join products p using (product_id)
         where c.member_id = $1 order by c.product_id",
    )
    .bind(member)
    .fetch_all(conn)
    .await?;
    let shared = items
        .first()
        .map(|first| first.currency.clone())
        .filter(|c| items.iter().all(|line| line.currency == *c));
    let total_cents = shared.as_ref().and_then(|_| {
        items.iter().try_fold(0i64, |sum, line| {
            line.unit_price_cents
                .checked_mul(i64::from(line.quantity))
                .and_then(|l| sum.checked_add(l))
        })
    });
    Ok(CartBody {
        items,
        total_cents,
        currency: shared,
    })
}

// GET /cart → 200 the caller's cart
#[utoipa::path(
    get, path = "/cart", tag = "cart",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's cart (empty if never used)", body = CartBody),
        (status = 401, description = "Not logged in", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all, fields(member_id = %member.member_id))]
pub(crate) async fn get_cart(
    State(state): State<AppState>,
    member: AuthMember,
) -> Result<Json<CartBody>, ApiError> {
    let mut conn = state.db.acquire().await?;
    Ok(Json(load_cart(&mut conn, member.member_id).await?))
}

// PUT /cart/items/{product_id} {quantity} → 200 the cart; sets (not adds to) the quantity
#[utoipa::path(
    put, path = "/cart/items/{product_id}", tag = "cart",
    security(("bearer" = [])),
    params(("product_id" = Uuid, Path, description = "Product id")),
    request_body = CartQuantity,
    responses(
        (status = 200, description = "The cart after the change", body = CartBody),
        (status = 400, description = "Malformed JSON or id", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "Not logged in", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such product", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "The product is no longer sold, or the cart is full", body = ProblemBody, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "Quantity out of range", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all, fields(member_id = %member.member_id, %product_id))]
pub(crate) async fn put_item(
    State(state): State<AppState>,
    member: AuthMember,
    Path(product_id): Path<Uuid>,
    Json(body): Json<CartQuantity>,
) -> Result<Json<CartBody>, ApiError> {
    let quantity = i32::try_from(body.quantity)
        .ok()
        .filter(|q| (1..=MAX_UNITS).contains(&i64::from(*q)))
        .ok_or_else(|| {
            ApiError::invalid("quantity", format!("must be between 1 and {MAX_UNITS}"))
        })?;
    let mut tx = state.db.begin().await?;
    ensure_sold(&mut tx, product_id).await?;
    ensure_room(&mut tx, member.member_id, product_id).await?;
    sqlx::query(
        "insert into cart_items (member_id, product_id, quantity) values ($1, $2, $3)
         on conflict (member_id, product_id) do update set quantity = excluded.quantity",
    )
    .bind(member.member_id)
    .bind(product_id)
    .bind(quantity)
    .execute(&mut *tx)
    .await?;
    let cart = load_cart(&mut tx, member.member_id).await?;
    tx.commit().await?;
    Ok(Json(cart))
}

/// Refuses a product that does not exist or is no longer sold.
async fn ensure_sold(conn: &mut PgConnection, product_id: Uuid) -> Result<(), ApiError> {
    let active: Option<bool> =
        sqlx::query_scalar("select active from products where product_id = $1")
            .bind(product_id)
            .fetch_optional(conn)
            .await?;
    match active {
        None => Err(ApiError::not_found(format!("no product {product_id}"))),
        Some(false) => Err(ApiError::new(
            ProblemType::Conflict,
            format!("product {product_id} is no longer sold"),
        )),
        Some(true) => Ok(()),
    }
}

/// Refuses a new product in a full cart. Takes the member's cart lock for the rest of the
/// transaction, so two PUTs cannot both pass the size check.
async fn ensure_room(
    conn: &mut PgConnection,
    member: MemberId,
    product_id: Uuid,
) -> Result<(), ApiError> {
    sqlx::query("select pg_advisory_xact_lock(hashtextextended($1::uuid::text, 0))")
        .bind(member)
        .execute(&mut *conn)
        .await?;
    let (lines, present): (i64, bool) = sqlx::query_as(
        "select count(*), coalesce(bool_or(product_id = $2), false)
         from cart_items where member_id = $1",
    )
    .bind(member)
    .bind(product_id)
    .fetch_one(&mut *conn)
    .await?;
    if !present && lines >= MAX_LINES {
        return Err(ApiError::new(
            ProblemType::Conflict,
            format!("a cart holds at most {MAX_LINES} products"),
        ));
    }
    Ok(())
}

// DELETE /cart/items/{product_id} → 204, also when the product was not in the cart
#[utoipa::path(
    delete, path = "/cart/items/{product_id}", tag = "cart",
    security(("bearer" = [])),
    params(("product_id" = Uuid, Path, description = "Product id")),
    responses(
        (status = 204, description = "Not in the cart (any more)"),
        (status = 400, description = "Malformed id", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "Not logged in", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all, fields(member_id = %member.member_id, %product_id))]
pub(crate) async fn delete_item(
    State(state): State<AppState>,
    member: AuthMember,
    Path(product_id): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    sqlx::query("delete from cart_items where member_id = $1 and product_id = $2")
        .bind(member.member_id)
        .bind(product_id)
        .execute(&state.db)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

// POST /cart/checkout → 201 a regular order of the cart's lines; the cart is emptied
#[utoipa::path(
    post, path = "/cart/checkout", tag = "cart",
    security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retry return the first order instead of a second one")),
    responses(
        (status = 201, description = "Order created from the cart, which is now empty (with a reused Idempotency-Key, the first order; then `Idempotent-Replayed: true`)", body = orders::OrderBody),
        (status = 400, description = "Malformed Idempotency-Key", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "Not logged in", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "The cart is empty, or lines cannot be sold as asked (each named in `unavailable`); nothing was ordered", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "The lines mix currencies", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all, fields(member_id = %member.member_id))]
pub(crate) async fn checkout(
    State(state): State<AppState>,
    member: AuthMember,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let key = orders::idempotency_key(&headers)?;
    orders::place_order(&state, member.member_id, key, LineSource::Cart).await
}
