//! Where a waiting-room ticket is in its life. Redis holds a ticket's status as one of these
//! names (the Lua scripts of [`crate::redis_model`] write them), the door shows it to the buyer,
//! and the workers and the invariant checker read it back.

use serde::{Deserialize, Serialize};

/// A waiting-room ticket's state.
///
/// ```text
///             entry (the door's gate script)
///     ┌──────────────┬──────────┴─────┬─────────────┐
///     ▼              ▼                ▼             ▼
/// prequeued ──▶ waitlisted ──▶ sold_out (at the end, or no room)
///     │              │
///     └──▶ promoting ◀┘   (a unit: by the pre-queue draw or the waitlist promoter)
///              │
///              ▼
///           queued ──▶ withdrawn (publish failed) | expired (abandoned)
///              │
///              ▼      (the drain, once per ticket)
///   ordered | sold_out | rejected | failed
///      │
///      ▼
///    paid ──▶ cancelled
///      ordered ──▶ cancelled
/// ```
///
/// The entry makes a ticket `prequeued` (before the start, or behind the pre-queue), `queued`
/// (a unit taken), `waitlisted` or `sold_out`. A drawn or promoted ticket is `promoting` until
/// its message is in the queue; a worker may decide it before it is confirmed `queued`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TicketStatus {
    /// In the pre-queue (or arrived after the start, before its release): placed at the draw.
    Prequeued,
    /// Holds a unit and a queue number; its message is in the queue.
    Queued,
    /// Handed a unit by the draw or the promoter; its message is being queued.
    Promoting,
    /// Waiting for a unit that comes back.
    Waitlisted,
    /// Its publish failed and its unit went back: the buyer was told no.
    Withdrawn,
    /// Its buyer stopped polling for longer than the sale allows; its unit went back.
    Expired,
    /// No unit for it.
    SoldOut,
    /// Refused by the drain (per-member limit, unknown member or sale).
    Rejected,
    /// Its order exists and waits for payment.
    Ordered,
    /// Dead-lettered after its last delivery.
    Failed,
    /// Its order was charged.
    Paid,
    /// Its order was cancelled (a declined charge, or the buyer).
    Cancelled,
}

impl TicketStatus {
    /// Every state.
    pub const ALL: [Self; 12] = [
        Self::Prequeued,
        Self::Queued,
        Self::Promoting,
        Self::Waitlisted,
        Self::Withdrawn,
        Self::Expired,
        Self::SoldOut,
        Self::Rejected,
        Self::Ordered,
        Self::Failed,
        Self::Paid,
        Self::Cancelled,
    ];

    /// What a buyer polling a `queued` ticket of a sale an admin holds sees instead.
    pub const PAUSED: &'static str = "paused";

    /// The name Redis, the API and the scripts use.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Prequeued => "prequeued",
            Self::Queued => "queued",
            Self::Promoting => "promoting",
            Self::Waitlisted => "waitlisted",
            Self::Withdrawn => "withdrawn",
            Self::Expired => "expired",
            Self::SoldOut => "sold_out",
            Self::Rejected => "rejected",
            Self::Ordered => "ordered",
            Self::Failed => "failed",
            Self::Paid => "paid",
            Self::Cancelled => "cancelled",
        }
    }

    /// The state named `name`, if it is one.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// Whether a ticket in this state may move to `next` (the diagram above). The scripts that
    /// move tickets check the state they start from; this is the same rule for Rust's side and
    /// its tests.
    pub const fn can_become(self, next: Self) -> bool {
        use TicketStatus as S;
        matches!(
            (self, next),
            (S::Prequeued, S::Promoting | S::Waitlisted | S::SoldOut)
                | (S::Waitlisted, S::Promoting | S::SoldOut)
                | (
                    S::Promoting,
                    S::Queued | S::Ordered | S::SoldOut | S::Rejected | S::Failed
                )
                | (
                    S::Queued,
                    S::Withdrawn | S::Expired | S::Ordered | S::SoldOut | S::Rejected | S::Failed
                )
                | (S::Ordered, S::Paid | S::Cancelled)
                | (S::Paid, S::Cancelled)
        )
    }

    /// Whether the buyer has their answer: nothing moves the ticket any more, except a paid
    /// order's cancellation.
    pub const fn is_final(self) -> bool {
        !matches!(
            self,
            Self::Prequeued | Self::Queued | Self::Promoting | Self::Waitlisted | Self::Ordered
        )
    }

    /// Whether the ticket got an order (whatever became of it since).
    pub const fn got_order(self) -> bool {
        matches!(self, Self::Ordered | Self::Paid | Self::Cancelled)
    }

    /// The name a buyer is shown: a `queued` ticket of a held sale shows [`Self::PAUSED`].
    pub const fn shown(self, sale_paused: bool) -> &'static str {
        if sale_paused && matches!(self, Self::Queued) {
            Self::PAUSED
        } else {
            self.as_str()
        }
    }
}

impl std::fmt::Display for TicketStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_match_serde() {
        for status in TicketStatus::ALL {
            assert_eq!(TicketStatus::parse(status.as_str()), Some(status));
            assert_eq!(
                serde_json::to_value(status).unwrap(),
                serde_json::Value::from(status.as_str())
            );
        }
        assert_eq!(TicketStatus::parse(TicketStatus::PAUSED), None);
        assert_eq!(TicketStatus::parse("lost"), None);
    }

    #[test]
    fn a_final_ticket_moves_only_from_paid_to_cancelled() {
        for from in TicketStatus::ALL.into_iter().filter(|s| s.is_final()) {
            for to in TicketStatus::ALL {
                assert_eq!(
                    from.can_become(to),
                    from == TicketStatus::Paid && to == TicketStatus::Cancelled,
                    "{from} -> {to}"
                );
            }
        }
    }

    #[test]
    fn every_state_but_the_entries_is_reached_from_another() {
        let entered = [
            TicketStatus::Prequeued,
            TicketStatus::Queued,
            TicketStatus::Waitlisted,
            TicketStatus::SoldOut,
        ];
        for to in TicketStatus::ALL {
            let reached = TicketStatus::ALL
                .into_iter()
                .any(|from| from.can_become(to));
            assert!(reached || entered.contains(&to), "{to} is unreachable");
        }
        assert!(!TicketStatus::Queued.can_become(TicketStatus::Queued));
    }

    #[test]
    fn only_a_queued_ticket_shows_a_pause() {
        assert_eq!(TicketStatus::Queued.shown(true), "paused");
        assert_eq!(TicketStatus::Queued.shown(false), "queued");
        assert_eq!(TicketStatus::Ordered.shown(true), "ordered");
    }
}
