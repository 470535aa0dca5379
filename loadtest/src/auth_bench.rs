//! `loadtest auth`: what a login and a token verification cost.
//!
//! Signs up fresh buyers through member-api, then measures logins (Argon2id-bound), logins
//! with unknown emails (which must cost the same: no user enumeration by timing), profile
//! reads (token verify + denylist + PostgreSQL), and, in-process, one EdDSA verification.

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use flash_core::{auth::JwtVerifier, config::JwtVerifyArgs};
use serde::Serialize;
use serde_json::{Value, json};

use crate::measure::{Summary, print_table, run_batch};

/// Options of the auth benchmark.
#[derive(clap::Args)]
pub struct AuthArgs {
    /// member-api base URL.
    #[arg(long, env = "MEMBER_URL", default_value = "http://127.0.0.1:8082")]
    member_url: String,
    /// Buyers to sign up (each costs one Argon2 hash).
    #[arg(long, default_value_t = 100)]
    users: usize,
    /// Logins to time, spread over the buyers. Keep logins/users under member-api's
    /// per-email limit (10/min by default) and the total under its per-address limit
    /// (LOGIN_ATTEMPTS_PER_MINUTE_PER_IP), or the run counts 429s.
    #[arg(long, default_value_t = 400)]
    logins: usize,
    /// Profile reads to time.
    #[arg(long, default_value_t = 5000)]
    reads: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// In-process verifications to time.
    #[arg(long, default_value_t = 20_000)]
    verifies: u32,
    /// Public key and claims to verify with.
    #[command(flatten)]
    jwt: JwtVerifyArgs,
    /// Give up on any one phase after this many seconds.
    #[arg(long, default_value_t = 120)]
    phase_timeout_secs: u64,
    /// Also write the figures as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Serialize)]
struct Report {
    phases: Vec<Summary>,
    verify_us: f64,
}

const PASSWORD: &str = "loadtest password 1";

/// Runs the auth benchmark and prints its table.
///
/// # Errors
/// When a service or store cannot be reached.
pub async fn run(args: AuthArgs) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let base = Arc::new(args.member_url.trim_end_matches('/').to_owned());
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let email = |i: usize| format!("bench-{run_id}-{i}@loadtest.example");
    let deadline = Duration::from_secs(args.phase_timeout_secs);
    let mut phases = Vec::new();

    eprintln!("signing up {} buyers at {base} ...", args.users);
    phases.push(
        run_batch(
            "signup (argon2 hash)",
            args.users,
            args.concurrency,
            deadline,
            |i| {
                post(
                    &client,
                    format!("{base}/members"),
                    json!({"email": email(i), "password": PASSWORD, "name": "Bench"}),
                )
            },
        )
        .await,
    );
    eprintln!("timing {} logins ...", args.logins);
    phases.push(
        run_batch(
            "login, known email",
            args.logins,
            args.concurrency,
            deadline,
            |i| {
                post(
                    &client,
                    format!("{base}/auth/login"),
                    json!({"email": email(i % args.users), "password": PASSWORD}),
                )
            },
        )
        .await,
    );
    phases.push(
        run_batch(
            "login, unknown email",
            args.logins / 4,
            args.concurrency,
            deadline,
            |i| {
                let unknown = format!("nobody-{run_id}-{i}@loadtest.example");
                post(
                    &client,
                    format!("{base}/auth/login"),
                    json!({"email": unknown, "password": PASSWORD}),
                )
            },
        )
        .await,
    );

    let token = login(&client, &base, &email(0)).await?;
    phases.push(
        run_batch(
            "GET /members/me (verify+deny+db)",
            args.reads,
            args.concurrency,
            deadline,
            |_| {
                let request = client.get(format!("{base}/members/me")).bearer_auth(&token);
                async move { request.send().await.map_or(0, |r| r.status().as_u16()) }
            },
        )
        .await,
    );

    // Verification emails: each answer waits only for JetStream's ack of the email job (the
    // workers send it later). At most 4 per buyer, under member-api's 5 per hour.
    let sample = args.users.min(100);
    let emails: Vec<String> = (0..sample).map(email).collect();
    let tokens =
        futures::future::try_join_all(emails.iter().map(|e| login(&client, &base, e))).await?;
    phases.push(
        run_batch(
            "POST /members/me/verification-email",
            sample * 4,
            args.concurrency,
            deadline,
            |i| {
                let request = client
                    .post(format!("{base}/members/me/verification-email"))
                    .bearer_auth(&tokens[i % sample]);
                async move { request.send().await.map_or(0, |r| r.status().as_u16()) }
            },
        )
        .await,
    );

    let verifier = JwtVerifier::from_args(&args.jwt)?;
    let started = Instant::now();
    for _ in 0..args.verifies {
        if verifier.verify(&token).is_err() {
            bail!(
                "the token from {base} does not verify with {}",
                args.jwt.jwt_public_key.display()
            );
        }
    }
    let verify_us = started.elapsed().as_secs_f64() * 1e6 / f64::from(args.verifies.max(1));

    print_table(&phases);
    println!(
        "EdDSA access-token verify, in process: {verify_us:.1} µs ({} runs)",
        args.verifies
    );
    let report = Report { phases, verify_us };
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

async fn post(client: &reqwest::Client, url: String, body: Value) -> u16 {
    client
        .post(url)
        .json(&body)
        .send()
        .await
        .map_or(0, |r| r.status().as_u16())
}

async fn login(client: &reqwest::Client, base: &str, email: &str) -> anyhow::Result<String> {
    let response = client
        .post(format!("{base}/auth/login"))
        .json(&json!({"email": email, "password": PASSWORD}))
        .send()
        .await
        .context("logging in")?;
    if !response.status().is_success() {
        bail!("login failed with {}", response.status());
    }
    let body: Value = response.json().await?;
    body["access_token"]
        .as_str()
        .map(str::to_owned)
        .context("no access_token in the login answer")
}
