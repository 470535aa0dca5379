//! The flash queue on a three-node NATS cluster started here (its own `nats-server`s on free
//! ports, stopped by PID): created with three replicas through `NATS_URL`'s seeds, it keeps
//! every ticket and takes publishes again soon after the node leading it is SIGKILLed.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use clap::Parser;
use flash_core::{
    config::NatsArgs,
    nats,
    testing::{OwnServer, find_program, free_port},
};

/// One `nats-server` of the cluster, by its server name.
struct Node {
    name: String,
    server: OwnServer,
}

/// Three JetStream nodes routed to each other, each with its own store under `dir`.
fn start_cluster(dir: &std::path::Path) -> Vec<Node> {
    let ports: Vec<(u16, u16)> = (0..3)
        .map(|_| {
            (
                free_port().expect("a free port"),
                free_port().expect("a free port"),
            )
        })
        .collect();
    let routes = ports
        .iter()
        .map(|(_, route)| format!("nats://127.0.0.1:{route}"))
        .collect::<Vec<_>>()
        .join(",");
    ports
        .iter()
        .enumerate()
        .map(|(i, (client_port, route_port))| {
            let name = format!("n{i}");
            let store = dir.join(&name);
            let server = OwnServer::spawn(
                Command::new(find_program("nats-server"))
                    .args(["-a", "127.0.0.1", "-p", &client_port.to_string()])
                    .args(["-n", &name, "-js", "-sd"])
                    .arg(&store)
                    .args(["--cluster_name", "flash-test"])
                    .args(["--cluster", &format!("nats://127.0.0.1:{route_port}")])
                    .args(["--routes", &routes])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null()),
                *client_port,
            )
            .expect("nats-server starts (scripts/test installs it)");
            Node { name, server }
        })
        .collect()
}

fn args_for(nodes: &[Node]) -> NatsArgs {
    let seeds = nodes
        .iter()
        .map(|node| format!("nats://127.0.0.1:{}", node.server.port))
        .collect::<Vec<_>>()
        .join(",");
    #[derive(Parser)]
    struct Args {
        #[command(flatten)]
        nats: NatsArgs,
    }
    Args::parse_from(["test", "--nats-url", &seeds, "--nats-stream-replicas", "3"]).nats
}

#[tokio::test]
async fn the_flash_queue_keeps_its_tickets_and_takes_publishes_when_its_leader_dies() {
    let dir = std::env::temp_dir().join(format!("flash-nats-cluster-{}", uuid::Uuid::new_v4()));
    let mut nodes = start_cluster(&dir);
    let args = args_for(&nodes);
    // The servers listen a moment after they start, and the cluster elects its JetStream meta
    // leader a moment after the routes are up.
    let started = Instant::now();
    let client = loop {
        match nats::connect(&args, "cluster-test").await {
            Ok(client) => break client,
            Err(err) if started.elapsed() < Duration::from_secs(10) => {
                tracing::debug!(%err, "no seed listens yet");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => panic!("no seed answered: {err:#}"),
        }
    };
    let js = nats::jetstream(client, &args);
    let mut stream = loop {
        match nats::ensure_flash_queue(&js, &args).await {
            Ok(stream) => break stream,
            Err(err) if started.elapsed() < Duration::from_secs(20) => {
                tracing::debug!(%err, "the cluster is not ready yet");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(err) => panic!("the clustered stream was never created: {err:#}"),
        }
    };
    let info = stream.info().await.expect("stream info").clone();
    assert_eq!(info.config.num_replicas, 3, "NATS_STREAM_REPLICAS applies");

    let sale = uuid::Uuid::new_v4();
    let subject = nats::Subjects::new(&args.nats_subject_prefix).flash_tickets(sale);
    for i in 0..50 {
        js.publish(subject.clone(), format!("before-{i}").into())
            .await
            .expect("publish")
            .await
            .expect("stored");
    }

    let leader = info
        .cluster
        .and_then(|cluster| cluster.leader)
        .expect("a replicated stream has a leader");
    let node = nodes
        .iter()
        .position(|node| node.name == leader)
        .expect("the leader is one of ours");
    let killed = Instant::now();
    drop(nodes.remove(node));

    // Publishes ride over the leader change (the client moves to a live node if it was on the
    // dead one); every one is eventually stored, none twice (they carry message ids).
    for i in 0..50 {
        let id = format!("after-{i}");
        loop {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", id.as_str());
            let stored = match js
                .publish_with_headers(subject.clone(), headers, id.clone().into())
                .await
            {
                Ok(ack) => ack.await.is_ok(),
                Err(_) => false,
            };
            if stored {
                break;
            }
            assert!(
                killed.elapsed() < Duration::from_secs(15),
                "no publish stored 15 s after the leader died"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let recovered = killed.elapsed();

    let info = stream
        .info()
        .await
        .expect("stream info from a live node")
        .clone();
    assert_eq!(info.state.messages, 100, "every ticket kept, none twice");
    let new_leader = info.cluster.and_then(|cluster| cluster.leader);
    assert!(
        new_leader.is_some() && new_leader.as_deref() != Some(leader.as_str()),
        "a new leader: {new_leader:?}"
    );
    eprintln!("publishes stored again {recovered:?} after the leader ({leader}) was killed");

    drop(nodes);
    let _ = std::fs::remove_dir_all(&dir);
}
