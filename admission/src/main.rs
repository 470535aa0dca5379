//! Entry point: read config, start telemetry, serve until SIGTERM.

use admission::{App, Config};
use anyhow::Context;
use clap::Parser;

/// mimalloc rather than glibc's malloc: every request allocates small buffers on both cores at
/// once, and glibc's allocator took about a fifth of the door's CPU in a 50,000-buyer stampede.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    flash_core::telemetry::init(&config.log);
    let shutdown = flash_core::shutdown::on_signal();
    let app = App::build(config, shutdown)
        .await
        .context("admission failed to start")?;
    tracing::info!(addr = %app.local_addr()?, "admission listening");
    app.run().await
}
