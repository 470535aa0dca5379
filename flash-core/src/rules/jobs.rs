//! Messages of the background jobs on the JetStream jobs stream: the contract between the
//! services that publish jobs and the workers that run them.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::{MemberId, OrderId, OrderStatus, SaleId, TicketId};

/// An email to send (subject `jobs.email`). `email_id` is also the `Nats-Msg-Id`, and the
/// worker records it, so the same email is never sent twice.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EmailJob {
    /// Identifies this email across retries.
    pub email_id: Uuid,
    /// The member it concerns, if any.
    pub member_id: Option<MemberId>,
    /// Recipient address.
    pub to: String,
    /// What to say.
    #[serde(flatten)]
    pub message: EmailMessage,
}

/// The kinds of email, each with what its template needs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EmailMessage {
    /// Asks a member to confirm their address with a one-time token
    /// (`POST /members/verify-email`).
    VerifyEmail {
        /// The member's name, for the greeting.
        name: String,
        /// The one-time token (the database keeps only its hash).
        token: String,
    },
    /// The payment of an order went through.
    OrderConfirmation {
        /// The paid order.
        order_id: OrderId,
        /// What was charged, in minor units.
        total_cents: i64,
        /// ISO 4217 code.
        currency: String,
    },
    /// The payment of an order failed for good; the order is cancelled.
    PaymentFailed {
        /// The cancelled order.
        order_id: OrderId,
    },
    /// An order moved on after payment: preparing, shipped, delivered, cancelled, return
    /// requested or returned. One email per step, so the buyer always knows where it is.
    OrderProgress {
        /// The order.
        order_id: OrderId,
        /// Its new state.
        status: OrderStatus,
        /// The carrier's reference, once shipped.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tracking_ref: Option<String>,
    },
}

impl EmailJob {
    /// The subject (before the deployment prefix) the relay publishes email jobs on.
    pub const SUBJECT: &'static str = "jobs.email";
}

/// A queued flash-sale ticket (subject `flash.tickets.<sale>`, `Nats-Msg-Id` = ticket id):
/// the promise the front door made, which a worker turns into an order or a `sold_out`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TicketMessage {
    /// The ticket (and the order's `ticket_id`).
    pub ticket_id: TicketId,
    /// The sale.
    pub sale_id: SaleId,
    /// The buyer.
    pub member_id: MemberId,
    /// Place in the sale's queue (1-based), for positions and fairness checks.
    pub seq: i64,
    /// When the door admitted it (Unix milliseconds), for publish-to-order latency.
    pub admitted_at_ms: i64,
}

/// A payment to make or undo (subject `jobs.payment`), written to the outbox in the same
/// transaction as the order change that causes it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PaymentJob {
    /// Charge a new order. The provider gets `order_id` as the idempotency key, so a
    /// redelivered job never charges twice.
    Charge {
        /// The order to pay for.
        order_id: OrderId,
        /// Amount in minor units.
        amount_cents: i64,
        /// ISO 4217 code.
        currency: String,
    },
    /// Refund a paid order that was cancelled.
    Refund {
        /// The cancelled order.
        order_id: OrderId,
    },
}

impl PaymentJob {
    /// The subject (before the deployment prefix) the relay publishes this job on.
    pub const SUBJECT: &'static str = "jobs.payment";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_jobs_serialise_with_a_kind_tag() {
        let job = EmailJob {
            email_id: Uuid::nil(),
            member_id: None,
            to: "a@b.co".into(),
            message: EmailMessage::VerifyEmail {
                name: "Ann".into(),
                token: "t".into(),
            },
        };
        let json = serde_json::to_value(&job).unwrap();
        assert_eq!(json["kind"], "verify_email");
        assert_eq!(json["token"], "t");
        assert_eq!(serde_json::from_value::<EmailJob>(json).unwrap(), job);
    }
}
