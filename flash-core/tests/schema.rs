//! The constraints that carry the invariants hold against the real PostgreSQL, whatever code
//! writes the rows.

// A failed unwrap is how a test reports an unexpected answer.
#![allow(clippy::unwrap_used)]

use sqlx::{PgPool, postgres::PgDatabaseError};
use uuid::Uuid;

struct Fixture {
    member: Uuid,
    product: Uuid,
    sale: Uuid,
}

async fn fixture(db: &PgPool, per_member_limit: i32) -> Fixture {
    let member = Uuid::new_v4();
    let product = Uuid::new_v4();
    let sale = Uuid::new_v4();
    sqlx::query(
        "insert into members (member_id, email, password_hash, name) values ($1, $2, 'x', 'M')",
    )
    .bind(member)
    .bind(format!("{member}@example.com"))
    .execute(db)
    .await
    .unwrap();
    sqlx::query("insert into products (product_id, sku, name, price_cents, currency, stock) values ($1, $2, 'P', 100, 'EUR', 10)")
        .bind(product)
        .bind(product.to_string())
        .execute(db)
        .await
        .unwrap();
    sqlx::query(
        "insert into flash_sales (flash_sale_id, product_id, price_cents, currency, quantity, quantity_left,
                                  per_member_limit, starts_at, ends_at)
         values ($1, $2, 50, 'EUR', 5, 5, $3, now(), now() + interval '1 hour')",
    )
    .bind(sale)
    .bind(product)
    .bind(per_member_limit)
    .execute(db)
    .await
    .unwrap();
    Fixture {
        member,
        product,
        sale,
    }
}

async fn insert_flash_order(db: &PgPool, f: &Fixture, ticket: Uuid) -> Result<Uuid, sqlx::Error> {
    let order = Uuid::new_v4();
    sqlx::query(
        "insert into orders (order_id, member_id, kind, total_cents, currency, flash_sale_id, ticket_id)
         values ($1, $2, 'flash', 50, 'EUR', $3, $4)",
    )
    .bind(order)
    .bind(f.member)
    .bind(f.sale)
    .bind(ticket)
    .execute(db)
    .await
    .map(|_| order)
}

fn violated(err: sqlx::Error) -> String {
    let sqlx::Error::Database(db) = err else {
        panic!("expected a constraint violation, got {err}")
    };
    let pg = db.downcast_ref::<PgDatabaseError>();
    pg.constraint().unwrap_or_default().to_owned()
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn stock_and_quantity_left_can_never_go_negative(db: PgPool) {
    let f = fixture(&db, 1).await;

    let stock = sqlx::query("update products set stock = stock - 11 where product_id = $1")
        .bind(f.product)
        .execute(&db)
        .await;
    let left = sqlx::query("update flash_sales set quantity_left = -1 where flash_sale_id = $1")
        .bind(f.sale)
        .execute(&db)
        .await;
    let above = sqlx::query("update flash_sales set quantity_left = 6 where flash_sale_id = $1")
        .bind(f.sale)
        .execute(&db)
        .await;

    assert_eq!(violated(stock.unwrap_err()), "products_stock_check");
    assert_eq!(
        violated(left.unwrap_err()),
        "flash_sales_quantity_left_check"
    );
    assert_eq!(
        violated(above.unwrap_err()),
        "flash_sales_quantity_left_check"
    );
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn one_ticket_makes_at_most_one_order(db: PgPool) {
    let f = fixture(&db, 5).await;
    let ticket = Uuid::new_v4();
    insert_flash_order(&db, &f, ticket).await.unwrap();

    let again = insert_flash_order(&db, &f, ticket).await;

    assert_eq!(violated(again.unwrap_err()), "orders_ticket_id_key");
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn live_flash_orders_per_member_stay_within_the_sale_limit(db: PgPool) {
    let f = fixture(&db, 2).await;
    let first = insert_flash_order(&db, &f, Uuid::new_v4()).await.unwrap();
    insert_flash_order(&db, &f, Uuid::new_v4()).await.unwrap();

    let third = insert_flash_order(&db, &f, Uuid::new_v4()).await;
    assert_eq!(
        violated(third.unwrap_err()),
        "flash_sale_entitlements_limit_check"
    );

    // A cancelled order frees its slot, exactly once.
    sqlx::query("update orders set status = 'cancelled' where order_id = $1")
        .bind(first)
        .execute(&db)
        .await
        .unwrap();
    sqlx::query("update orders set status = 'cancelled' where order_id = $1")
        .bind(first)
        .execute(&db)
        .await
        .unwrap();
    insert_flash_order(&db, &f, Uuid::new_v4()).await.unwrap();
    let over = insert_flash_order(&db, &f, Uuid::new_v4()).await;
    assert_eq!(
        violated(over.unwrap_err()),
        "flash_sale_entitlements_limit_check"
    );
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn a_flash_order_needs_its_sale_and_ticket_and_a_regular_one_has_neither(db: PgPool) {
    let f = fixture(&db, 1).await;
    let insert = |kind: &'static str, sale: Option<Uuid>, ticket: Option<Uuid>| {
        sqlx::query(
            "insert into orders (order_id, member_id, kind, total_cents, currency, flash_sale_id, ticket_id)
             values ($1, $2, $3, 50, 'EUR', $4, $5)",
        )
        .bind(Uuid::new_v4())
        .bind(f.member)
        .bind(kind)
        .bind(sale)
        .bind(ticket)
        .execute(&db)
    };

    let flash_without_ticket = insert("flash", Some(f.sale), None).await;
    let regular_with_ticket = insert("regular", None, Some(Uuid::new_v4())).await;

    assert_eq!(
        violated(flash_without_ticket.unwrap_err()),
        "orders_flash_fields_check"
    );
    assert_eq!(
        violated(regular_with_ticket.unwrap_err()),
        "orders_flash_fields_check"
    );
    insert("regular", None, None).await.unwrap();
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn a_sale_must_end_after_it_starts(db: PgPool) {
    let f = fixture(&db, 1).await;

    let result = sqlx::query("update flash_sales set ends_at = starts_at where flash_sale_id = $1")
        .bind(f.sale)
        .execute(&db)
        .await;

    assert_eq!(violated(result.unwrap_err()), "flash_sales_window_check");
}
