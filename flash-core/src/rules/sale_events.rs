//! Sale events: every state change of a flash sale, published on NATS
//! (`events.sales.<sale>`, kept a week in the events stream) for other systems — analytics,
//! marketing, a status page.
//!
//! An event is written to the outbox in the same transaction as the change it reports and
//! published by the workers' relay with the outbox id as `Nats-Msg-Id`: a change that commits
//! is announced exactly once, and one that rolls back never is.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

/// The subject of `sale`'s events, before the deployment prefix.
pub fn subject(sale: Uuid) -> String {
    format!("events.sales.{sale}")
}

/// What happened to a sale.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum SaleEvent {
    /// Created and its gate armed.
    Armed {
        /// Units on sale.
        quantity: i32,
        /// When entries open.
        starts_at: DateTime<Utc>,
    },
    /// Its start time passed (announced by the reconciler within a pass).
    Started,
    /// The pre-queue was drawn and released into the queue, ahead of later arrivals.
    PrequeueDrawn {
        /// The draw's seed: with the tickets, enough to replay the order.
        seed: i64,
        /// Tickets in the pre-queue.
        entrants: usize,
    },
    /// An admin holds it: nothing drains.
    Paused,
    /// Draining again after a pause.
    Resumed,
    /// The outflow limit changed (0 = none).
    OutflowChanged {
        /// Tickets per second before.
        from: i32,
        /// Tickets per second now.
        to: i32,
    },
    /// Stock was added (positive) or withdrawn (negative) while the sale ran.
    StockChanged {
        /// Units added or withdrawn.
        delta: i32,
        /// Units on sale now.
        quantity: i32,
    },
    /// The last unit was ordered.
    SoldOut,
    /// Its end time passed, or an admin ended it early.
    Ended {
        /// Whether an admin ended it before its planned end.
        early: bool,
    },
    /// An admin cancelled it.
    Cancelled,
}

/// An event as published: the change plus which sale and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaleEventMessage {
    /// The sale it concerns.
    pub sale_id: Uuid,
    /// When the change was recorded.
    pub at: DateTime<Utc>,
    /// The change.
    #[serde(flatten)]
    pub event: SaleEvent,
}

/// Writes `event` of `sale` to the outbox, inside the caller's transaction.
///
/// # Errors
/// When PostgreSQL fails.
pub async fn record(conn: &mut PgConnection, sale: Uuid, event: SaleEvent) -> anyhow::Result<()> {
    let message = SaleEventMessage {
        sale_id: sale,
        at: Utc::now(),
        event,
    };
    crate::outbox::enqueue(conn, &subject(sale), &message).await?;
    Ok(())
}
