//! Value types shared by the services. No I/O here: each type validates when it is parsed, and
//! code past the parsing trusts it.

mod email;
mod ids;
mod order_status;
mod role;
mod ticket_status;

pub use email::Email;
pub use ids::{MemberId, OrderId, ProductId, SaleId, TicketId};
pub use order_status::OrderStatus;
pub use role::Role;
pub use ticket_status::TicketStatus;
