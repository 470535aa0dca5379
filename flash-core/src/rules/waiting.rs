//! PostgreSQL's copy of the tickets that wait without a unit (`waiting_tickets`): on a sale's
//! waitlist, or in its pre-queue until the draw. They hold no unit and no queued message, so
//! without this copy a Redis that lost its keys would lose their buyers. The door records one
//! before it answers 202; the workers restore them into Redis after a loss
//! ([`crate::redis_model::waiting`]); a row goes when its ticket stops waiting.

use sqlx::PgExecutor;
use uuid::Uuid;

use crate::domain::TicketStatus;

/// How a ticket waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// On the waitlist, for a unit that comes back.
    Waitlisted,
    /// In the pre-queue, for the draw at the start.
    Prequeued,
}

impl Kind {
    /// The kind of a ticket with `status`, if it waits.
    pub fn of(status: TicketStatus) -> Option<Self> {
        match status {
            TicketStatus::Waitlisted => Some(Self::Waitlisted),
            TicketStatus::Prequeued => Some(Self::Prequeued),
            _ => None,
        }
    }

    /// The ticket's status while it waits so.
    pub fn status(self) -> TicketStatus {
        match self {
            Self::Waitlisted => TicketStatus::Waitlisted,
            Self::Prequeued => TicketStatus::Prequeued,
        }
    }

    /// As stored, and as the ticket's status in Redis.
    pub fn as_str(self) -> &'static str {
        self.status().as_str()
    }

    fn parse(kind: &str) -> Option<Self> {
        TicketStatus::parse(kind).and_then(Self::of)
    }
}

/// A waiting ticket as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Waiting {
    /// The ticket.
    pub ticket: Uuid,
    /// Its buyer.
    pub member: Uuid,
    /// How it waits.
    pub kind: Kind,
}

/// Records that `ticket` of `sale` waits; a ticket recorded already keeps its place.
///
/// # Errors
/// When PostgreSQL fails.
pub async fn record(db: impl PgExecutor<'_>, sale: Uuid, waiting: Waiting) -> sqlx::Result<()> {
    sqlx::query(
        "insert into waiting_tickets (ticket_id, flash_sale_id, member_id, kind)
         values ($1, $2, $3, $4) on conflict (ticket_id) do nothing",
    )
    .bind(waiting.ticket)
    .bind(sale)
    .bind(waiting.member)
    .bind(waiting.kind.as_str())
    .execute(db)
    .await
    .map(drop)
}

/// The sale and the waiting ticket `ticket` is, if it is one of the caller's (`member`).
///
/// # Errors
/// When PostgreSQL fails.
pub async fn find(
    db: impl PgExecutor<'_>,
    ticket: Uuid,
    member: Uuid,
) -> sqlx::Result<Option<(Uuid, Kind)>> {
    let found: Option<(Uuid, String)> = sqlx::query_as(
        "select flash_sale_id, kind from waiting_tickets where ticket_id = $1 and member_id = $2",
    )
    .bind(ticket)
    .bind(member)
    .fetch_optional(db)
    .await?;
    Ok(found.and_then(|(sale, kind)| Some((sale, Kind::parse(&kind)?))))
}

/// Every waiting ticket of `sale`, in the order they entered.
///
/// # Errors
/// When PostgreSQL fails.
pub async fn of_sale(db: impl PgExecutor<'_>, sale: Uuid) -> sqlx::Result<Vec<Waiting>> {
    let rows: Vec<(Uuid, Uuid, String)> = sqlx::query_as(
        "select ticket_id, member_id, kind from waiting_tickets
         where flash_sale_id = $1 order by entered_at, ticket_id",
    )
    .bind(sale)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(ticket, member, kind)| {
            Some(Waiting {
                ticket,
                member,
                kind: Kind::parse(&kind)?,
            })
        })
        .collect())
}

/// `tickets` stopped waiting (promoted, or placed by the draw).
///
/// # Errors
/// When PostgreSQL fails.
pub async fn left(db: impl PgExecutor<'_>, tickets: &[Uuid]) -> sqlx::Result<()> {
    if tickets.is_empty() {
        return Ok(());
    }
    sqlx::query("delete from waiting_tickets where ticket_id = any($1)")
        .bind(tickets)
        .execute(db)
        .await
        .map(drop)
}

/// `tickets` the draw put on the waitlist now wait there.
///
/// # Errors
/// When PostgreSQL fails.
pub async fn moved_to_waitlist(db: impl PgExecutor<'_>, tickets: &[Uuid]) -> sqlx::Result<()> {
    if tickets.is_empty() {
        return Ok(());
    }
    sqlx::query("update waiting_tickets set kind = 'waitlisted' where ticket_id = any($1)")
        .bind(tickets)
        .execute(db)
        .await
        .map(drop)
}

/// The sale is over: nobody waits on it any more.
///
/// # Errors
/// When PostgreSQL fails.
pub async fn close(db: impl PgExecutor<'_>, sale: Uuid) -> sqlx::Result<()> {
    sqlx::query("delete from waiting_tickets where flash_sale_id = $1")
        .bind(sale)
        .execute(db)
        .await
        .map(drop)
}
