//! Entry point: read config, start telemetry, serve until SIGTERM.

use admission::{App, Config};
use anyhow::Context;
use clap::Parser;

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
