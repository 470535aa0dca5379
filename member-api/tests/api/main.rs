//! member-api black-box tests against the real PostgreSQL, Redis and NATS.

// A failed unwrap is how a test reports an unexpected answer.
#![allow(clippy::unwrap_used)]

mod helpers;

mod auth_tokens;
mod bad_input;
mod login;
mod logout;
mod ops;
mod profile;
mod refresh;
mod signup;
mod verification;
