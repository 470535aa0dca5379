//! workers settings: environment first, loopback defaults.

use std::net::SocketAddr;

use flash_core::config::{HttpArgs, LogArgs, NatsArgs, PgArgs, RedisArgs};

/// Everything the workers read at start-up.
#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "workers",
    about = "Drains flash-sale tickets into orders; re-arms sale gates"
)]
pub struct Config {
    /// Address of the health and metrics endpoints.
    #[arg(long, env = "WORKERS_ADDR", default_value = "127.0.0.1:8083")]
    pub addr: SocketAddr,
    /// PostgreSQL settings.
    #[command(flatten)]
    pub pg: PgArgs,
    /// Redis settings (tickets, served counters, gates).
    #[command(flatten)]
    pub redis: RedisArgs,
    /// NATS settings (the flash-ticket queue).
    #[command(flatten)]
    pub nats: NatsArgs,
    /// HTTP limits of the health endpoints.
    #[command(flatten)]
    pub http: HttpArgs,
    /// Log format.
    #[command(flatten)]
    pub log: LogArgs,
    /// Most tickets taken from the queue per batch; each sale's share of a batch is one
    /// PostgreSQL transaction (~100 rows per transaction is where PostgreSQL shines here).
    #[arg(long, env = "DRAIN_BATCH_SIZE", default_value_t = 256)]
    pub drain_batch_size: usize,
    /// Drain loops per process. While one holds a sale's row lock in its transaction, another
    /// fetches and prepares the next batch and the first acks and updates the waiting room
    /// after its commit, so the lock, the sale's real limit, is seldom idle.
    #[arg(long, env = "DRAIN_CONCURRENCY", default_value_t = 2,
          value_parser = clap::value_parser!(u16).range(1..=64))]
    pub drain_concurrency: u16,
    /// How long a fetch waits for tickets before working with what it has.
    #[arg(long, env = "DRAIN_FETCH_WAIT_MS", default_value_t = 200)]
    pub drain_fetch_wait_ms: u64,
    /// Latency of the simulated payment provider (the default provider, a stand-in for a
    /// real one behind the `PaymentProvider` trait).
    #[arg(long, env = "PAYMENT_LATENCY_MS", default_value_t = 50)]
    pub payment_latency_ms: u64,
    /// Share of charges the simulated provider declines (0.0 to 1.0).
    #[arg(long, env = "PAYMENT_DECLINE_RATE", default_value_t = 0.02)]
    pub payment_decline_rate: f64,
    /// Share of charges the simulated provider fails transiently (retried).
    #[arg(long, env = "PAYMENT_TRANSIENT_RATE", default_value_t = 0.05)]
    pub payment_transient_rate: f64,
    /// Deliveries of a payment job before a transient failure counts as final.
    #[arg(long, env = "PAYMENT_MAX_ATTEMPTS", default_value_t = 5)]
    pub payment_max_attempts: i64,
    /// SMTP server to send mail through, e.g. `smtp://localhost:1025` or
    /// `smtps://user:password@mail.example.com` (URL form of lettre). When unset, mail is
    /// written to `MAIL_DIR` instead.
    #[arg(long, env = "SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<String>,
    /// Folder the email worker writes each mail into, as `<email_id>.eml`, when no SMTP_URL.
    #[arg(long, env = "MAIL_DIR", default_value = ".data/mail")]
    pub mail_dir: std::path::PathBuf,
    /// Sender of every email.
    #[arg(
        long,
        env = "MAIL_FROM",
        default_value = "Flash Shop <shop@flash.local>"
    )]
    pub mail_from: String,
    /// Tries before an email is dead-lettered (status `dead`).
    #[arg(long, env = "EMAIL_MAX_ATTEMPTS", default_value_t = 5)]
    pub email_max_attempts: i64,
    /// How often the reconciler re-arms gates of live sales that Redis lost.
    #[arg(long, env = "RECONCILE_INTERVAL_MS", default_value_t = 2000)]
    pub reconcile_interval_ms: u64,
    /// How often returned units are handed to waitlisted buyers.
    #[arg(long, env = "WAITLIST_INTERVAL_MS", default_value_t = 250)]
    pub waitlist_interval_ms: u64,
    /// How often the fulfilment scheduler moves orders along (preparing, shipped, delivered,
    /// returned).
    #[arg(long, env = "FULFILMENT_INTERVAL_MS", default_value_t = 5_000)]
    pub fulfilment_interval_ms: u64,
    /// Seconds a paid order waits before it is prepared (the dev stack sets seconds; a shop
    /// sets what its warehouse needs).
    #[arg(long, env = "PREPARE_AFTER_SECS", default_value_t = 600)]
    pub prepare_after_secs: u64,
    /// Seconds an order is prepared before it is handed to the carrier.
    #[arg(long, env = "SHIP_AFTER_SECS", default_value_t = 3_600)]
    pub ship_after_secs: u64,
    /// Seconds after shipping before the carrier is asked whether it was delivered.
    #[arg(long, env = "DELIVER_AFTER_SECS", default_value_t = 86_400)]
    pub deliver_after_secs: u64,
    /// Seconds after a return request before the carrier is asked whether the parcel is back.
    #[arg(long, env = "RETURN_AFTER_SECS", default_value_t = 172_800)]
    pub return_after_secs: u64,
    /// Orders one fulfilment step claims per pass.
    #[arg(long, env = "FULFILMENT_BATCH_SIZE", default_value_t = 100)]
    pub fulfilment_batch_size: i64,
    /// Share of calls the simulated carrier fails (0.0 to 1.0); a failed call is retried on
    /// the next pass. The simulated carrier stands in for a real one behind the `Carrier` trait.
    #[arg(long, env = "CARRIER_FAILURE_RATE", default_value_t = 0.0)]
    pub carrier_failure_rate: f64,
    /// What this process does, comma-separated; all of it by default. A shop that runs the
    /// drain on its own processes (or machines) keeps payments and mail from taking its CPU
    /// during a sale, and scales each part to its own load.
    #[arg(
        long,
        env = "WORKER_ROLES",
        value_enum,
        value_delimiter = ',',
        default_value = "drain,relay,payments,emails,reconciler,waitlist,fulfilment"
    )]
    pub roles: Vec<Role>,
}

/// One of the jobs a workers process can run.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Queued tickets become orders.
    Drain,
    /// Outbox rows are published as payment and email jobs.
    Relay,
    /// Payment jobs are charged (or refunded).
    Payments,
    /// Email jobs are sent.
    Emails,
    /// Sale gates Redis lost are re-armed from PostgreSQL.
    Reconciler,
    /// Returned units are handed to waitlisted buyers.
    Waitlist,
    /// Paid orders move through preparing, shipped and delivered.
    Fulfilment,
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::{Config, Role};

    #[test]
    fn roles_default_to_everything_and_refuse_unknown_names() {
        let all = Config::try_parse_from(["workers"]).unwrap();
        assert_eq!(all.roles.len(), 7);
        let some = Config::try_parse_from(["workers", "--roles", "drain,payments"]).unwrap();
        assert_eq!(some.roles, vec![Role::Drain, Role::Payments]);
        let err = Config::try_parse_from(["workers", "--roles", "drain,charge"]).unwrap_err();
        assert!(err.to_string().contains("charge"), "{err}");
    }

    #[test]
    fn the_drain_runs_two_loops_by_default_and_at_least_one() {
        assert_eq!(
            Config::try_parse_from(["workers"])
                .unwrap()
                .drain_concurrency,
            2
        );
        let err = Config::try_parse_from(["workers", "--drain-concurrency", "0"]).unwrap_err();
        assert!(err.to_string().contains('0'), "{err}");
    }
}
