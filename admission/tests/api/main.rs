//! admission black-box tests against the real PostgreSQL, Redis and NATS.

// A failed unwrap is how a test reports an unexpected answer.
#![allow(clippy::unwrap_used)]

mod helpers;
mod stack;
mod webdriver;

mod browser;
mod client_addresses;
mod entry;
mod friction;
mod gateway;
mod lookups;
mod ops;
mod polling;
mod sessions;
