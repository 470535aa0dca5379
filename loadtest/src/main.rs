//! `loadtest`: load generators and benchmarks for a running flash-sale stack.

use clap::Parser;
use loadtest::{auth_bench, chaos, check, door_bench, drain_bench, shop, spike, summary};

/// mimalloc, as in the services: the load generator shares the cores with what it measures,
/// so every cycle it saves goes to the services.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Load tests and benchmarks against a running stack.
#[derive(Parser)]
#[command(name = "loadtest")]
enum Command {
    /// A flash sale as it happens: seeded buyers stampede a new sale, every ticket is followed
    /// to its end, and the invariants are checked.
    Spike(spike::SpikeArgs),
    /// Proves a sale kept its invariants (no oversell, limits, one order per ticket, …).
    Check(check::CheckArgs),
    /// A steady mix of ordinary shopping (browse, product reads, regular orders, profile).
    Shop(shop::ShopArgs),
    /// One table over several `spike --json` reports.
    Summary(summary::SummaryArgs),
    /// Login, profile-read and token-verification costs of member-api.
    Auth(auth_bench::AuthArgs),
    /// Entries and polls the flash-sale front door sustains.
    Door(door_bench::DoorArgs),
    /// Orders per second worker processes drain from a full queue.
    Drain(drain_bench::DrainArgs),
    /// The fault matrix: a spike per fault (processes killed, Redis flushed, NATS or
    /// PostgreSQL cut off) on servers and services it starts itself.
    Chaos(chaos::ChaosArgs),
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    match Command::parse() {
        Command::Spike(args) => spike::run(args).await,
        Command::Check(args) => check::run(args).await,
        Command::Shop(args) => shop::run(args).await,
        Command::Summary(args) => summary::run(&args),
        Command::Auth(args) => auth_bench::run(args).await,
        Command::Door(args) => door_bench::run(args).await,
        Command::Drain(args) => drain_bench::run(args).await,
        Command::Chaos(args) => chaos::run(args).await,
    }
}
