//! catalog-api black-box tests against the real PostgreSQL and Redis.

// A failed unwrap is how a test reports an unexpected answer.
#![allow(clippy::unwrap_used)]

mod helpers;

mod cart;
mod flash_sales;
mod lifecycle;
mod orders;
mod products;
mod sale_control;
