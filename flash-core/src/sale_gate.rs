//! The Redis side of a flash sale: its *gate* (units the front door may still admit) and the
//! metadata the door checks, so an entry costs no PostgreSQL round trip.
//!
//! PostgreSQL's `flash_sales.quantity_left` stays the truth: catalog-api arms the gate from it
//! when a sale is created or changed, and the workers' reconciler re-arms it after Redis loses
//! it. Both keys of a sale share the hash tag `{sale:<id>}`, so one Lua script can touch both
//! on Redis Cluster.

use chrono::{DateTime, Utc};
use redis::aio::ConnectionManager;
use uuid::Uuid;

use crate::redis::Keys;

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
    redis: &ConnectionManager,
    keys: &Keys,
    sale: Uuid,
    units: i64,
    meta: &SaleMeta,
    mode: Arm,
) -> redis::RedisResult<()> {
    let gate = keys.sale_gate(sale);
    let meta_key = keys.sale_meta(sale);
    let expire_at = (meta.ends_at + chrono::Duration::days(1)).timestamp();
    let mut pipe = redis::pipe();
    pipe.atomic();
    match mode {
        Arm::IfAbsent => pipe.cmd("SET").arg(&gate).arg(units).arg("NX").ignore(),
        Arm::Replace => pipe.cmd("SET").arg(&gate).arg(units).ignore(),
    };
    pipe.cmd("HSET")
        .arg(&meta_key)
        .arg("starts_at")
        .arg(meta.starts_at.timestamp_millis())
        .arg("ends_at")
        .arg(meta.ends_at.timestamp_millis())
        .arg("per_member_limit")
        .arg(meta.per_member_limit)
        .arg("cancelled")
        .arg(u8::from(meta.cancelled))
        .ignore()
        .cmd("EXPIREAT")
        .arg(&gate)
        .arg(expire_at)
        .ignore()
        .cmd("EXPIREAT")
        .arg(&meta_key)
        .arg(expire_at)
        .ignore();
    let mut conn = redis.clone();
    pipe.query_async(&mut conn).await
}

/// Units the gate still admits, or `None` when the gate is not armed (Redis lost it).
///
/// # Errors
/// When Redis is unreachable.
pub async fn remaining(
    redis: &ConnectionManager,
    keys: &Keys,
    sale: Uuid,
) -> redis::RedisResult<Option<i64>> {
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
pub async fn return_unit(
    redis: &ConnectionManager,
    keys: &Keys,
    sale: Uuid,
) -> redis::RedisResult<()> {
    let script = redis::Script::new(
        "if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('INCR', KEYS[1]) end return nil",
    );
    let mut conn = redis.clone();
    script
        .key(keys.sale_gate(sale))
        .invoke_async::<Option<i64>>(&mut conn)
        .await
        .map(drop)
}
