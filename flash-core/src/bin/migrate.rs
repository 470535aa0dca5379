//! `flash-migrate`: applies the schema migrations and exits (services also do this at start).

use clap::Parser;
use flash_core::config::PgArgs;

/// Apply pending database migrations.
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    pg: PgArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let pool = flash_core::db::connect(&args.pg).await?;
    flash_core::db::migrate(&pool).await?;
    println!(
        "migrations applied to {}",
        flash_core::db::redact(&args.pg.database_url)
    );
    Ok(())
}
