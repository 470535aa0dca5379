//! `/products`: the catalog. Anyone reads; admins write. Reads go through the product cache.

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use chrono::{DateTime, Utc};
use flash_core::{
    ApiError, ProblemType,
    auth::AdminMember,
    extract::{Json, Path, Query},
    pagination::{self, Cursor, Page},
    problem::{FieldError, ProblemBody, ResultExt},
    redis_model::product_cache::Lookup,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{state::AppState, validation::check_range};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/products", get(list_products).post(create_product))
        .route(
            "/products/{id}",
            get(get_product)
                .patch(update_product)
                .delete(delete_product),
        )
}

/// Largest stock one product may hold (fits PostgreSQL `integer`).
const MAX_STOCK: i64 = 1_000_000_000;
/// Largest price accepted, in minor units (a billion in major units).
const MAX_PRICE_CENTS: i64 = 100_000_000_000;

/// A product as the API shows it (and as the cache stores it).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema, sqlx::FromRow)]
pub(crate) struct ProductBody {
    #[sqlx(rename = "product_id")]
    pub(crate) id: Uuid,
    pub(crate) sku: String,
    pub(crate) name: String,
    pub(crate) description: String,
    /// Price in minor units of `currency`.
    pub(crate) price_cents: i64,
    /// ISO 4217 code.
    pub(crate) currency: String,
    /// Units available to regular orders (flash sales reserve theirs at creation).
    pub(crate) stock: i32,
    /// Inactive products are neither listed nor orderable.
    pub(crate) active: bool,
    pub(crate) created_at: DateTime<Utc>,
}

/// A product row with the version the cache orders writes by.
#[derive(sqlx::FromRow)]
struct ProductRow {
    #[sqlx(flatten)]
    body: ProductBody,
    version: i64,
}

/// The columns of a [`ProductRow`], spliced into SQL at compile time (queries stay `'static`).
macro_rules! product_columns {
    () => {
        "product_id, sku, name, description, price_cents, currency, stock, active, created_at, version"
    };
}

/// Query of `GET /products`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListProducts {
    /// Page size, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Case-insensitive text to find in the name, SKU or description (at most 100 characters).
    q: Option<String>,
}

// GET /products?limit=&cursor=&q= → 200 {items, next_cursor} (active products, oldest first)
#[utoipa::path(
    get, path = "/products", tag = "products",
    params(ListProducts),
    responses(
        (status = 200, description = "A page of active products", body = Page<ProductBody>),
        (status = 400, description = "Bad limit, cursor or q", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all)]
pub(crate) async fn list_products(
    State(state): State<AppState>,
    Query(query): Query<ListProducts>,
) -> Result<Json<Page<ProductBody>>, ApiError> {
    let limit = pagination::limit(query.limit)?;
    let after = query.cursor.as_deref().map(Cursor::decode).transpose()?;
    let pattern = match query.q.as_deref().map(str::trim) {
        Some(q) if q.chars().count() > 100 => {
            return Err(ApiError::bad_request("`q` must be at most 100 characters"));
        }
        Some(q) if !q.is_empty() => Some(format!("%{}%", escape_like(q))),
        _ => None,
    };
    let rows: Vec<ProductBody> = sqlx::query_as(
        "select product_id, sku, name, description, price_cents, currency, stock, active, created_at
         from products
         where active
           and ($1::text is null or name ilike $1 or sku ilike $1 or description ilike $1)
           and ($2::timestamptz is null or (created_at, product_id) > ($2, $3))
         order by created_at, product_id
         limit $4",
    )
    .bind(pattern)
    .bind(after.map(|c| c.at))
    .bind(after.map(|c| c.id))
    .bind(limit + 1)
    .fetch_all(&state.db)
    .await?;
    Ok(Json(Page::from_rows(rows, limit, |p| Cursor {
        at: p.created_at,
        id: p.id,
    })))
}

/// Escapes LIKE wildcards so `q` matches literally.
fn escape_like(q: &str) -> String {
    q.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

// GET /products/{id} → 200 / 404 (inactive products are 404)
#[utoipa::path(
    get, path = "/products/{id}", tag = "products",
    params(("id" = Uuid, Path, description = "Product id")),
    responses(
        (status = 200, description = "The product", body = ProductBody),
        (status = 400, description = "Malformed id", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such active product", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all, fields(product_id = %id))]
pub(crate) async fn get_product(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> Result<Json<ProductBody>, ApiError> {
    let product = match state.cache.get(id).await {
        Lookup::Hit(json) => {
            serde_json::from_str::<ProductBody>(&json).map_err(anyhow::Error::from)?
        }
        Lookup::Miss => {
            let row = fetch_product(&state, id)
                .await?
                .ok_or_else(|| not_found(id))?;
            let json = serde_json::to_string(&row.body).map_err(anyhow::Error::from)?;
            state.cache.fill(id, row.version, &json).await;
            row.body
        }
    };
    if !product.active {
        return Err(not_found(id));
    }
    Ok(Json(product))
}

fn not_found(id: Uuid) -> ApiError {
    ApiError::not_found(format!("no product {id}"))
}

async fn fetch_product(state: &AppState, id: Uuid) -> sqlx::Result<Option<ProductRow>> {
    sqlx::query_as(concat!(
        "select ",
        product_columns!(),
        " from products where product_id = $1"
    ))
    .bind(id)
    .fetch_optional(&state.db)
    .await
}

/// A new product.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewProduct {
    /// Unique stock-keeping unit: 1 to 64 of `A-Z a-z 0-9 - _ .`.
    #[schema(example = "SNEAKER-42")]
    sku: String,
    #[schema(example = "Limited sneaker")]
    name: String,
    #[serde(default)]
    description: String,
    #[schema(example = 12900, minimum = 0)]
    price_cents: i64,
    #[schema(example = "EUR")]
    currency: String,
    #[schema(example = 500, minimum = 0)]
    stock: i64,
    #[serde(default = "yes")]
    active: bool,
}

fn yes() -> bool {
    true
}

/// Changes to a product; absent fields stay as they are.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProductChanges {
    sku: Option<String>,
    name: Option<String>,
    description: Option<String>,
    price_cents: Option<i64>,
    currency: Option<String>,
    stock: Option<i64>,
    active: Option<bool>,
}

impl ProductChanges {
    fn validate(&self) -> Result<(), ApiError> {
        let mut errors = Vec::new();
        if let Some(sku) = &self.sku {
            check_sku(sku, &mut errors);
        }
        if let Some(name) = &self.name {
            check_text("name", name, 1, 200, &mut errors);
        }
        if let Some(description) = &self.description {
            check_text("description", description, 0, 5000, &mut errors);
        }
        if let Some(price) = self.price_cents {
            check_range("price_cents", price, 0, MAX_PRICE_CENTS, &mut errors);
        }
        if let Some(currency) = &self.currency {
            check_currency(currency, &mut errors);
        }
        if let Some(stock) = self.stock {
            check_range("stock", stock, 0, MAX_STOCK, &mut errors);
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Validation(errors))
        }
    }
}

impl From<NewProduct> for ProductChanges {
    fn from(new: NewProduct) -> Self {
        Self {
            sku: Some(new.sku),
            name: Some(new.name),
            description: Some(new.description),
            price_cents: Some(new.price_cents),
            currency: Some(new.currency),
            stock: Some(new.stock),
            active: Some(new.active),
        }
    }
}

fn check_sku(sku: &str, errors: &mut Vec<FieldError>) {
    let valid = (1..=64).contains(&sku.len())
        && sku
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !valid {
        errors.push(FieldError::new(
            "sku",
            "must be 1 to 64 of A-Z a-z 0-9 - _ .",
        ));
    }
}

fn check_text(field: &str, text: &str, min: usize, max: usize, errors: &mut Vec<FieldError>) {
    let chars = text.trim().chars().count();
    if chars < min || text.chars().count() > max {
        errors.push(FieldError::new(
            field,
            format!("must be {min} to {max} characters"),
        ));
    } else if text.chars().any(|c| c.is_control() && c != '\n') {
        errors.push(FieldError::new(
            field,
            "must not contain control characters",
        ));
    }
}

fn check_currency(currency: &str, errors: &mut Vec<FieldError>) {
    if !(currency.len() == 3 && currency.chars().all(|c| c.is_ascii_uppercase())) {
        errors.push(FieldError::new(
            "currency",
            "must be an ISO 4217 code like EUR",
        ));
    }
}

// POST /products → 201 (admin)
#[utoipa::path(
    post, path = "/products", tag = "products",
    security(("bearer" = [])),
    request_body = NewProduct,
    responses(
        (status = 201, description = "Created", body = ProductBody),
        (status = 400, description = "Malformed JSON", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "Not logged in", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "SKU taken", body = ProblemBody, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all)]
pub(crate) async fn create_product(
    State(state): State<AppState>,
    _admin: AdminMember,
    Json(new): Json<NewProduct>,
) -> Result<Response, ApiError> {
    let changes = ProductChanges::from(new);
    changes.validate()?;
    let row: ProductRow = sqlx::query_as(concat!(
        "insert into products (product_id, sku, name, description, price_cents, currency, stock, active)
         values ($1, $2, $3, $4, $5, $6, $7, $8)
         returning ",
        product_columns!()
    ))
    .bind(Uuid::now_v7())
    .bind(changes.sku)
    .bind(changes.name.map(|n| n.trim().to_owned()))
    .bind(changes.description)
    .bind(changes.price_cents)
    .bind(changes.currency)
    .bind(changes.stock.and_then(|s| i32::try_from(s).ok()))
    .bind(changes.active)
    .fetch_one(&state.db)
    .await
    .on_constraint("products_sku_key", |_| ApiError::new(ProblemType::Conflict, "a product with this SKU exists"))?;
    let location = format!("/products/{}", row.body.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(row.body),
    )
        .into_response())
}

// PATCH /products/{id} → 200 (admin); readers never see the old version after this answers
#[utoipa::path(
    patch, path = "/products/{id}", tag = "products",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Product id")),
    request_body = ProductChanges,
    responses(
        (status = 200, description = "Updated", body = ProductBody),
        (status = 400, description = "Malformed JSON or id", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "Not logged in", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such product", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "SKU taken", body = ProblemBody, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all, fields(product_id = %id))]
pub(crate) async fn update_product(
    State(state): State<AppState>,
    _admin: AdminMember,
    Path(id): Path<Uuid>,
    Json(changes): Json<ProductChanges>,
) -> Result<Json<ProductBody>, ApiError> {
    changes.validate()?;
    let row: ProductRow = sqlx::query_as(concat!(
        "update products set
            sku = coalesce($2, sku), name = coalesce($3, name), description = coalesce($4, description),
            price_cents = coalesce($5, price_cents), currency = coalesce($6, currency),
            stock = coalesce($7, stock), active = coalesce($8, active), version = version + 1
         where product_id = $1
         returning ",
        product_columns!()
    ))
    .bind(id)
    .bind(changes.sku)
    .bind(changes.name.map(|n| n.trim().to_owned()))
    .bind(changes.description)
    .bind(changes.price_cents)
    .bind(changes.currency)
    .bind(changes.stock.and_then(|s| i32::try_from(s).ok()))
    .bind(changes.active)
    .fetch_optional(&state.db)
    .await
    .on_constraint("products_sku_key", |_| ApiError::new(ProblemType::Conflict, "a product with this SKU exists"))?
    .ok_or_else(|| not_found(id))?;
    state.cache.invalidate(id, row.version).await;
    Ok(Json(row.body))
}

// DELETE /products/{id} → 204 (admin); a soft delete: the product stops being listed and sold
#[utoipa::path(
    delete, path = "/products/{id}", tag = "products",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Product id")),
    responses(
        (status = 204, description = "Deactivated"),
        (status = 400, description = "Malformed id", body = ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "Not logged in", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such product", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all, fields(product_id = %id))]
pub(crate) async fn delete_product(
    State(state): State<AppState>,
    _admin: AdminMember,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    let version: Option<(i64,)> = sqlx::query_as(
        "update products set active = false, version = version + 1 where product_id = $1 returning version",
    )
    .bind(id)
    .fetch_optional(&state.db)
    .await?;
    let (version,) = version.ok_or_else(|| not_found(id))?;
    state.cache.invalidate(id, version).await;
    Ok(StatusCode::NO_CONTENT)
}
