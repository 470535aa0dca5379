//! End to end: catalog-api, admission and workers run in-process against the real PostgreSQL,
//! Redis and NATS (a database, key prefix and streams of each test's own), and as processes
//! for the fault matrix (on Redis and NATS servers of its own).

// A failed unwrap is how a test reports an unexpected answer.
#![allow(clippy::unwrap_used)]

mod chaos;
mod prequeue;
mod sale;
mod spike;
mod stack;
mod waitlist;
