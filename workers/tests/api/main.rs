//! workers tests against the real PostgreSQL, Redis and NATS; tickets are published the way
//! the front door publishes them, and the drain is stepped by hand until the queue is empty.

// A failed unwrap is how a test reports an unexpected answer.
#![allow(clippy::unwrap_used)]

mod control;
mod crash;
mod drain;
mod email;
mod fulfilment;
mod helpers;
mod outbox;
mod payment;
mod reconciler;
mod roles;
