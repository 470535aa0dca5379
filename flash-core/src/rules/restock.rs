//! Giving an order's units back when it stops being live (cancelled or returned).
//!
//! INVARIANT: `quantity_left + live orders = quantity` for a flash sale, and a regular order's
//! units return to the product's stock. Callers make this happen once per order by changing the
//! order's status under its row lock (or with a status guard) in the same transaction.

use crate::redis::Redis;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    domain::OrderId,
    redis_model::{Keys, product_cache, sale_gate},
};

/// Where the units of an order went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restocked {
    /// Back to the flash sale: the caller gives them to the sale's gate after the commit (the
    /// waitlist, if any, gets them first).
    Sale {
        /// The sale.
        sale: Uuid,
        /// How many units.
        units: i32,
    },
    /// Back to the products' stock; each product with its new version (for cache
    /// invalidation).
    Products(Vec<(Uuid, i64)>),
}

/// Returns the units of `order` to its sale or its products, inside the caller's transaction.
///
/// # Errors
/// When PostgreSQL fails.
pub async fn give_back(conn: &mut PgConnection, order: OrderId) -> sqlx::Result<Restocked> {
    let sale: Option<Uuid> =
        sqlx::query_scalar("select flash_sale_id from orders where order_id = $1")
            .bind(order)
            .fetch_one(&mut *conn)
            .await?;
    if let Some(sale) = sale {
        let units: i32 = sqlx::query_scalar(
            "with units as (select coalesce(sum(quantity), 0)::int as n from order_items where order_id = $2)
             update flash_sales set quantity_left = quantity_left + (select n from units)
             where flash_sale_id = $1 returning (select n from units)",
        )
        .bind(sale)
        .bind(order)
        .fetch_one(&mut *conn)
        .await?;
        return Ok(Restocked::Sale { sale, units });
    }
    // Lock the products in id order, the order taking stock locks them in (no deadlocks).
    sqlx::query(
        "select 1 from products where product_id in (select product_id from order_items where order_id = $1)
         order by product_id for update",
    )
    .bind(order)
    .execute(&mut *conn)
    .await?;
    let versions: Vec<(Uuid, i64)> = sqlx::query_as(
        "update products p set stock = p.stock + i.quantity, version = p.version + 1
         from order_items i where i.order_id = $1 and p.product_id = i.product_id
         returning p.product_id, p.version",
    )
    .bind(order)
    .fetch_all(&mut *conn)
    .await?;
    Ok(Restocked::Products(versions))
}

/// After the commit, tells Redis where the units went: a sale's gate gets them back (its
/// waitlist first), or the product cache learns the new stock. Best effort: the reconciler
/// re-arms a gate from PostgreSQL, and a cache entry expires within its TTL.
pub async fn announce(redis: &Redis, keys: &Keys, restocked: &Restocked) {
    match restocked {
        Restocked::Products(versions) => product_cache::invalidate(redis, keys, versions).await,
        Restocked::Sale { sale, units } => {
            for _ in 0..*units {
                if let Err(err) = sale_gate::return_unit(redis, keys, *sale).await {
                    tracing::warn!(error = %err, sale_id = %sale, "returning a unit to the gate failed; the reconciler will fix it");
                }
            }
        }
    }
}
