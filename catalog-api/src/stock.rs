//! A product's stock: the one guarded update every taker of units goes through (a regular
//! order's lines, a flash sale's reservation), and the unguarded give-back of units a sale no
//! longer holds. Written once, so the guard that keeps stock from going negative is too.

use sqlx::PgConnection;
use uuid::Uuid;

/// Units taken from a product: its price and currency as they were taken, and its new version
/// (what the product cache orders its writes by).
#[derive(Debug)]
pub(crate) struct Taken {
    pub(crate) price_cents: i64,
    pub(crate) currency: String,
    pub(crate) version: i64,
}

/// Why units could not be taken.
#[derive(Debug)]
pub(crate) enum Shortfall {
    /// No such product.
    Unknown,
    /// The product is no longer sold.
    Inactive { name: String },
    /// Fewer units are in stock than were asked for.
    Short { name: String, stock: i32 },
}

/// Takes `units` of `product` (negative: gives them back) in the caller's transaction, or says
/// why it cannot.
pub(crate) async fn take(
    conn: &mut PgConnection,
    product: Uuid,
    units: i64,
) -> sqlx::Result<Result<Taken, Shortfall>> {
    // INVARIANT: products.stock never < 0: the guard takes units only when enough are left, and
    // the row lock serialises concurrent takers of one product (no lost update).
    let taken: Option<(i64, String, i64)> = sqlx::query_as(
        "update products set stock = stock - $2, version = version + 1
         where product_id = $1 and active and stock >= $2
         returning price_cents, currency, version",
    )
    .bind(product)
    .bind(units)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some((price_cents, currency, version)) = taken {
        return Ok(Ok(Taken {
            price_cents,
            currency,
            version,
        }));
    }
    let found: Option<(bool, i32, String)> =
        sqlx::query_as("select active, stock, name from products where product_id = $1")
            .bind(product)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(Err(match found {
        None => Shortfall::Unknown,
        Some((false, _, name)) => Shortfall::Inactive { name },
        Some((true, stock, name)) => Shortfall::Short { name, stock },
    }))
}

/// Gives `units` a sale no longer holds back to `product`; returns the product's new version.
pub(crate) async fn give_back(
    conn: &mut PgConnection,
    product: Uuid,
    units: i32,
) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "update products set stock = stock + $2, version = version + 1
         where product_id = $1 returning version",
    )
    .bind(product)
    .bind(units)
    .fetch_one(conn)
    .await
}
