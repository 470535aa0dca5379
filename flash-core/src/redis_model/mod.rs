//! The waiting room's Redis data model: what is stored under which key, for how long, and every
//! script that changes it, each behind one typed operation.
//!
//! Redis holds the fast, disposable side of a flash sale: the gate (units the door may still
//! admit) and the sale's metadata, one hash per ticket with its [`TicketStatus`], the buyer's
//! ticket index, the waitlist, the pre-queue and its backlog, the promoting set, the counters
//! the waiting room shows, and the outflow bucket. PostgreSQL and JetStream stay the truth:
//! whatever Redis loses, the reconciler re-arms from PostgreSQL and a poll is answered from the
//! order.
//!
//! - [`keys`]: the key layout (every key under the sale's hash tag `{sale:<id>}`).
//! - [`script`]: the Lua scripts, one file each in `lua/`, every key they touch passed in KEYS.
//! - [`sale_gate`]: arming a sale, its metadata, units in and out of the gate.
//! - [`entry`]: the door's entry, its undo, and reading a ticket.
//! - [`tickets`]: the drain's decisions and the settlements of orders.
//! - [`waitlist`]: promoting waitlisted buyers, closing the waitlist.
//! - [`prequeue`]: the pre-queue release's placement and lock.
//! - [`waiting`]: waitlisted and pre-queued tickets put back after Redis lost them.
//! - [`outflow`]: the outflow limit's token bucket.
//! - [`product_cache`]: the versioned product cache.
//!
//! [`TicketStatus`]: crate::domain::TicketStatus

use std::time::Duration;

pub mod entry;
pub mod keys;
pub mod outflow;
pub mod prequeue;
pub mod product_cache;
pub mod sale_gate;
pub mod script;
pub mod tickets;
pub mod waiting;
pub mod waitlist;

pub use keys::Keys;

/// How long a sale's keys (gate, metadata, tickets, the buyer's index, waitlist, pre-queue,
/// promoting set) outlive the sale's end: long enough for every buyer to read their outcome
/// and for late settlements to reach their tickets.
pub const KEEP_AFTER_END: Duration = Duration::from_secs(24 * 3600);

/// How long a sale's hash-tag registration lives after its last entry.
pub const TAG_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// How long the drain rate and its window live without a batch.
pub const DRAIN_RATE_TTL: Duration = Duration::from_secs(60);

/// How long an idle outflow bucket lives.
pub const OUTFLOW_BUCKET_TTL: Duration = Duration::from_secs(60);

/// The tag every ticket id of `sale` starts with (its first four bytes): FNV-1a over the sale
/// id's bytes, the same in every process and release (a std `Hasher` is neither). Polls find a
/// ticket's sale through the tag's set of sales ([`Keys::sale_tag`]).
pub fn sale_tag(sale: uuid::Uuid) -> u32 {
    sale.as_bytes().iter().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(*byte)).wrapping_mul(0x0100_0193)
    })
}

/// Lists `sale` under its tag ([`sale_tag`]) for [`TAG_TTL`], so that a poll can find the
/// sale of any of its tickets. The door does it before its first ticket of the sale; whoever
/// puts tickets back after Redis lost them (the reconciler) does it again, since the list went
/// with them.
///
/// # Errors
/// When Redis fails.
pub async fn register_tag(
    redis: &crate::redis::Redis,
    keys: &Keys,
    sale: uuid::Uuid,
) -> redis::RedisResult<()> {
    let key = keys.sale_tag(sale_tag(sale));
    redis::pipe()
        .cmd("SADD")
        .arg(&key)
        .arg(sale.to_string())
        .ignore()
        .cmd("EXPIRE")
        .arg(&key)
        .arg(TAG_TTL.as_secs())
        .ignore()
        .query_async(&mut redis.clone())
        .await
}

/// When a sale's keys expire, in ms since the epoch, for one that ends at `ends_at`.
pub fn expire_at_ms(ends_at: chrono::DateTime<chrono::Utc>) -> i64 {
    ends_at.timestamp_millis() + millis(KEEP_AFTER_END)
}

fn millis(span: Duration) -> i64 {
    i64::try_from(span.as_millis()).unwrap_or(i64::MAX)
}
