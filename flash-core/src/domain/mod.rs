//! Value types shared by the services. No I/O here: each type validates when it is parsed, and
//! code past the parsing trusts it.

mod email;
mod ids;
mod order_status;
mod role;

pub use email::Email;
pub use ids::MemberId;
pub use order_status::OrderStatus;
pub use role::Role;
