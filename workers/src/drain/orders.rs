//! The drain's transaction: the facts the allocation rule needs, read under the sale's row
//! lock, and its grants written as orders, taken units and payment jobs, so that they commit
//! together or not at all.

use std::collections::HashMap;

use anyhow::Context;
use chrono::{DateTime, Utc};
use flash_core::{
    domain::{OrderId, ProductId, TicketId},
    jobs::{PaymentJob, TicketMessage},
    outbox,
    sale_events::{self, SaleEvent},
};
use sqlx::PgConnection;
use uuid::Uuid;

use super::allocation::{self, Allocation, Fate, Grant, KnownTicket, SaleFacts};

/// The sale a batch belongs to, locked for the transaction.
#[derive(sqlx::FromRow)]
struct SaleRow {
    product_id: ProductId,
    price_cents: i64,
    currency: String,
    quantity_left: i32,
    per_member_limit: i32,
    cancelled_at: Option<DateTime<Utc>>,
}

impl SaleRow {
    fn facts(&self) -> SaleFacts {
        SaleFacts {
            quantity_left: self.quantity_left,
            per_member_limit: self.per_member_limit,
            cancelled: self.cancelled_at.is_some(),
        }
    }
}

/// Decides every ticket of one sale's share of a batch (see [`allocation::allocate`]),
/// inside `conn`'s transaction, and writes the orders it grants.
pub(super) async fn decide(
    conn: &mut PgConnection,
    sale: Uuid,
    tickets: &[&TicketMessage],
    settled: HashMap<TicketId, Fate>,
) -> anyhow::Result<HashMap<TicketId, Fate>> {
    let Some(row) = lock_sale(conn, sale).await? else {
        return Ok(allocation::allocate(None, &[], settled, tickets.iter().copied()).fates);
    };
    let known = known_tickets(conn, sale, tickets).await?;
    let Allocation { fates, grants } =
        allocation::allocate(Some(row.facts()), &known, settled, tickets.iter().copied());
    if grants.is_empty() {
        return Ok(fates);
    }
    let orders = insert_orders(conn, sale, &row, &grants).await?;
    take_units(conn, sale, orders.len()).await?;
    queue_charges(conn, &row, &orders).await?;
    Ok(fates)
}

/// The sale's row, locked until the commit; `None` when there is no such sale.
async fn lock_sale(conn: &mut PgConnection, sale: Uuid) -> sqlx::Result<Option<SaleRow>> {
    // The row lock serialises batches of one sale across worker processes. `no key update`, as
    // the quantity update would take: it does not block the foreign-key checks other
    // transactions make against the sale (`for update` would).
    sqlx::query_as(
        "select product_id, price_cents, currency, quantity_left, per_member_limit, cancelled_at
         from flash_sales where flash_sale_id = $1 for no key update",
    )
    .bind(sale)
    .fetch_optional(&mut *conn)
    .await
}

/// One round trip for every ticket of the batch. Each lookup is a scalar subquery, so it is
/// an index probe per ticket whatever the statistics say: a sale grows by thousands of orders
/// within seconds, and a join planned from its statistics scanned all of the sale's
/// entitlements (and, in a young database, all its orders) for every batch.
async fn known_tickets(
    conn: &mut PgConnection,
    sale: Uuid,
    tickets: &[&TicketMessage],
) -> sqlx::Result<Vec<KnownTicket>> {
    let ids: Vec<TicketId> = tickets.iter().map(|t| t.ticket_id).collect();
    let members: Vec<Uuid> = tickets.iter().map(|t| t.member_id.get()).collect();
    sqlx::query_as(
        "select u.ticket_id, u.member_id,
                (select o.order_id from orders o where o.ticket_id = u.ticket_id) as order_id,
                coalesce((select true from members m where m.member_id = u.member_id), false)
                    as member_exists,
                coalesce((select e.live_orders from flash_sale_entitlements e
                          where e.flash_sale_id = $1 and e.member_id = u.member_id), 0)
                    as live_orders
         from unnest($2::uuid[], $3::uuid[]) as u(ticket_id, member_id)",
    )
    .bind(sale)
    .bind(&ids)
    .bind(&members)
    .fetch_all(&mut *conn)
    .await
}

/// Inserts the granted orders and their items; returns the orders, as inserted.
async fn insert_orders(
    conn: &mut PgConnection,
    sale: Uuid,
    row: &SaleRow,
    grants: &[Grant],
) -> anyhow::Result<Vec<OrderId>> {
    let inserted: Vec<(TicketId, OrderId)> = sqlx::query_as(
        "insert into orders (order_id, member_id, kind, status, total_cents, currency, flash_sale_id, ticket_id)
         select o, m, 'flash', 'pending_payment', $4, $5, $6, t
         from unnest($1::uuid[], $2::uuid[], $3::uuid[]) as g(o, m, t)
         on conflict (ticket_id) do nothing
         returning ticket_id, order_id",
    )
    .bind(grants.iter().map(|g| g.order).collect::<Vec<_>>())
    .bind(grants.iter().map(|g| g.member).collect::<Vec<_>>())
    .bind(grants.iter().map(|g| g.ticket).collect::<Vec<_>>())
    .bind(row.price_cents)
    .bind(&row.currency)
    .bind(sale)
    .fetch_all(&mut *conn)
    .await?;
    // Under the sale's row lock no other worker inserts these tickets, and redeliveries were
    // found before the rule ran, so every grant must have been inserted; anything else rolls
    // the batch back.
    anyhow::ensure!(
        inserted.len() == grants.len(),
        "{} of {} orders of sale {sale} conflicted",
        grants.len() - inserted.len(),
        grants.len()
    );
    let orders: Vec<OrderId> = inserted.iter().map(|(_, o)| *o).collect();
    sqlx::query(
        "insert into order_items (order_id, product_id, quantity, unit_price_cents)
         select o, $2, 1, $3 from unnest($1::uuid[]) as g(o)",
    )
    .bind(&orders)
    .bind(row.product_id)
    .bind(row.price_cents)
    .execute(&mut *conn)
    .await?;
    Ok(orders)
}

/// Takes `ordered` units from the sale, and records it sold out when none are left.
async fn take_units(conn: &mut PgConnection, sale: Uuid, ordered: usize) -> anyhow::Result<()> {
    let taken = i32::try_from(ordered).context("batch too large")?;
    // INVARIANT: quantity_left never < 0, and drops by exactly the orders inserted.
    let left_now: Option<i32> = sqlx::query_scalar(
        "update flash_sales set quantity_left = quantity_left - $2
         where flash_sale_id = $1 and quantity_left >= $2
         returning quantity_left",
    )
    .bind(sale)
    .bind(taken)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(left_now) = left_now else {
        anyhow::bail!("quantity_left of sale {sale} would go negative");
    };
    if left_now == 0 {
        sale_events::record(&mut *conn, sale, SaleEvent::SoldOut).await?;
    }
    Ok(())
}

/// Queues the payment job of each new order, in one statement.
async fn queue_charges(
    conn: &mut PgConnection,
    row: &SaleRow,
    orders: &[OrderId],
) -> sqlx::Result<()> {
    let charges: Vec<PaymentJob> = orders
        .iter()
        .map(|order| PaymentJob::Charge {
            order_id: *order,
            amount_cents: row.price_cents,
            currency: row.currency.clone(),
        })
        .collect();
    outbox::enqueue_many(conn, PaymentJob::SUBJECT, &charges).await
}
