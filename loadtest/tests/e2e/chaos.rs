//! The fault matrix (`loadtest chaos`) on a small spike: every row must pass. It runs the
//! services as processes (it kills them), from the binaries `cargo test --workspace` built next
//! to this test's own; its Redis and NATS are servers it starts on free ports.

use std::path::PathBuf;

use clap::Parser;
use loadtest::chaos::{self, ChaosArgs};

/// The target folder holding the workspace's binaries: this test runs from its `deps/`.
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    for bin in ["admission", "workers", "catalog-api"] {
        assert!(
            dir.join(bin).is_file(),
            "{} is missing: run the workspace's tests (cargo test --workspace), which build it",
            dir.join(bin).display()
        );
    }
    dir.to_owned()
}

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    chaos: ChaosArgs,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_of_the_matrix_loses_nothing() {
    let _turn = crate::stack::TURN.lock().await;
    let bin_dir = bin_dir();
    let mut args = Args::parse_from([
        "chaos",
        "--buyers",
        "400",
        "--units",
        "160",
        "--ramp-secs",
        "4",
        "--outage-secs",
        "2",
        "--shoppers",
        "80",
    ])
    .chaos;
    args.bin_dir = bin_dir;
    // The run's logs and NATS store: kept when the test fails, to read; removed when it passes.
    let work_dir = std::env::temp_dir().join(format!("flash-chaos-test-{}", uuid::Uuid::new_v4()));
    args.work_dir = Some(work_dir.clone());
    let matrix = chaos::run_matrix(&args).await.unwrap();
    matrix.print();
    let every = <chaos::Fault as clap::ValueEnum>::value_variants();
    assert_eq!(matrix.rows.len(), every.len());
    for row in &matrix.rows {
        assert!(row.passed(), "{row:?}");
        assert!(row.accepted > 0, "{row:?}: the spike admitted nobody");
    }
    std::fs::remove_dir_all(&work_dir).unwrap();
}
