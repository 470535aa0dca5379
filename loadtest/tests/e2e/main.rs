//! End to end: catalog-api, admission and workers run in-process against the real PostgreSQL,
//! Redis and NATS (a database, key prefix and streams of each test's own).

// A failed unwrap is how a test reports an unexpected answer.
#![allow(clippy::unwrap_used)]

mod prequeue;
mod sale;
mod spike;
mod stack;
mod waitlist;
