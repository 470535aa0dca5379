//! The Redis side of a flash sale: its *gate* (units the front door may still admit) and the
//! metadata the door checks, so an entry costs no PostgreSQL round trip.
//!
//! PostgreSQL's `flash_sales.quantity_left` stays the truth: catalog-api arms the gate from it
//! when a sale is created or changed, and the workers' reconciler re-arms it after Redis loses
//! it. Both keys of a sale share the hash tag `{sale:<id>}`, so one Lua script can touch both
//! on Redis Cluster.

use crate::redis::Redis;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Keys, expire_at_ms, script};

/// What the front door needs to know about a sale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaleMeta {
    /// Entries before this are answered 425.
    pub starts_at: DateTime<Utc>,
    /// Entries from this on are answered 410.
    pub ends_at: DateTime<Utc>,
    /// Live orders one member may hold.
    pub per_member_limit: i32,
    /// A cancelled sale admits nobody (410).
    pub cancelled: bool,
    /// An admin holds the sale: entries still get tickets, the workers drain nothing, and
    /// waiting buyers see `paused`.
    pub paused: bool,
    /// Tickets per second the workers turn into orders, all processes together (0 = no limit).
    pub outflow_per_sec: u32,
    /// Buyers who may wait for a returned unit once the gate is empty (0 = no waitlist).
    pub waitlist_limit: u32,
    /// When the pre-queue opens (before `starts_at`), if the sale has one.
    pub prequeue_at: Option<DateTime<Utc>>,
    /// Leading zero bits of the proof of work each entry must carry (0 = none).
    pub pow_bits: u32,
    /// Seconds without a poll after which a queued ticket is expired when the workers reach
    /// it (0 = never).
    pub abandon_after_secs: u32,
    /// The pre-queue was drawn and released: entries after the start go straight to the gate.
    /// Only arming writes it (from PostgreSQL); otherwise the release script alone sets it.
    pub released: bool,
}

impl SaleMeta {
    /// A plain sale open from `starts_at` to `ends_at`: no pause, outflow limit, waitlist,
    /// pre-queue, proof of work or abandonment.
    pub fn open(starts_at: DateTime<Utc>, ends_at: DateTime<Utc>, per_member_limit: i32) -> Self {
        Self {
            starts_at,
            ends_at,
            per_member_limit,
            cancelled: false,
            paused: false,
            outflow_per_sec: 0,
            waitlist_limit: 0,
            prequeue_at: None,
            released: false,
            pow_bits: 0,
            abandon_after_secs: 0,
        }
    }
}

/// The columns of `flash_sales` the door and the workers act on, as read from PostgreSQL (the
/// truth) by catalog-api when it arms or changes a sale and by the workers' reconciler when it
/// re-arms one: one reading, so the two always write the same metadata.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SaleSettings {
    /// Entries before this are answered 425 (or pre-queued).
    pub starts_at: DateTime<Utc>,
    /// Entries from this on are answered 410.
    pub ends_at: DateTime<Utc>,
    /// Live orders one member may hold.
    pub per_member_limit: i32,
    /// Set when an admin cancelled the sale.
    pub cancelled_at: Option<DateTime<Utc>>,
    /// Set while an admin holds the sale.
    pub paused_at: Option<DateTime<Utc>>,
    /// Tickets per second the workers drain (0 = no limit).
    pub outflow_per_sec: i32,
    /// Buyers who may wait for a returned unit (0 = no waitlist).
    pub waitlist_limit: i32,
    /// The pre-queue opens this long before the start (0 = none).
    pub prequeue_secs: i32,
    /// When the drawn pre-queue was released.
    pub released_at: Option<DateTime<Utc>>,
    /// Proof-of-work bits each entry must carry (0 = none).
    pub pow_bits: i32,
    /// Seconds without a poll after which a queued ticket expires (0 = never).
    pub abandon_after_secs: i32,
}

impl SaleSettings {
    /// The metadata to write to Redis for these settings.
    pub fn meta(&self) -> SaleMeta {
        let unsigned = |n: i32| u32::try_from(n).unwrap_or(0);
        SaleMeta {
            starts_at: self.starts_at,
            ends_at: self.ends_at,
            per_member_limit: self.per_member_limit,
            cancelled: self.cancelled_at.is_some(),
            paused: self.paused_at.is_some(),
            outflow_per_sec: unsigned(self.outflow_per_sec),
            waitlist_limit: unsigned(self.waitlist_limit),
            prequeue_at: (self.prequeue_secs > 0)
                .then(|| self.starts_at - chrono::Duration::seconds(i64::from(self.prequeue_secs))),
            released: self.released_at.is_some(),
            pow_bits: unsigned(self.pow_bits),
            abandon_after_secs: unsigned(self.abandon_after_secs),
        }
    }
}

/// How the gate is written when arming.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arm {
    /// Only if absent (`SET NX`): a new sale, or a re-arm that must not undo admissions the
    /// door already made.
    IfAbsent,
    /// Overwrite: the sale changed before it started, so nobody can have been admitted yet.
    Replace,
}

/// Writes the gate (`units` admittable) and the metadata of `sale`, in one transaction. Both
/// keys expire a day after the sale ends.
///
/// # Errors
/// When Redis is unreachable.
pub async fn arm(
    redis: &Redis,
    keys: &Keys,
    sale: Uuid,
    units: i64,
    meta: &SaleMeta,
    mode: Arm,
) -> redis::RedisResult<()> {
    let gate = keys.sale_gate(sale);
    let meta_key = keys.sale_meta(sale);
    let expire_at = expire_at_ms(meta.ends_at);
    let mut pipe = redis::pipe();
    pipe.atomic();
    match mode {
        Arm::IfAbsent => pipe.cmd("SET").arg(&gate).arg(units).arg("NX").ignore(),
        Arm::Replace => pipe.cmd("SET").arg(&gate).arg(units).ignore(),
    };
    hset_meta(&mut pipe, &meta_key, meta);
    if meta.released {
        pipe.cmd("HSET")
            .arg(&meta_key)
            .arg("released")
            .arg(1)
            .ignore();
    }
    pipe.cmd("PEXPIREAT")
        .arg(&gate)
        .arg(expire_at)
        .ignore()
        .cmd("PEXPIREAT")
        .arg(&meta_key)
        .arg(expire_at)
        .ignore();
    let mut conn = redis.clone();
    pipe.query_async(&mut conn).await
}

/// Rewrites the metadata of `sale` and leaves its gate alone: a control change (pause, outflow,
/// early end) of a sale that may already have admitted buyers.
///
/// # Errors
/// When Redis is unreachable.
pub async fn write_meta(
    redis: &Redis,
    keys: &Keys,
    sale: Uuid,
    meta: &SaleMeta,
) -> redis::RedisResult<()> {
    let meta_key = keys.sale_meta(sale);
    let mut pipe = redis::pipe();
    pipe.atomic();
    hset_meta(&mut pipe, &meta_key, meta);
    pipe.cmd("PEXPIREAT")
        .arg(&meta_key)
        .arg(expire_at_ms(meta.ends_at))
        .ignore();
    let mut conn = redis.clone();
    pipe.query_async(&mut conn).await
}

fn hset_meta(pipe: &mut redis::Pipeline, meta_key: &str, meta: &SaleMeta) {
    let cmd = pipe.cmd("HSET").arg(meta_key);
    for (field, value) in meta_fields(meta) {
        cmd.arg(field).arg(value);
    }
    cmd.ignore();
}

/// The metadata's fields as arming writes them, every one a number.
fn meta_fields(meta: &SaleMeta) -> [(&'static str, i64); 10] {
    [
        ("starts_at", meta.starts_at.timestamp_millis()),
        ("ends_at", meta.ends_at.timestamp_millis()),
        ("per_member_limit", i64::from(meta.per_member_limit)),
        ("cancelled", i64::from(meta.cancelled)),
        ("paused", i64::from(meta.paused)),
        ("outflow", i64::from(meta.outflow_per_sec)),
        ("waitlist", i64::from(meta.waitlist_limit)),
        (
            "prequeue_at",
            meta.prequeue_at.map_or(0, |at| at.timestamp_millis()),
        ),
        ("pow", i64::from(meta.pow_bits)),
        ("abandon", i64::from(meta.abandon_after_secs)),
    ]
}

/// Brings `sale`'s metadata to `meta` field by field (`lua/converge_meta.lua`): a change whose
/// Redis step failed (a PATCH, a pause, a cancel) reaches the door at the reconciler's next
/// pass. Returns how many fields were off; metadata Redis does not hold is left to arming.
///
/// # Errors
/// When Redis is unreachable.
pub async fn converge_meta(
    redis: &Redis,
    keys: &Keys,
    sale: Uuid,
    meta: &SaleMeta,
) -> redis::RedisResult<u32> {
    let mut call = script::CONVERGE_META.redis().prepare_invoke();
    call.key(keys.sale_meta(sale));
    for (field, value) in meta_fields(meta) {
        call.arg(field).arg(value);
    }
    call.invoke_async(&mut redis.clone()).await
}

/// What the reconciler reads of a sale's gate in one round trip: the gate's units (`None` when
/// Redis lost it), the admissions counter and the tickets being promoted.
///
/// # Errors
/// When Redis is unreachable.
pub async fn gate_reading(
    redis: &Redis,
    keys: &Keys,
    sale: Uuid,
) -> redis::RedisResult<(Option<i64>, i64, i64)> {
    let (gate, seq, promoting): (Option<i64>, Option<i64>, i64) = redis::pipe()
        .cmd("GET")
        .arg(keys.sale_gate(sale))
        .cmd("GET")
        .arg(keys.sale_seq(sale))
        .cmd("SCARD")
        .arg(keys.sale_promoting(sale))
        .query_async(&mut redis.clone())
        .await?;
    Ok((gate, seq.unwrap_or(0), promoting))
}

/// Sets `sale`'s gate to `units` if it still holds `read` (`lua/correct_gate.lua`); `false`
/// when it moved since.
///
/// # Errors
/// When Redis is unreachable.
pub async fn correct_gate(
    redis: &Redis,
    keys: &Keys,
    sale: Uuid,
    read: i64,
    units: i64,
) -> redis::RedisResult<bool> {
    let set: i64 = script::CORRECT_GATE
        .redis()
        .key(keys.sale_gate(sale))
        .arg(read)
        .arg(units)
        .invoke_async(&mut redis.clone())
        .await?;
    Ok(set == 1)
}

/// What the workers need to know about a sale before they drain it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DrainControl {
    /// Nothing may drain.
    pub paused: bool,
    /// Tickets per second for all workers together (0 = no limit).
    pub outflow_per_sec: u32,
    /// Seconds without a poll after which a queued ticket is expired (0 = never).
    pub abandon_after_secs: u32,
}

/// Reads the drain control of `sale` from its metadata. A sale whose metadata Redis lost drains
/// unlimited until the reconciler re-arms it from PostgreSQL.
///
/// # Errors
/// When Redis is unreachable.
pub async fn drain_control(
    redis: &Redis,
    keys: &Keys,
    sale: Uuid,
) -> redis::RedisResult<DrainControl> {
    let mut conn = redis.clone();
    let (paused, outflow, abandon): (Option<u8>, Option<u32>, Option<u32>) = redis::cmd("HMGET")
        .arg(keys.sale_meta(sale))
        .arg("paused")
        .arg("outflow")
        .arg("abandon")
        .query_async(&mut conn)
        .await?;
    Ok(DrainControl {
        paused: paused == Some(1),
        outflow_per_sec: outflow.unwrap_or(0),
        abandon_after_secs: abandon.unwrap_or(0),
    })
}

/// Puts `units` more into an armed gate (an admin added stock); `None` when the gate is not
/// armed, which the reconciler then arms from PostgreSQL, already counting them.
///
/// # Errors
/// When Redis is unreachable.
pub async fn add_units(
    redis: &Redis,
    keys: &Keys,
    sale: Uuid,
    units: i64,
) -> redis::RedisResult<Option<i64>> {
    let mut conn = redis.clone();
    script::ADD_UNITS
        .redis()
        .key(keys.sale_gate(sale))
        .arg(units)
        .invoke_async(&mut conn)
        .await
}

/// The answer of [`take_units`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// The units left the gate; this many remain admittable.
    Taken(i64),
    /// The gate holds fewer than asked for (this many): units already admitted are promised.
    Short(i64),
    /// The gate is not armed (Redis lost it).
    Unarmed,
}

/// Takes `units` out of the gate only if it holds that many, atomically with the door's
/// admissions: withdrawn stock never includes a unit a buyer was already promised.
///
/// # Errors
/// When Redis is unreachable.
pub async fn take_units(
    redis: &Redis,
    keys: &Keys,
    sale: Uuid,
    units: i64,
) -> redis::RedisResult<Taken> {
    let mut conn = redis.clone();
    let (done, value): (i64, i64) = script::TAKE_UNITS
        .redis()
        .key(keys.sale_gate(sale))
        .arg(units)
        .invoke_async(&mut conn)
        .await?;
    Ok(match done {
        1 => Taken::Taken(value),
        0 => Taken::Short(value),
        _ => Taken::Unarmed,
    })
}

/// Units the gate still admits, or `None` when the gate is not armed (Redis lost it).
///
/// # Errors
/// When Redis is unreachable.
pub async fn remaining(redis: &Redis, keys: &Keys, sale: Uuid) -> redis::RedisResult<Option<i64>> {
    let mut conn = redis.clone();
    redis::cmd("GET")
        .arg(keys.sale_gate(sale))
        .query_async(&mut conn)
        .await
}

/// Gives one unit back to an armed gate (a cancelled order of a running sale). An absent gate
/// is left absent: the reconciler re-arms it from PostgreSQL, which already counts the unit.
///
/// # Errors
/// When Redis is unreachable.
pub async fn return_unit(redis: &Redis, keys: &Keys, sale: Uuid) -> redis::RedisResult<()> {
    let mut conn = redis.clone();
    script::ADD_UNITS
        .redis()
        .key(keys.sale_gate(sale))
        .arg(1)
        .invoke_async::<Option<i64>>(&mut conn)
        .await
        .map(drop)
}
