//! The core every flash-sale service is built on.
//!
//! Each service (`admission`, `workers`, `catalog-api`, `member-api`) links this crate for the
//! things that must behave the same everywhere. Its tree has four parts:
//!
//! - `infra/`: the plumbing (configuration, the PostgreSQL, Redis and NATS clients, JWT
//!   verification and the auth extractors, problem+json, the HTTP middleware stack with
//!   `/healthz` `/readyz` `/metrics`, telemetry, graceful shutdown);
//! - [`domain`]: I/O-free value types (typed ids, the order and ticket state machines, roles,
//!   email addresses);
//! - `rules/`: the domain rules shared by several services (job contracts, the outbox, the
//!   pre-queue draw, restocking, sale events, the durable copy of waiting tickets);
//! - [`redis_model`]: the Redis data model (keys, TTLs, every Lua script behind a typed
//!   operation).
//!
//! `infra` and `rules` are re-exported module by module, so a service writes
//! `flash_core::db` or `flash_core::outbox`. Business logic of one service stays in it.

mod infra;
mod rules;

pub mod domain;
pub mod redis_model;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;

pub use infra::{
    auth, client_address, config, db, extract, http, nats, page, pagination, problem, redis,
    shutdown, telemetry,
};
pub use problem::{ApiError, ProblemType};
pub use rules::{jobs, outbox, prequeue, restock, sale_events, waiting};
