//! The HTTP surface of catalog-api: shared state, the router, and the OpenAPI document.

mod cart;
mod console;
mod flash_sales;
mod orders;
mod products;
mod sale_control;
mod sale_stats;

use std::sync::Arc;

use axum::{Router, extract::FromRef, routing::get};
use flash_core::http::BearerSecurity;
use flash_core::{
    auth::Authenticator,
    config::HttpArgs,
    http::Readiness,
    problem::{FieldError, ProblemBody, UnavailableItem},
    redis_model::Keys,
};
use redis::aio::ConnectionManager;
use sqlx::PgPool;
use utoipa::OpenApi;

pub(crate) use console::console_page;

use crate::cache::ProductCache;

/// What every handler can reach.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) db: PgPool,
    pub(crate) redis: ConnectionManager,
    pub(crate) keys: Keys,
    pub(crate) auth: Arc<Authenticator>,
    pub(crate) cache: ProductCache,
    pub(crate) console: Arc<flash_core::page::Page>,
    /// How long after delivery a buyer may still return an order.
    pub(crate) return_window: chrono::TimeDelta,
}

impl FromRef<AppState> for Arc<Authenticator> {
    fn from_ref(state: &AppState) -> Self {
        Arc::clone(&state.auth)
    }
}

/// The whole application: API routes, ops routes, OpenAPI, and the shared middleware.
pub(crate) fn router(state: AppState, readiness: Readiness, http: &HttpArgs) -> Router {
    let api = Router::new()
        .merge(products::router())
        .merge(flash_sales::router())
        .merge(orders::router())
        .merge(cart::router())
        .merge(console::router())
        .route("/openapi.json", get(openapi_json))
        .with_state(state);
    flash_core::http::with_middleware(api.merge(flash_core::http::ops_router(readiness)), http)
}

async fn openapi_json() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(ApiDoc::openapi())
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "catalog-api",
        description = "Products, flash-sale definitions (admin), carts, regular orders and \
                       the order lifecycle (cancel, return) of the flash-sale shop. Errors are RFC 7807 application/problem+json."
    ),
    paths(
        products::list_products,
        products::get_product,
        products::create_product,
        products::update_product,
        products::delete_product,
        flash_sales::list_flash_sales,
        flash_sales::get_flash_sale,
        flash_sales::create_flash_sale,
        flash_sales::update_flash_sale,
        flash_sales::cancel_flash_sale,
        sale_control::pause_sale,
        sale_control::resume_sale,
        sale_control::set_outflow,
        sale_control::change_stock,
        sale_control::end_sale,
        sale_control::sale_audit,
        sale_stats::sale_stats,
        orders::create_order,
        orders::list_orders,
        orders::get_order,
        orders::cancel_order,
        orders::return_order,
        cart::get_cart,
        cart::put_item,
        cart::delete_item,
        cart::checkout,
    ),
    components(schemas(ProblemBody, FieldError, UnavailableItem)),
    modifiers(&BearerSecurity),
    tags((name = "products"), (name = "flash-sales"), (name = "sale-control"), (name = "orders"), (name = "cart"))
)]
struct ApiDoc;
