//! Entry point: read config, start telemetry, work until SIGTERM.

use anyhow::Context;
use clap::Parser;
use workers::{App, Config};

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
