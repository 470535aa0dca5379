//! catalog-api black-box tests against the real PostgreSQL and Redis.

// A failed unwrap is how a test reports an unexpected answer.
#![allow(clippy::unwrap_used)]

mod helpers;

mod flash_sales;
mod orders;
mod products;
mod sale_control;
