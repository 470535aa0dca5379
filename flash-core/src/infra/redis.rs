//! Redis: one connection type for a single server and for a Redis Cluster, chosen by the URL.
//! What is stored where, and the scripts that change it, are [`crate::redis_model`]'s.
//!
//! `REDIS_URL` is either a server's URL (`redis://host:6379`) or a cluster's seed nodes,
//! `redis+cluster://[user:password@]host:port,host:port,…`. Everything the services send works
//! on both, because every key of a sale shares one hash tag (one slot) and every script names
//! all its keys in `KEYS`: a script, a pipeline and a `MULTI` each stay on the sale's node.

use std::{collections::BTreeSet, time::Duration};

use anyhow::Context;
use redis::{
    Cmd, Pipeline, RedisFuture, RedisResult, Value,
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig},
    cluster::ClusterClientBuilder,
    cluster_async::ClusterConnection,
    cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr},
};

use crate::config::RedisArgs;

/// The scheme of a Redis Cluster's URL.
pub const CLUSTER_SCHEME: &str = "redis+cluster://";

/// A Redis connection shared by all tasks (clone it freely): one auto-reconnecting multiplexed
/// connection to a single server, or a cluster connection that follows the slot map, `MOVED`
/// and `ASK` redirections and a failover to a replica.
#[derive(Clone)]
pub enum Redis {
    /// A single server (or a proxy in front of one).
    Single(ConnectionManager),
    /// A Redis Cluster.
    Cluster(ClusterConnection),
}

/// What a `REDIS_URL` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One server, by its own URL.
    Single(String),
    /// A cluster, by the URLs of its seed nodes (credentials copied onto each).
    Cluster(Vec<String>),
}

impl Target {
    /// Reads a `REDIS_URL`.
    ///
    /// # Errors
    /// When a cluster URL names no node, or a node without a port.
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        let Some(rest) = url.strip_prefix(CLUSTER_SCHEME) else {
            return Ok(Self::Single(url.to_owned()));
        };
        let (userinfo, hosts) = match rest.rsplit_once('@') {
            Some((userinfo, hosts)) => (Some(userinfo), hosts),
            None => (None, rest),
        };
        let nodes = hosts
            .trim_end_matches('/')
            .split(',')
            .map(str::trim)
            .filter(|node| !node.is_empty())
            .map(|node| {
                anyhow::ensure!(
                        node.rsplit_once(':').is_some_and(
                            |(host, port)| !host.is_empty() && port.parse::<u16>().is_ok()
                        ),
                        "cluster node {node:?} is not host:port"
                    );
                Ok(match userinfo {
                    Some(userinfo) => format!("redis://{userinfo}@{node}"),
                    None => format!("redis://{node}"),
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        anyhow::ensure!(!nodes.is_empty(), "a Redis Cluster URL names no node");
        Ok(Self::Cluster(nodes))
    }

    /// Clients of the servers a subscriber may listen on, in order of preference: the server,
    /// or every seed of a cluster (a classic `PUBLISH` reaches every node of a cluster, so any
    /// one of them hears every message).
    ///
    /// # Errors
    /// When a URL is not a Redis URL.
    pub fn subscriber_clients(&self) -> RedisResult<Vec<redis::Client>> {
        match self {
            Self::Single(url) => Ok(vec![redis::Client::open(url.as_str())?]),
            Self::Cluster(nodes) => nodes
                .iter()
                .map(|node| redis::Client::open(node.as_str()))
                .collect(),
        }
    }
}

/// Opens the connection `args.redis_url` names.
///
/// # Errors
/// When the URL is malformed or Redis cannot be reached at start-up.
pub async fn connect(args: &RedisArgs) -> anyhow::Result<Redis> {
    let shown = crate::db::redact(&args.redis_url);
    let target =
        Target::parse(&args.redis_url).with_context(|| format!("invalid REDIS_URL {shown}"))?;
    let response_timeout = Duration::from_millis(args.redis_response_timeout_ms);
    let connection_timeout = Duration::from_secs(2);
    let connected = match target {
        Target::Single(url) => {
            let client = redis::Client::open(url.as_str())
                .with_context(|| format!("invalid REDIS_URL {shown}"))?;
            let config = ConnectionManagerConfig::new()
                .set_response_timeout(Some(response_timeout))
                .set_connection_timeout(Some(connection_timeout))
                .set_number_of_retries(2);
            client
                .get_connection_manager_with_config(config)
                .await
                .map(Redis::Single)
        }
        Target::Cluster(nodes) => {
            // The crate's defaults wait 1.3 s and more between retries; a dev cluster fails
            // over in about two seconds, so retry soon and often enough to ride over one.
            let client = ClusterClientBuilder::new(nodes)
                .response_timeout(response_timeout)
                .connection_timeout(connection_timeout)
                .retries(8)
                .min_retry_wait(20)
                .max_retry_wait(500)
                .retry_wait_formula(10, 2)
                .build()
                .with_context(|| format!("invalid REDIS_URL {shown}"))?;
            client.get_async_connection().await.map(Redis::Cluster)
        }
    };
    connected.with_context(|| format!("connecting to Redis at {shown}"))
}

impl ConnectionLike for Redis {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
        }
    }
}

impl Redis {
    /// One `SCAN` step of the keys matching `pattern` from `cursor`: the next cursor (0 when
    /// done) and the keys found. On a cluster the pattern must hold a hash tag (one sale's
    /// keys); the step goes to the node that owns it, since a cursor means nothing elsewhere.
    ///
    /// # Errors
    /// When Redis fails, or on a cluster when the pattern has no hash tag.
    pub async fn scan_step(
        &mut self,
        cursor: u64,
        pattern: &str,
        count: usize,
    ) -> RedisResult<(u64, Vec<String>)> {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(count);
        match self {
            Self::Single(conn) => cmd.query_async(conn).await,
            Self::Cluster(conn) => {
                if hash_tag(pattern).is_none() {
                    return Err(redis::RedisError::from((
                        redis::ErrorKind::Client,
                        "a SCAN of a Redis Cluster needs a pattern within one hash tag",
                        pattern.to_owned(),
                    )));
                }
                let route = Route::with_key(pattern, SlotAddr::Master);
                let reply = conn
                    .route_command(
                        cmd,
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route)),
                    )
                    .await?;
                redis::from_redis_value(reply).map_err(Into::into)
            }
        }
    }

    /// The masters of a cluster, as `(host, port)`, from `CLUSTER SLOTS`; empty for a single
    /// server.
    async fn masters(&mut self) -> RedisResult<BTreeSet<(String, u16)>> {
        let Self::Cluster(conn) = self else {
            return Ok(BTreeSet::new());
        };
        let reply = conn
            .route_command(
                redis::cmd("CLUSTER").arg("SLOTS").clone(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
            )
            .await?;
        let ranges: Vec<Vec<Value>> = redis::from_redis_value(reply)?;
        let mut masters = BTreeSet::new();
        for range in ranges {
            // `[start, end, [host, port, id, …], replicas…]`; Redis 7 adds a map after the id.
            if let Some(master) = range.into_iter().nth(2) {
                let mut node = redis::from_redis_value::<Vec<Value>>(master)?.into_iter();
                if let (Some(host), Some(port)) = (node.next(), node.next()) {
                    masters.insert((
                        redis::from_redis_value(host)?,
                        redis::from_redis_value(port)?,
                    ));
                }
            }
        }
        Ok(masters)
    }
}

/// The hash tag of `key` as Redis Cluster reads it: the text between the first `{` and the
/// first `}` after it, when that is not empty.
fn hash_tag(key: &str) -> Option<&str> {
    let open = key.find('{')?;
    let close = key[open + 1..].find('}')?;
    (close > 0).then(|| &key[open + 1..open + 1 + close])
}

/// Every key matching `pattern`, a thousand keys a round trip. `SCAN` walks the whole keyspace
/// whatever the pattern, so with the default page of ten a large Redis (a benchmark's tickets)
/// makes a clean-up or an audit take thousands of round trips. On a cluster a pattern within
/// one hash tag is walked on its node, any other on every master.
///
/// # Errors
/// When Redis fails.
pub async fn scan_keys(conn: &Redis, pattern: &str) -> RedisResult<Vec<String>> {
    let mut conn = conn.clone();
    if matches!(conn, Redis::Single(_)) || hash_tag(pattern).is_some() {
        return walk(&mut conn, pattern, None).await;
    }
    let mut found = Vec::new();
    for (host, port) in conn.masters().await? {
        found.extend(walk(&mut conn, pattern, Some((host, port))).await?);
    }
    Ok(found)
}

/// Walks one `SCAN` to its end: on the connection's node, or on the cluster node `at`.
async fn walk(
    conn: &mut Redis,
    pattern: &str,
    at: Option<(String, u16)>,
) -> RedisResult<Vec<String>> {
    let mut found = Vec::new();
    let mut cursor = 0;
    loop {
        let (next, keys) = match (&mut *conn, &at) {
            (Redis::Cluster(cluster), Some((host, port))) => {
                let mut cmd = redis::cmd("SCAN");
                cmd.arg(cursor)
                    .arg("MATCH")
                    .arg(pattern)
                    .arg("COUNT")
                    .arg(SCAN_PAGE);
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                    host: host.clone(),
                    port: *port,
                });
                let reply = cluster.route_command(cmd, routing).await?;
                redis::from_redis_value(reply)?
            }
            _ => conn.scan_step(cursor, pattern, SCAN_PAGE).await?,
        };
        found.extend(keys);
        if next == 0 {
            return Ok(found);
        }
        cursor = next;
    }
}

/// Keys asked for per `SCAN` step.
const SCAN_PAGE: usize = 1000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_url_names_one_server() {
        assert_eq!(
            Target::parse("redis://127.0.0.1:6379/2").unwrap(),
            Target::Single("redis://127.0.0.1:6379/2".to_owned())
        );
    }

    #[test]
    fn a_cluster_url_names_each_seed_with_the_credentials() {
        assert_eq!(
            Target::parse("redis+cluster://u:pw@10.0.0.1:7000, 10.0.0.2:7001/").unwrap(),
            Target::Cluster(vec![
                "redis://u:pw@10.0.0.1:7000".to_owned(),
                "redis://u:pw@10.0.0.2:7001".to_owned(),
            ])
        );
    }

    #[test]
    fn a_cluster_url_without_nodes_or_ports_is_refused() {
        assert!(Target::parse("redis+cluster://").is_err());
        assert!(Target::parse("redis+cluster://10.0.0.1").is_err());
        assert!(Target::parse("redis+cluster://10.0.0.1:x").is_err());
    }

    #[test]
    fn a_hash_tag_is_the_first_braced_text() {
        assert_eq!(hash_tag("flash:{sale:1}:ticket:*"), Some("sale:1"));
        assert_eq!(hash_tag("flash:{}:{sale:1}"), None);
        assert_eq!(hash_tag("flash:*"), None);
        assert_eq!(hash_tag("flash:{open"), None);
    }
}
