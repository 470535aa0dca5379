//! What a member may do.

use serde::{Deserialize, Serialize};

/// A member's role, carried in their access token.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum Role {
    /// Shops and enters flash sales.
    Buyer,
    /// Also manages products and flash sales.
    Admin,
}
