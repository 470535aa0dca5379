//! The HTTP surface of catalog-api: the router wiring every resource's routes, and the OpenAPI
//! document.

mod cart;
mod console;
mod flash_sales;
mod orders;
mod products;

use axum::{Router, routing::get};
use flash_core::http::BearerSecurity;
use flash_core::{
    config::HttpArgs,
    http::Readiness,
    problem::{FieldError, ProblemBody, UnavailableItem},
};
use utoipa::OpenApi;

pub(crate) use console::console_page;

use crate::state::AppState;

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
    flash_core::http::with_middleware(
        api.merge(flash_core::http::ops_router(readiness, http)),
        http,
    )
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
        flash_sales::definitions::list_flash_sales,
        flash_sales::definitions::get_flash_sale,
        flash_sales::definitions::create_flash_sale,
        flash_sales::definitions::update_flash_sale,
        flash_sales::definitions::cancel_flash_sale,
        flash_sales::control::pause_sale,
        flash_sales::control::resume_sale,
        flash_sales::control::set_outflow,
        flash_sales::stock_change::change_stock,
        flash_sales::control::end_sale,
        flash_sales::audit::sale_audit,
        flash_sales::stats::sale_stats,
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
