//! Entry point: read config, start telemetry, work until SIGTERM.

use anyhow::Context;
use clap::Parser;
use workers::{App, Config};

/// mimalloc rather than glibc's malloc, as in every service: faster small allocations on both
/// cores at once (glibc's took a fifth of the front door's CPU under a stampede).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    flash_core::telemetry::init(&config.log);
    let shutdown = flash_core::shutdown::on_signal();
    let app = App::build(config, shutdown)
        .await
        .context("workers failed to start")?;
    tracing::info!(addr = %app.local_addr()?, "workers running");
    app.run().await
}
