//! Load generators, the spike simulator and the invariant checker for a running flash-sale
//! stack, as a library so the integration tests drive the very code the `loadtest` binary runs.
//!
//! Every run targets only the URLs it is given (loopback by default), is bounded in request
//! count and time, and stops by itself.

pub mod auth_bench;
pub mod chaos;
pub mod check;
mod connections;
pub mod door_bench;
pub mod drain_bench;
pub mod fairness;
pub mod measure;
pub mod seed;
pub mod shop;
pub mod spike;
pub mod summary;
pub mod timeline;
