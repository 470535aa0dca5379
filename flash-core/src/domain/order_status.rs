//! Where an order is in its life. The database keeps the same names (a CHECK constraint), and
//! each state is entered at most once, so the order history can key on it.

use serde::{Deserialize, Serialize};

/// An order's state.
///
/// ```text
/// pending_payment → paid → preparing → shipped → delivered → return_requested → returned
/// pending_payment | paid | preparing → cancelled
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Created; the charge has not gone through yet.
    PendingPayment,
    /// Charged; waiting to be prepared.
    Paid,
    /// Being picked and packed.
    Preparing,
    /// With the carrier; `tracking_ref` says where.
    Shipped,
    /// At the buyer; the return window runs from here.
    Delivered,
    /// The buyer asked to send it back; waiting for the parcel.
    ReturnRequested,
    /// Back in stock and refunded.
    Returned,
    /// Cancelled before shipping (by the buyer or a failed charge); units back, refunded if paid.
    Cancelled,
}

impl OrderStatus {
    /// Every state, in lifecycle order.
    pub const ALL: [Self; 8] = [
        Self::PendingPayment,
        Self::Paid,
        Self::Preparing,
        Self::Shipped,
        Self::Delivered,
        Self::ReturnRequested,
        Self::Returned,
        Self::Cancelled,
    ];

    /// The name the database and the API use.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::PendingPayment => "pending_payment",
            Self::Paid => "paid",
            Self::Preparing => "preparing",
            Self::Shipped => "shipped",
            Self::Delivered => "delivered",
            Self::ReturnRequested => "return_requested",
            Self::Returned => "returned",
            Self::Cancelled => "cancelled",
        }
    }

    /// The state named `name`, if it is one.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// Whether a buyer may still cancel: until the parcel leaves.
    pub const fn cancellable(self) -> bool {
        matches!(self, Self::PendingPayment | Self::Paid | Self::Preparing)
    }

    /// Whether the order was charged and not yet refunded, so undoing it owes a refund.
    pub const fn charged(self) -> bool {
        matches!(
            self,
            Self::Paid | Self::Preparing | Self::Shipped | Self::Delivered | Self::ReturnRequested
        )
    }
}

impl std::fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_match_serde() {
        for status in OrderStatus::ALL {
            assert_eq!(OrderStatus::parse(status.as_str()), Some(status));
            assert_eq!(
                serde_json::to_value(status).unwrap(),
                serde_json::Value::from(status.as_str())
            );
        }
        assert_eq!(OrderStatus::parse("lost"), None);
    }

    #[test]
    fn only_unshipped_orders_can_be_cancelled() {
        let cancellable: Vec<_> = OrderStatus::ALL
            .into_iter()
            .filter(|s| s.cancellable())
            .collect();
        assert_eq!(
            cancellable,
            [
                OrderStatus::PendingPayment,
                OrderStatus::Paid,
                OrderStatus::Preparing
            ]
        );
    }
}
