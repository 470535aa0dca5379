//! The shared domain rules: what every service that touches a sale or an order must do the
//! same way, written once. The job contracts between services, the transactional outbox, the
//! pre-queue draw, giving an order's units back, and the sale's audit events. Unlike
//! [`crate::domain`]'s value types these take a connection; the crate root re-exports each
//! module (`flash_core::outbox`, `flash_core::restock`, ...).

pub mod jobs;
pub mod outbox;
pub mod prequeue;
pub mod restock;
pub mod sale_events;
pub mod waiting;
