//! `/orders`: regular (synchronous) orders, reads of every order a member has (flash-sale
//! orders made by the workers included, with their history), cancel before shipping, and
//! returns after delivery.

use std::collections::HashMap;

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use chrono::{DateTime, Utc};
use flash_core::{
    ApiError, ProblemType,
    auth::AuthMember,
    domain::{MemberId, OrderStatus, Role},
    extract::{Json, Path, Query},
    jobs::{EmailMessage, PaymentJob},
    outbox,
    pagination::{self, Cursor, Page},
    problem::ProblemBody,
    redis_model::tickets::{self, Settled},
    restock,
};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    order_rules::{self, Basket, Line, PricedLine, Refusal, Refusals},
    state::AppState,
    stock::{self, Taken},
};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/orders", get(list_orders).post(create_order))
        .route("/orders/{id}", get(get_order))
        .route("/orders/{id}/cancel", post(cancel_order))
        .route("/orders/{id}/return", post(return_order))
}

/// Header making a retried `POST /orders` return the first result.
const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema, sqlx::FromRow)]
pub(crate) struct OrderItemBody {
    product_id: Uuid,
    quantity: i32,
    /// Price per unit when ordered, in minor units.
    unit_price_cents: i64,
}

/// One state an order entered, and when.
#[derive(Debug, Serialize, utoipa::ToSchema, sqlx::FromRow)]
pub(crate) struct HistoryEntry {
    status: String,
    at: DateTime<Utc>,
}

/// An order as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct OrderBody {
    id: Uuid,
    /// `regular` or `flash`.
    kind: String,
    /// `pending_payment`, `paid`, `preparing`, `shipped`, `delivered`, `return_requested`,
    /// `returned` or `cancelled`.
    status: String,
    items: Vec<OrderItemBody>,
    total_cents: i64,
    currency: String,
    created_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    flash_sale_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ticket_id: Option<Uuid>,
    /// The carrier's reference, once shipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    tracking_ref: Option<String>,
    /// Every state the order entered, oldest first (only on `GET /orders/{id}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    history: Option<Vec<HistoryEntry>>,
}

#[derive(Debug, sqlx::FromRow)]
struct OrderRow {
    order_id: Uuid,
    member_id: MemberId,
    kind: String,
    status: String,
    total_cents: i64,
    currency: String,
    created_at: DateTime<Utc>,
    flash_sale_id: Option<Uuid>,
    ticket_id: Option<Uuid>,
    tracking_ref: Option<String>,
}

macro_rules! order_columns {
    () => {
        "order_id, member_id, kind, status, total_cents, currency, created_at, flash_sale_id, ticket_id, tracking_ref"
    };
}

impl OrderRow {
    fn into_body(self, items: Vec<OrderItemBody>) -> OrderBody {
        OrderBody {
            id: self.order_id,
            kind: self.kind,
            status: self.status,
            items,
            total_cents: self.total_cents,
            currency: self.currency,
            created_at: self.created_at,
            flash_sale_id: self.flash_sale_id,
            ticket_id: self.ticket_id,
            tracking_ref: self.tracking_ref,
            history: None,
        }
    }

    /// The order's state as the lifecycle knows it (the database only holds known names).
    fn state(&self) -> Result<OrderStatus, ApiError> {
        OrderStatus::parse(&self.status).ok_or_else(|| {
            ApiError::Internal(anyhow::anyhow!(
                "order in an unknown state {:?}",
                self.status
            ))
        })
    }

    /// Owners see their orders, admins see all; anyone else is told it does not exist.
    fn visible_to(&self, member: &AuthMember) -> bool {
        self.member_id == member.member_id || member.role == Role::Admin
    }
}

/// The lines of the given orders, by order.
async fn load_items(
    conn: &mut PgConnection,
    orders: &[Uuid],
) -> sqlx::Result<HashMap<Uuid, Vec<OrderItemBody>>> {
    #[derive(sqlx::FromRow)]
    struct Line {
        order_id: Uuid,
        #[sqlx(flatten)]
        item: OrderItemBody,
    }
    let lines: Vec<Line> = sqlx::query_as(
        "select order_id, product_id, quantity, unit_price_cents from order_items
         where order_id = any($1) order by order_id, product_id",
    )
    .bind(orders)
    .fetch_all(conn)
    .await?;
    let mut by_order: HashMap<Uuid, Vec<OrderItemBody>> = HashMap::new();
    for line in lines {
        by_order.entry(line.order_id).or_default().push(line.item);
    }
    Ok(by_order)
}

async fn load_order(
    conn: &mut PgConnection,
    id: Uuid,
    lock: bool,
) -> sqlx::Result<Option<OrderRow>> {
    let sql = if lock {
        concat!(
            "select ",
            order_columns!(),
            " from orders where order_id = $1 for update"
        )
    } else {
        concat!(
            "select ",
            order_columns!(),
            " from orders where order_id = $1"
        )
    };
    sqlx::query_as(sql).bind(id).fetch_optional(conn).await
}

/// The order `id` as `member` may see it (owners and admins; anyone else is told it does not
/// exist), row-locked when `lock` (to change it).
async fn own_order(
    conn: &mut PgConnection,
    id: Uuid,
    member: &AuthMember,
    lock: bool,
) -> Result<OrderRow, ApiError> {
    load_order(conn, id, lock)
        .await?
        .filter(|o| o.visible_to(member))
        .ok_or_else(|| not_found(id))
}

/// The order as it is after a change made in this transaction.
async fn reload(conn: &mut PgConnection, id: Uuid) -> Result<OrderBody, ApiError> {
    let row = load_order(conn, id, false)
        .await?
        .ok_or_else(|| not_found(id))?;
    Ok(order_body(conn, row).await?)
}

async fn order_body(conn: &mut PgConnection, row: OrderRow) -> sqlx::Result<OrderBody> {
    let mut items = load_items(conn, &[row.order_id]).await?;
    let lines = items.remove(&row.order_id).unwrap_or_default();
    Ok(row.into_body(lines))
}

fn not_found(id: Uuid) -> ApiError {
    ApiError::not_found(format!("no order {id}"))
}

/// A regular order.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewOrder {
    /// 1 to 50 lines, each product at most once.
    items: Vec<NewItem>,
}

/// One line of a new order. The price is read from the catalog, never taken from the client.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewItem {
    product_id: Uuid,
    #[schema(minimum = 1, maximum = 1000)]
    quantity: i64,
}

pub(super) fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(key) if (1..=255).contains(&key.len()) && key.chars().all(|c| c.is_ascii_graphic()) => {
            Ok(Some(key.to_owned()))
        }
        _ => Err(ApiError::bad_request(
            "Idempotency-Key must be 1 to 255 visible ASCII characters",
        )),
    }
}

// POST /orders → 201 (regular, synchronous); 409 out of stock; Idempotency-Key replays
#[utoipa::path(
    post, path = "/orders", tag = "orders",
    security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retry return the first order instead of a second one")),
    request_body = NewOrder,
    responses(
        (status = 201, description = "Order created (or, with a reused Idempotency-Key, the first one; then `Idempotent-Replayed: true`)", body = OrderBody),
        (status = 400, description = "Malformed JSON or Idempotency-Key", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "Not logged in", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "A product is out of stock or inactive, or the Idempotency-Key was used for a different order", body = ProblemBody, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "Invalid lines, unknown product or mixed currencies", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all, fields(member_id = %member.member_id))]
pub(crate) async fn create_order(
    State(state): State<AppState>,
    member: AuthMember,
    headers: HeaderMap,
    Json(new): Json<NewOrder>,
) -> Result<Response, ApiError> {
    let asked: Vec<(Uuid, i64)> = new
        .items
        .iter()
        .map(|item| (item.product_id, item.quantity))
        .collect();
    let lines = order_rules::checked_lines(&asked)?;
    let key = idempotency_key(&headers)?;
    place_order(&state, member.member_id, key, LineSource::Request(lines)).await
}

/// Where the lines of a new regular order come from.
pub(super) enum LineSource {
    /// The request body, validated and sorted by product.
    Request(Vec<Line>),
    /// The member's cart, emptied by the same transaction.
    Cart,
}

impl LineSource {
    fn refusals(&self) -> Refusals {
        match self {
            Self::Request(_) => Refusals::StopAtFirst,
            Self::Cart => Refusals::NameAll,
        }
    }
}

/// Places a regular order: takes the stock of every line under its row lock (the guarded
/// path that cannot oversell), prices the lines from the catalog, writes the order and its
/// payment job, all in one transaction. A reused Idempotency-Key answers with the first order.
pub(super) async fn place_order(
    state: &AppState,
    member: MemberId,
    key: Option<String>,
    source: LineSource,
) -> Result<Response, ApiError> {
    let mut tx = state.db.begin().await?;
    if let Some(key) = &key
        && let Some(first) = find_by_key(&mut tx, member, key).await?
    {
        return replay(&mut tx, first, &source).await;
    }
    let lines = lines_of(&mut tx, member, &source).await?;
    let priced = take_lines(&mut tx, &lines, source.refusals()).await?;
    let (total, currency) = order_rules::order_total(&priced)?;
    let order_id = Uuid::now_v7();
    let new = NewOrderRow {
        order_id,
        member,
        total,
        currency: &currency,
        key: key.as_deref(),
    };
    let Some(row) = insert_order(&mut tx, &new).await? else {
        // A concurrent request with the same key won the race: answer with its order.
        drop(tx);
        let mut conn = state.db.acquire().await?;
        let key = key.unwrap_or_default();
        let first = find_by_key(&mut conn, member, &key).await?.ok_or_else(|| {
            ApiError::Internal(anyhow::anyhow!("idempotency key conflict without an order"))
        })?;
        return replay(&mut conn, first, &source).await;
    };
    insert_lines(&mut tx, order_id, &priced).await?;
    if matches!(source, LineSource::Cart) {
        sqlx::query("delete from cart_items where member_id = $1")
            .bind(member)
            .execute(&mut *tx)
            .await?;
    }
    let job = PaymentJob::Charge {
        order_id: order_id.into(),
        amount_cents: total,
        currency,
    };
    outbox::enqueue(&mut tx, PaymentJob::SUBJECT, &job).await?;
    let items = load_items(&mut tx, &[order_id])
        .await?
        .remove(&order_id)
        .unwrap_or_default();
    tx.commit().await?;
    for line in &priced {
        state
            .cache
            .invalidate(line.product, line.taken.version)
            .await;
    }
    metrics::counter!("flash_catalog_orders_total", "outcome" => "created").increment(1);
    Ok(created(row.into_body(items)))
}

/// The lines of a new order: the request's, or the cart's (row-locked).
async fn lines_of(
    conn: &mut PgConnection,
    member: MemberId,
    source: &LineSource,
) -> Result<Vec<Line>, ApiError> {
    match source {
        LineSource::Request(lines) => Ok(lines.clone()),
        LineSource::Cart => {
            // The lock makes two checkouts of one cart take turns: the second finds it empty.
            let lines: Vec<Line> = sqlx::query_as(
                "select product_id, quantity from cart_items where member_id = $1
                 order by product_id for update",
            )
            .bind(member)
            .fetch_all(conn)
            .await?;
            if lines.is_empty() {
                return Err(ApiError::new(ProblemType::Conflict, "the cart is empty"));
            }
            Ok(lines)
        }
    }
}

/// Takes the stock of every line, in order; what a refused line does to the order is
/// [`Refusals`]'s call.
async fn take_lines(
    conn: &mut PgConnection,
    lines: &[Line],
    refusals: Refusals,
) -> Result<Vec<PricedLine>, ApiError> {
    let mut basket = Basket::new(refusals, lines.len());
    for (i, &(product, quantity)) in lines.iter().enumerate() {
        let outcome = take_stock(conn, product, quantity).await?;
        basket.add(i, (product, quantity), outcome)?;
    }
    basket.into_priced()
}

/// Takes `quantity` units of `product` inside the order's transaction, or says why not.
async fn take_stock(
    conn: &mut PgConnection,
    product: Uuid,
    quantity: i32,
) -> sqlx::Result<Result<Taken, Refusal>> {
    match stock::take(conn, product, i64::from(quantity)).await? {
        Ok(taken) => Ok(Ok(taken)),
        Err(shortfall) => {
            metrics::counter!("flash_catalog_orders_total", "outcome" => "refused").increment(1);
            Ok(Err(Refusal::new(product, quantity, shortfall)))
        }
    }
}

/// The order row of a new regular order.
struct NewOrderRow<'a> {
    order_id: Uuid,
    member: MemberId,
    total: i64,
    currency: &'a str,
    key: Option<&'a str>,
}

/// Writes a new order, pending payment; `None` when its Idempotency-Key is already taken (by
/// a concurrent request with the same key).
async fn insert_order(
    conn: &mut PgConnection,
    new: &NewOrderRow<'_>,
) -> Result<Option<OrderRow>, ApiError> {
    let inserted = sqlx::query_as::<_, OrderRow>(concat!(
        "insert into orders (order_id, member_id, kind, status, total_cents, currency, idempotency_key)
         values ($1, $2, 'regular', 'pending_payment', $3, $4, $5)
         returning ", order_columns!()
    ))
    .bind(new.order_id)
    .bind(new.member)
    .bind(new.total)
    .bind(new.currency)
    .bind(new.key)
    .fetch_one(conn)
    .await;
    match inserted {
        Ok(row) => Ok(Some(row)),
        Err(sqlx::Error::Database(db))
            if db.constraint() == Some("orders_member_idempotency_key") =>
        {
            Ok(None)
        }
        Err(other) => Err(other.into()),
    }
}

/// Writes the lines of order `order_id` at the prices their stock was taken at.
async fn insert_lines(
    conn: &mut PgConnection,
    order_id: Uuid,
    priced: &[PricedLine],
) -> sqlx::Result<()> {
    sqlx::query(
        "insert into order_items (order_id, product_id, quantity, unit_price_cents)
         select $1, * from unnest($2::uuid[], $3::int[], $4::bigint[])",
    )
    .bind(order_id)
    .bind(priced.iter().map(|p| p.product).collect::<Vec<_>>())
    .bind(priced.iter().map(|p| p.quantity).collect::<Vec<_>>())
    .bind(
        priced
            .iter()
            .map(|p| p.taken.price_cents)
            .collect::<Vec<_>>(),
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// `201 Created` with the order and where it lives.
fn created(body: OrderBody) -> Response {
    (
        StatusCode::CREATED,
        [(header::LOCATION, format!("/orders/{}", body.id))],
        Json(body),
    )
        .into_response()
}

async fn find_by_key(
    conn: &mut PgConnection,
    member: MemberId,
    key: &str,
) -> sqlx::Result<Option<OrderRow>> {
    sqlx::query_as(concat!(
        "select ",
        order_columns!(),
        " from orders where member_id = $1 and idempotency_key = $2"
    ))
    .bind(member)
    .bind(key)
    .fetch_optional(conn)
    .await
}

/// Answers a retried request with the first order: a request must ask for the same lines; a
/// retried checkout is the same checkout (its cart is empty by now).
async fn replay(
    conn: &mut PgConnection,
    first: OrderRow,
    source: &LineSource,
) -> Result<Response, ApiError> {
    let body = order_body(conn, first).await?;
    let same = match source {
        LineSource::Request(lines) => body
            .items
            .iter()
            .map(|item| (item.product_id, item.quantity))
            .eq(lines.iter().copied()),
        LineSource::Cart => true,
    };
    if !same {
        return Err(ApiError::new(
            ProblemType::Conflict,
            "this Idempotency-Key was already used for a different order",
        ));
    }
    let mut response = created(body);
    response
        .headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    Ok(response)
}

/// Query of `GET /orders`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListOrders {
    /// Page size, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

// GET /orders → 200 {items, next_cursor}: the caller's orders, newest first
#[utoipa::path(
    get, path = "/orders", tag = "orders",
    security(("bearer" = [])),
    params(ListOrders),
    responses(
        (status = 200, description = "A page of the caller's orders", body = Page<OrderBody>),
        (status = 400, description = "Bad limit or cursor", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "Not logged in", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all, fields(member_id = %member.member_id))]
pub(crate) async fn list_orders(
    State(state): State<AppState>,
    member: AuthMember,
    Query(query): Query<ListOrders>,
) -> Result<Json<Page<OrderBody>>, ApiError> {
    let limit = pagination::limit(query.limit)?;
    let before = query.cursor.as_deref().map(Cursor::decode).transpose()?;
    let mut conn = state.db.acquire().await?;
    let rows: Vec<OrderRow> = sqlx::query_as(concat!(
        "select ",
        order_columns!(),
        " from orders
         where member_id = $1 and ($2::timestamptz is null or (created_at, order_id) < ($2, $3))
         order by created_at desc, order_id desc
         limit $4"
    ))
    .bind(member.member_id)
    .bind(before.map(|c| c.at))
    .bind(before.map(|c| c.id))
    .bind(limit + 1)
    .fetch_all(&mut *conn)
    .await?;
    let ids: Vec<Uuid> = rows.iter().map(|r| r.order_id).collect();
    let mut items = load_items(&mut conn, &ids).await?;
    let bodies = rows
        .into_iter()
        .map(|row| {
            let lines = items.remove(&row.order_id).unwrap_or_default();
            row.into_body(lines)
        })
        .collect();
    Ok(Json(Page::from_rows(bodies, limit, |o: &OrderBody| {
        Cursor {
            at: o.created_at,
            id: o.id,
        }
    })))
}

// GET /orders/{id} → 200 for the owner or an admin; 404 for anyone else
#[utoipa::path(
    get, path = "/orders/{id}", tag = "orders",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Order id")),
    responses(
        (status = 200, description = "The order", body = OrderBody),
        (status = 400, description = "Malformed id", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "Not logged in", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such order of the caller's", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all, fields(order_id = %id))]
pub(crate) async fn get_order(
    State(state): State<AppState>,
    member: AuthMember,
    Path(id): Path<Uuid>,
) -> Result<Json<OrderBody>, ApiError> {
    let mut conn = state.db.acquire().await?;
    let row = own_order(&mut conn, id, &member, false).await?;
    let created_at = row.created_at;
    let mut body = order_body(&mut conn, row).await?;
    let changes: Vec<HistoryEntry> = sqlx::query_as(
        "select status, at from order_history where order_id = $1 order by at, history_id",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    // Every order starts pending payment; the table records what happened after.
    let created = HistoryEntry {
        status: OrderStatus::PendingPayment.as_str().to_owned(),
        at: created_at,
    };
    body.history = Some(std::iter::once(created).chain(changes).collect());
    Ok(Json(body))
}

// POST /orders/{id}/cancel → 200 until shipped; refund and restock exactly once
#[utoipa::path(
    post, path = "/orders/{id}/cancel", tag = "orders",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Order id")),
    responses(
        (status = 200, description = "Cancelled (or already cancelled); a paid order is refunded", body = OrderBody),
        (status = 400, description = "Malformed id", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "Not logged in", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such order of the caller's", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "The order has shipped and can no longer be cancelled (return it once delivered)", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all, fields(order_id = %id))]
pub(crate) async fn cancel_order(
    State(state): State<AppState>,
    member: AuthMember,
    Path(id): Path<Uuid>,
) -> Result<Json<OrderBody>, ApiError> {
    let mut tx = state.db.begin().await?;
    // The row lock makes cancel and restock happen once, however many cancels race, and keeps
    // the fulfilment scheduler (which skips locked orders) from shipping it meanwhile.
    let row = own_order(&mut tx, id, &member, true).await?;
    let status = row.state()?;
    if status == OrderStatus::Cancelled {
        return Ok(Json(order_body(&mut tx, row).await?));
    }
    if !status.cancellable() {
        return Err(ApiError::new(
            ProblemType::Conflict,
            format!("an order that is {status} cannot be cancelled"),
        ));
    }
    sqlx::query("update orders set status = 'cancelled' where order_id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    let restocked = restock::give_back(&mut tx, id.into()).await?;
    if status.charged() {
        outbox::enqueue(
            &mut tx,
            PaymentJob::SUBJECT,
            &PaymentJob::Refund {
                order_id: id.into(),
            },
        )
        .await?;
    }
    outbox::email_buyer(&mut tx, id.into(), |o| EmailMessage::OrderProgress {
        order_id: o.order_id,
        status: OrderStatus::Cancelled,
        tracking_ref: None,
    })
    .await?;
    let body = reload(&mut tx, id).await?;
    tx.commit().await?;
    // The cancel is committed; Redis learns of it on a task of its own, so a request dropped
    // now (a timeout, a client gone) cannot leave the gate a unit short.
    let (redis, keys) = (state.redis.clone(), state.keys.clone());
    let ticket = row.flash_sale_id.zip(row.ticket_id);
    let told = tokio::spawn(async move {
        restock::announce(&redis, &keys, &restocked).await;
        if let Some((sale, ticket)) = ticket
            && let Err(err) =
                tickets::settle_ticket(&redis, &keys, sale, ticket, Settled::Cancelled).await
        {
            tracing::warn!(error = %err, %ticket, "telling the ticket its order was cancelled failed");
        }
    });
    if let Err(err) = told.await {
        tracing::error!(error = %err, "telling Redis of a cancel panicked");
    }
    metrics::counter!("flash_catalog_orders_total", "outcome" => "cancelled").increment(1);
    Ok(Json(body))
}

// POST /orders/{id}/return → 200 return_requested within the window after delivery; 409 else
#[utoipa::path(
    post, path = "/orders/{id}/return", tag = "orders",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Order id")),
    responses(
        (status = 200, description = "Return requested (or already requested or done); the fulfilment scheduler receives it, then restocks and refunds once", body = OrderBody),
        (status = 400, description = "Malformed id", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "Not logged in", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such order of the caller's", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "Not delivered yet, or the return window closed (`deadline` says when)", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all, fields(order_id = %id))]
pub(crate) async fn return_order(
    State(state): State<AppState>,
    member: AuthMember,
    Path(id): Path<Uuid>,
) -> Result<Json<OrderBody>, ApiError> {
    let mut tx = state.db.begin().await?;
    let row = own_order(&mut tx, id, &member, true).await?;
    match row.state()? {
        OrderStatus::ReturnRequested | OrderStatus::Returned => {
            return Ok(Json(order_body(&mut tx, row).await?));
        }
        OrderStatus::Delivered => {}
        other => {
            return Err(ApiError::new(
                ProblemType::Conflict,
                format!("an order that is {other} cannot be returned; only delivered orders can"),
            ));
        }
    }
    let delivered_at: DateTime<Utc> = sqlx::query_scalar(
        "select at from order_history where order_id = $1 and status = 'delivered'",
    )
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    let deadline = delivered_at + state.return_window;
    if Utc::now() > deadline {
        return Err(ApiError::ReturnWindowClosed { deadline });
    }
    sqlx::query("update orders set status = 'return_requested' where order_id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    outbox::email_buyer(&mut tx, id.into(), |o| EmailMessage::OrderProgress {
        order_id: o.order_id,
        status: OrderStatus::ReturnRequested,
        tracking_ref: None,
    })
    .await?;
    let body = reload(&mut tx, id).await?;
    tx.commit().await?;
    metrics::counter!("flash_catalog_orders_total", "outcome" => "return_requested").increment(1);
    Ok(Json(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_key(value: &[u8]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(IDEMPOTENCY_KEY, HeaderValue::from_bytes(value).unwrap());
        headers
    }

    #[test]
    fn an_idempotency_key_is_1_to_255_visible_ascii_characters() {
        assert_eq!(idempotency_key(&HeaderMap::new()).unwrap(), None);
        assert_eq!(
            idempotency_key(&with_key(b"order-1")).unwrap().as_deref(),
            Some("order-1")
        );
        assert!(idempotency_key(&with_key(&[b'k'; 255])).is_ok());
        let bad: [&[u8]; 4] = [b"", &[b'k'; 256], b"two words", "caf\u{e9}".as_bytes()];
        for key in bad {
            assert!(idempotency_key(&with_key(key)).is_err(), "{key:?} accepted");
        }
    }
}
