//! `loadtest`: load generators and benchmarks for a running flash-sale stack.
//!
//! Every run targets only the URLs it is given (loopback by default), is bounded in request
//! count and time, and stops by itself.

mod auth_bench;
mod door_bench;
mod drain_bench;
mod measure;

use clap::Parser;

/// Load tests and benchmarks against a running stack.
#[derive(Parser)]
#[command(name = "loadtest")]
enum Command {
    /// Login, profile-read and token-verification costs of member-api.
    Auth(auth_bench::AuthArgs),
    /// Entries and polls the flash-sale front door sustains.
    Door(door_bench::DoorArgs),
    /// Orders per second worker processes drain from a full queue.
    Drain(drain_bench::DrainArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Command::parse() {
        Command::Auth(args) => auth_bench::run(args).await,
        Command::Door(args) => door_bench::run(args).await,
        Command::Drain(args) => drain_bench::run(args).await,
    }
}
