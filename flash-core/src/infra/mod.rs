//! Infrastructure: how a service talks to the world, the same way in every service. The
//! clients of PostgreSQL, Redis and NATS, configuration, JWT verification and the auth
//! extractors, the problem+json error type, the HTTP middleware stack, pages, pagination,
//! telemetry and shutdown. Nothing here knows what a sale or a ticket is; the crate root
//! re-exports each module (`flash_core::db`, `flash_core::http`, ...).

pub mod auth;
pub mod client_address;
pub mod config;
pub mod db;
pub mod extract;
pub mod http;
pub mod nats;
pub mod page;
pub mod pagination;
pub mod problem;
pub mod redis;
pub mod shutdown;
pub mod telemetry;
