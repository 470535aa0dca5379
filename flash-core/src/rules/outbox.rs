//! Writing jobs to the transactional outbox: a job exists if and only if the state change that
//! causes it committed, and the workers' relay publishes it (`Nats-Msg-Id` = outbox id).

use serde::Serialize;
use sqlx::{PgConnection, types::Json};
use uuid::Uuid;

use crate::{
    domain::OrderId,
    jobs::{EmailJob, EmailMessage},
};

/// Writes `job` for `subject` (before the deployment prefix) inside the caller's transaction.
///
/// # Errors
/// When PostgreSQL fails (or, in theory, `job` does not serialise).
pub async fn enqueue(
    conn: &mut PgConnection,
    subject: &str,
    job: &(impl Serialize + Sync),
) -> sqlx::Result<()> {
    sqlx::query("insert into outbox (outbox_id, subject, payload) values ($1, $2, $3)")
        .bind(Uuid::now_v7())
        .bind(subject)
        .bind(Json(job))
        .execute(conn)
        .await?;
    Ok(())
}

/// Writes each of `jobs` for `subject` inside the caller's transaction, in one statement: a
/// batch that causes many jobs (the drain's charges, a batch of payments' emails) pays one
/// round trip for them, not one per job.
///
/// # Errors
/// When PostgreSQL fails (or, in theory, a job does not serialise).
pub async fn enqueue_many<J: Serialize + Sync>(
    conn: &mut PgConnection,
    subject: &str,
    jobs: &[J],
) -> sqlx::Result<()> {
    if jobs.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = jobs.iter().map(|_| Uuid::now_v7()).collect();
    let payloads: Vec<Json<&J>> = jobs.iter().map(Json).collect();
    sqlx::query(
        "insert into outbox (outbox_id, subject, payload)
         select id, $2, payload from unnest($1::uuid[], $3::jsonb[]) as t(id, payload)",
    )
    .bind(&ids)
    .bind(subject)
    .bind(&payloads)
    .execute(conn)
    .await?;
    Ok(())
}

/// What an email about an order may quote.
#[derive(Debug, Clone)]
pub struct OrderFacts {
    /// The order.
    pub order_id: OrderId,
    /// What it costs, in minor units.
    pub total_cents: i64,
    /// ISO 4217 code.
    pub currency: String,
}

/// Queues an email about `order` to its buyer, inside the caller's transaction.
///
/// # Errors
/// When PostgreSQL fails or the order does not exist.
pub async fn email_buyer(
    conn: &mut PgConnection,
    order: OrderId,
    message: impl Fn(OrderFacts) -> EmailMessage,
) -> sqlx::Result<()> {
    if email_buyers(conn, &[order], message).await? == 0 {
        return Err(sqlx::Error::RowNotFound);
    }
    Ok(())
}

/// Queues an email about each of `orders` to its buyer, inside the caller's transaction: one
/// read and one insert for the whole batch, so a batch of payments costs two statements, not
/// two per order. Returns how many were queued (orders that do not exist get none).
///
/// # Errors
/// When PostgreSQL fails.
pub async fn email_buyers(
    conn: &mut PgConnection,
    orders: &[OrderId],
    message: impl Fn(OrderFacts) -> EmailMessage,
) -> sqlx::Result<usize> {
    if orders.is_empty() {
        return Ok(0);
    }
    let rows: Vec<(OrderId, Uuid, String, i64, String)> = sqlx::query_as(
        "select o.order_id, m.member_id, m.email, o.total_cents, o.currency
         from orders o join members m using (member_id) where o.order_id = any($1)
         order by o.order_id",
    )
    .bind(orders)
    .fetch_all(&mut *conn)
    .await?;
    let jobs: Vec<EmailJob> = rows
        .into_iter()
        .map(|(order_id, member, to, total_cents, currency)| EmailJob {
            email_id: Uuid::now_v7(),
            member_id: Some(member.into()),
            to,
            message: message(OrderFacts {
                order_id,
                total_cents,
                currency,
            }),
        })
        .collect();
    enqueue_many(conn, EmailJob::SUBJECT, &jobs).await?;
    Ok(jobs.len())
}
