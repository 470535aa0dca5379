//! Typed ids, so one kind of id cannot be passed where another is expected. Each is a UUID on
//! the wire and in the database (serde and sqlx see through it).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Declares an id type around a UUID.
macro_rules! ids {
    ($($(#[$doc:meta])* $name:ident;)+) => {$(
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
            sqlx::Type, utoipa::ToSchema,
        )]
        #[serde(transparent)]
        #[sqlx(transparent)]
        #[schema(value_type = Uuid)]
        pub struct $name(Uuid);

        impl $name {
            /// A new, random (time-ordered) id.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            /// The underlying UUID.
            pub const fn get(self) -> Uuid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Self {
                id.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = uuid::Error;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                text.parse().map(Self)
            }
        }
    )+};
}

ids! {
    /// Identifies a member (the `sub` of their access tokens).
    MemberId;
    /// Identifies a flash sale.
    SaleId;
    /// Identifies a waiting-room ticket; its first bytes carry its sale's tag.
    TicketId;
    /// Identifies a product.
    ProductId;
    /// Identifies an order.
    OrderId;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_its_uuid_on_the_wire_and_in_text() {
        let uuid = Uuid::now_v7();
        let sale = SaleId::from(uuid);
        assert_eq!(serde_json::to_value(sale).unwrap(), serde_json::json!(uuid));
        assert_eq!(sale.to_string().parse::<SaleId>().unwrap(), sale);
        assert_eq!(Uuid::from(sale), uuid);
        assert!("not an id".parse::<OrderId>().is_err());
    }
}
