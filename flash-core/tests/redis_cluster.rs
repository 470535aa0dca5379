//! The sale's Redis model on a Redis Cluster of three masters and three replicas started here
//! (its own `redis-server`s on free ports, stopped by PID): reached through a
//! `redis+cluster://` URL, the gate, the entry script, a sale's `SCAN` and the denylist's
//! one-slot pipeline work, and they work again soon after the master that owns the sale's slot
//! is SIGKILLed and its replica takes over.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use chrono::Utc;
use clap::Parser;
use flash_core::{
    config::RedisArgs,
    domain::MemberId,
    redis::{self, Redis},
    redis_model::{
        Keys,
        entry::{Entry, EntryCall},
        sale_gate::{self, Arm, SaleMeta},
    },
    testing::{OwnServer, find_program, free_port},
};
use uuid::Uuid;

/// Six cluster-enabled servers, each with its own folder under `dir`, joined as three masters
/// with one replica each; a node timeout of one second makes a failover take about two.
fn start_cluster(dir: &std::path::Path) -> Vec<OwnServer> {
    let nodes: Vec<OwnServer> = (0..6)
        .map(|i| {
            let port = free_port().expect("a free port");
            let home = dir.join(format!("n{i}"));
            std::fs::create_dir_all(&home).expect("the node's folder");
            OwnServer::spawn(
                Command::new(find_program("redis-server"))
                    .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                    .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "1000"])
                    .args(["--save", "", "--appendonly", "no"])
                    .arg("--dir")
                    .arg(&home)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null()),
                port,
            )
            .expect("redis-server starts (scripts/test installs it)")
        })
        .collect();
    let started = Instant::now();
    for node in &nodes {
        while std::net::TcpStream::connect(("127.0.0.1", node.port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "redis-server never listened"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let created = Command::new(find_program("redis-cli"))
        .args(["--cluster", "create"])
        .args(nodes.iter().map(|node| format!("127.0.0.1:{}", node.port)))
        .args(["--cluster-replicas", "1", "--cluster-yes"])
        .stdout(Stdio::null())
        .status()
        .expect("redis-cli runs");
    assert!(created.success(), "redis-cli --cluster create failed");
    nodes
}

fn args_for(nodes: &[OwnServer]) -> RedisArgs {
    let seeds = nodes
        .iter()
        .map(|node| format!("127.0.0.1:{}", node.port))
        .collect::<Vec<_>>()
        .join(",");
    #[derive(Parser)]
    struct Args {
        #[command(flatten)]
        redis: RedisArgs,
    }
    Args::parse_from([
        "test",
        "--redis-url",
        &format!("redis+cluster://{seeds}"),
        "--redis-key-prefix",
        "cluster-test:",
    ])
    .redis
}

/// The port of the master that owns `key`'s slot, by `CLUSTER KEYSLOT` and `CLUSTER SLOTS`.
async fn master_of(conn: &mut Redis, key: &str) -> u16 {
    let slot: i64 = ::redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query_async(conn)
        .await
        .expect("CLUSTER KEYSLOT");
    let ranges: Vec<(i64, i64, u16)> = ::redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(conn)
        .await
        .map(|ranges: Vec<::redis::Value>| {
            ranges
                .into_iter()
                .map(|range| {
                    let fields: Vec<::redis::Value> =
                        ::redis::from_redis_value(range).expect("a slot range");
                    let field = |i: usize| fields.get(i).cloned().expect("a slot range's field");
                    let start = ::redis::from_redis_value(field(0)).expect("a slot");
                    let end = ::redis::from_redis_value(field(1)).expect("a slot");
                    let master: Vec<::redis::Value> =
                        ::redis::from_redis_value(field(2)).expect("the master");
                    let port = master
                        .get(1)
                        .cloned()
                        .and_then(|port| ::redis::from_redis_value(port).ok())
                        .expect("the master's port");
                    (start, end, port)
                })
                .collect()
        })
        .expect("CLUSTER SLOTS");
    ranges
        .into_iter()
        .find(|(start, end, _)| (*start..=*end).contains(&slot))
        .map(|(_, _, port)| port)
        .expect("a master owns every slot")
}

async fn enter(conn: &Redis, keys: &Keys, sale: Uuid) -> ::redis::RedisResult<Entry> {
    EntryCall::new(keys, sale, MemberId::new(), Uuid::now_v7(), Utc::now(), 0)
        .run(conn)
        .await
}

#[tokio::test]
async fn a_sale_runs_on_a_redis_cluster_and_again_after_its_master_dies() {
    let dir = std::env::temp_dir().join(format!("flash-redis-cluster-{}", Uuid::new_v4()));
    let mut nodes = start_cluster(&dir);
    let args = args_for(&nodes);
    let keys = Keys::new(&args.redis_key_prefix);
    let started = Instant::now();
    // The cluster says `ok` a moment after it is created.
    let mut conn = loop {
        match redis::connect(&args).await {
            Ok(mut conn) => {
                let info: ::redis::RedisResult<String> = ::redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query_async(&mut conn)
                    .await;
                if info.is_ok_and(|info| info.contains("cluster_state:ok")) {
                    break conn;
                }
            }
            Err(err) => assert!(
                started.elapsed() < Duration::from_secs(20),
                "the cluster never answered: {err:#}"
            ),
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the cluster never became ok"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(matches!(conn, Redis::Cluster(_)));

    let sale = Uuid::now_v7();
    let now = Utc::now();
    let meta = SaleMeta::open(
        now - chrono::Duration::minutes(1),
        now + chrono::Duration::hours(1),
        1,
    );
    sale_gate::arm(&conn, &keys, sale, 10, &meta, Arm::IfAbsent)
        .await
        .expect("the gate is armed in one MULTI on the sale's node");
    for _ in 0..3 {
        let entry = enter(&conn, &keys, sale)
            .await
            .expect("the entry script runs");
        assert!(matches!(entry, Entry::Queued { .. }), "{entry:?}");
    }
    let tickets = redis::scan_keys(&conn, &keys.sale_tickets_pattern(sale))
        .await
        .expect("a sale's SCAN goes to its node");
    assert_eq!(tickets.len(), 3);
    let everything = redis::scan_keys(&conn, &format!("{}*", keys.prefix()))
        .await
        .expect("a tagless SCAN walks every master");
    assert!(everything.len() > tickets.len());
    // The denylist's check is one pipeline over three keys: one slot, one node.
    let (found, whole): (u32, bool) = ::redis::pipe()
        .exists(&[
            keys.denied_token(Uuid::new_v4()),
            keys.denied_session(Uuid::new_v4()),
        ])
        .exists(keys.denylist_whole())
        .query_async(&mut conn)
        .await
        .expect("the denylist's keys share a slot");
    assert_eq!((found, whole), (0, false));

    // Every write so far has reached the replica before its master dies.
    let gate = keys.sale_gate(sale);
    let master = master_of(&mut conn, &gate).await;
    let index = nodes
        .iter()
        .position(|node| node.port == master)
        .expect("the master is one of ours");
    // Alone, `WAIT` would go to every master; in a pipeline behind the gate, to its master.
    // A replica of a cluster just created may still be syncing: ask until it has caught up.
    loop {
        let (_, replicas): (Option<i64>, i64) = ::redis::pipe()
            .get(&gate)
            .cmd("WAIT")
            .arg(1)
            .arg(300)
            .query_async(&mut conn)
            .await
            .expect("WAIT");
        if replicas == 1 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the replica never caught up"
        );
    }
    drop(nodes.remove(index));
    let killed = Instant::now();
    let entry = loop {
        match enter(&conn, &keys, sale).await {
            Ok(entry) => break entry,
            Err(err) => assert!(
                killed.elapsed() < Duration::from_secs(15),
                "no entry within 15 s of the master's death: {err}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let recovered = killed.elapsed();
    assert!(matches!(entry, Entry::Queued { .. }), "{entry:?}");
    assert_ne!(
        master_of(&mut conn, &gate).await,
        master,
        "a replica took over"
    );
    assert_eq!(
        sale_gate::remaining(&conn, &keys, sale)
            .await
            .expect("the gate"),
        Some(6),
        "the promoted replica kept every entry: 10 units, 4 taken"
    );
    println!(
        "entries taken again {:.2} s after the master was killed",
        recovered.as_secs_f64()
    );
    drop(nodes);
    let _ = std::fs::remove_dir_all(&dir);
}
