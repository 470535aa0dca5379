//! Redis: the auto-reconnecting connection. What is stored where, and the scripts that change
//! it, are [`crate::redis_model`]'s.

use std::time::Duration;

use anyhow::Context;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::config::RedisArgs;

/// Opens a connection manager: one multiplexed connection shared by all tasks, reconnected in
/// the background when Redis restarts.
///
/// # Errors
/// When Redis cannot be reached at start-up.
pub async fn connect(args: &RedisArgs) -> anyhow::Result<ConnectionManager> {
    let client = redis::Client::open(args.redis_url.as_str())
        .with_context(|| format!("invalid REDIS_URL {}", crate::db::redact(&args.redis_url)))?;
    let config = ConnectionManagerConfig::new()
        .set_response_timeout(Some(Duration::from_millis(args.redis_response_timeout_ms)))
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_number_of_retries(2);
    client
        .get_connection_manager_with_config(config)
        .await
        .with_context(|| {
            format!(
                "connecting to Redis at {}",
                crate::db::redact(&args.redis_url)
            )
        })
}

/// Every key matching `pattern`, a thousand keys a round trip. `SCAN` walks the whole keyspace
/// whatever the pattern, so with the default page of ten a large Redis (a benchmark's tickets)
/// makes a clean-up or an audit take thousands of round trips.
///
/// # Errors
/// When Redis fails.
pub async fn scan_keys<C>(conn: &mut C, pattern: &str) -> redis::RedisResult<Vec<String>>
where
    C: redis::aio::ConnectionLike + Send + Sync,
{
    let options = redis::ScanOptions::default()
        .with_pattern(pattern)
        .with_count(1000);
    let mut iter = redis::AsyncCommands::scan_options::<String>(conn, options).await?;
    let mut found = Vec::new();
    while let Some(key) = futures::StreamExt::next(&mut iter).await {
        found.push(key?);
    }
    Ok(found)
}
