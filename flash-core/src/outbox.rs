//! Writing jobs to the transactional outbox: a job exists if and only if the state change that
//! causes it committed, and the workers' relay publishes it (`Nats-Msg-Id` = outbox id).

use serde::Serialize;
use sqlx::{PgConnection, types::Json};
use uuid::Uuid;

use crate::jobs::{EmailJob, EmailMessage};

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

/// What an email about an order may quote.
#[derive(Debug, Clone)]
pub struct OrderFacts {
    /// The order.
    pub order_id: Uuid,
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
    order: Uuid,
    message: impl FnOnce(OrderFacts) -> EmailMessage,
) -> sqlx::Result<()> {
    let (member, to, total_cents, currency): (Uuid, String, i64, String) = sqlx::query_as(
        "select m.member_id, m.email, o.total_cents, o.currency
         from orders o join members m using (member_id) where o.order_id = $1",
    )
    .bind(order)
    .fetch_one(&mut *conn)
    .await?;
    let job = EmailJob {
        email_id: Uuid::now_v7(),
        member_id: Some(member.into()),
        to,
        message: message(OrderFacts {
            order_id: order,
            total_cents,
            currency,
        }),
    };
    enqueue(conn, EmailJob::SUBJECT, &job).await
}
