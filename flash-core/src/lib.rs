//! The core every flash-sale service is built on.
//!
//! Each service (`admission`, `workers`, `catalog-api`, `member-api`) links this crate for the
//! things that must behave the same everywhere: configuration groups, the PostgreSQL, Redis and
//! NATS clients, JWT verification and the auth extractors, the problem+json error type, the HTTP
//! middleware stack with `/healthz` `/readyz` `/metrics`, telemetry and graceful shutdown.
//! Business logic stays in the services; `domain` holds only I/O-free value types.

pub mod auth;
pub mod config;
pub mod db;
pub mod domain;
pub mod extract;
pub mod http;
pub mod jobs;
pub mod nats;
pub mod outbox;
pub mod page;
pub mod pagination;
pub mod prequeue;
pub mod problem;
pub mod redis;
pub mod redis_model;
pub mod restock;
pub mod sale_events;
pub mod shutdown;
pub mod telemetry;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;

pub use problem::{ApiError, ProblemType};
