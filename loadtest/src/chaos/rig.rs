//! What a chaos run stands on: its own `redis-server` and `nats-server` on free ports, its own
//! database on the PostgreSQL server, proxies in front of NATS and PostgreSQL that can cut them
//! off, a fresh JWT key pair, and the three services of the flash-sale path as real processes
//! (the binaries in `--bin-dir`) that it can SIGKILL and start again.
//!
//! It starts every process it kills and stops every process it starts (by its own handle, so by
//! PID); it never touches a server it did not start. The shared PostgreSQL server is only ever
//! cut off through the proxy, and the run's database is dropped at the end.

use std::{
    fs::OpenOptions,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use flash_core::{
    auth::keys::{JwtSigner, KeyPair},
    config::{PgArgs, RedisArgs},
    redis_model::Keys,
    testing::{Proxy, find_program, free_port},
};
use reqwest::Url;
use sqlx::PgPool;
use tokio::process::{Child, Command};
use uuid::Uuid;

/// How long a server or service may take to answer after it was started.
const READY_WITHIN: Duration = Duration::from_secs(60);

/// What tells that a started process is ready.
#[derive(Clone)]
enum Ready {
    /// This URL answers 2xx.
    Http(String),
    /// This address accepts connections.
    Tcp(SocketAddr),
}

impl Ready {
    async fn answers(&self, http: &reqwest::Client) -> bool {
        match self {
            Self::Http(url) => http
                .get(url)
                .send()
                .await
                .is_ok_and(|a| a.status().is_success()),
            Self::Tcp(addr) => tokio::net::TcpStream::connect(addr).await.is_ok(),
        }
    }
}

/// The claims the services are told to expect and the run's tokens carry.
const JWT_ISSUER: &str = "flash-member-api";
const JWT_AUDIENCE: &str = "flash";
/// The services' Redis key prefix (their default, set explicitly).
const KEY_PREFIX: &str = "flash:";

/// How to start one process, again and again.
#[derive(Clone)]
struct Spec {
    name: &'static str,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
    ready: Ready,
}

/// A process this run started: killed with SIGKILL on purpose, or when dropped.
pub(crate) struct Process {
    spec: Spec,
    child: Child,
}

impl Process {
    /// Starts the process and waits until it is ready.
    async fn start(spec: Spec, http: &reqwest::Client) -> anyhow::Result<Self> {
        let child = spawn(&spec)?;
        let mut process = Self { spec, child };
        process.wait_ready(http).await?;
        Ok(process)
    }

    /// Its PID, while it runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// SIGKILL, no clean shutdown; returns once it is gone.
    pub(crate) async fn kill(&mut self) -> anyhow::Result<()> {
        self.child
            .kill()
            .await
            .with_context(|| format!("killing {}", self.spec.name))
    }

    /// Starts it again (it must have been killed) and waits until it is ready.
    pub(crate) async fn restart(&mut self, http: &reqwest::Client) -> anyhow::Result<()> {
        self.child = spawn(&self.spec)?;
        self.wait_ready(http).await
    }

    /// Starts it again when it exited (a row that failed half-way leaves nothing down for the
    /// next).
    async fn ensure_running(&mut self, http: &reqwest::Client) -> anyhow::Result<()> {
        if self.child.try_wait()?.is_some() {
            self.restart(http).await?;
        }
        Ok(())
    }

    async fn wait_ready(&mut self, http: &reqwest::Client) -> anyhow::Result<()> {
        let give_up = Instant::now() + READY_WITHIN;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited ({status}) before it was ready; see {}",
                    self.spec.name,
                    self.spec.log.display()
                );
            }
            if self.spec.ready.answers(http).await {
                return Ok(());
            }
            if Instant::now() >= give_up {
                bail!(
                    "{} was not ready within {READY_WITHIN:?}; see {}",
                    self.spec.name,
                    self.spec.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn spawn(spec: &Spec) -> anyhow::Result<Child> {
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.log)
        .with_context(|| format!("opening {}", spec.log.display()))?;
    // Only what the spec says (and PATH): settings in the caller's environment, such as a
    // REDIS_KEY_PREFIX or an OPS_ADDR, must not leak into the run's processes.
    Command::new(&spec.program)
        .args(&spec.args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", spec.program.display()))
}

/// A free loopback port. The process it is for binds it a moment later (a child process
/// cannot be handed a bound socket here), so another program could take it in between; the
/// process then fails to start and the run says so.
/// Where the run finds its parts.
pub(crate) struct Setup<'a> {
    /// Folder holding the `admission`, `workers` and `catalog-api` binaries.
    pub(crate) bin_dir: &'a Path,
    /// The PostgreSQL server (any database on it): the run makes its own database there.
    pub(crate) database_url: &'a str,
    /// Logs, the NATS store, keys and mail go here.
    pub(crate) work_dir: &'a Path,
}

/// What the spike and the checks read directly (never through a proxy).
pub(crate) struct Stores {
    /// The run's database.
    pub(crate) db: PgPool,
    /// The run's Redis.
    pub(crate) redis: flash_core::redis::Redis,
    /// The services' key names (default prefix).
    pub(crate) keys: Keys,
    /// Mints tokens the services accept.
    pub(crate) signer: JwtSigner,
    /// The door's base URL.
    pub(crate) door_url: String,
    /// catalog-api's base URL.
    pub(crate) catalog_url: String,
}

/// The processes and proxies a fault acts on.
pub(crate) struct Parts {
    pub(crate) door: Process,
    pub(crate) catalog: Process,
    pub(crate) worker: Process,
    pub(crate) nats_proxy: Proxy,
    pub(crate) pg_proxy: Proxy,
    pub(crate) http: reqwest::Client,
    // Declared after the services so that they are dropped (killed) first.
    redis_server: Process,
    nats_server: Process,
}

impl Parts {
    /// Every process running, every proxy forwarding: the state each row starts from.
    pub(crate) async fn ensure_running(&mut self) -> anyhow::Result<()> {
        self.nats_proxy.restore();
        self.pg_proxy.restore();
        for process in [
            &mut self.redis_server,
            &mut self.nats_server,
            &mut self.catalog,
            &mut self.door,
            &mut self.worker,
        ] {
            process.ensure_running(&self.http).await?;
        }
        Ok(())
    }

    /// Each process's name and PID, for the log.
    pub(crate) fn pids(&self) -> Vec<(&'static str, Option<u32>)> {
        [
            &self.redis_server,
            &self.nats_server,
            &self.catalog,
            &self.door,
            &self.worker,
        ]
        .into_iter()
        .map(|p| (p.spec.name, p.pid()))
        .collect()
    }
}

/// A chaos run's servers, database and services.
pub(crate) struct Rig {
    pub(crate) stores: Stores,
    pub(crate) parts: Parts,
    /// The PostgreSQL server's own database, to drop the run's database from.
    admin_url: String,
    database: String,
}

impl Rig {
    /// Starts everything; returns once every service is ready.
    ///
    /// # Errors
    /// When a binary is missing, a server does not start, or a service is not ready in time.
    pub(crate) async fn start(setup: &Setup<'_>) -> anyhow::Result<Self> {
        let logs = setup.work_dir.join("logs");
        std::fs::create_dir_all(&logs)?;
        for bin in ["admission", "workers", "catalog-api"] {
            let path = setup.bin_dir.join(bin);
            anyhow::ensure!(
                path.is_file(),
                "{} not found: build the services first (cargo build --release --bins) or point --bin-dir at them",
                path.display()
            );
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;

        let redis_port = free_port()?;
        let redis_server = Process::start(
            Spec {
                name: "redis-server",
                program: find_program("redis-server"),
                args: [
                    "--port",
                    &redis_port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ]
                .map(str::to_owned)
                .to_vec(),
                env: Vec::new(),
                log: logs.join("redis-server.log"),
                ready: Ready::Tcp(SocketAddr::from(([127, 0, 0, 1], redis_port))),
            },
            &http,
        )
        .await?;
        let redis_url = format!("redis://127.0.0.1:{redis_port}");

        let (nats_port, monitor_port) = (free_port()?, free_port()?);
        let nats_store = setup.work_dir.join("nats");
        let nats_server = Process::start(
            Spec {
                name: "nats-server",
                program: find_program("nats-server"),
                args: vec![
                    "-a".into(),
                    "127.0.0.1".into(),
                    "-p".into(),
                    nats_port.to_string(),
                    "-m".into(),
                    monitor_port.to_string(),
                    "-js".into(),
                    "-sd".into(),
                    nats_store.display().to_string(),
                    "--server_name".into(),
                    "chaos".into(),
                ],
                env: Vec::new(),
                log: logs.join("nats-server.log"),
                ready: Ready::Http(format!("http://127.0.0.1:{monitor_port}/healthz")),
            },
            &http,
        )
        .await?;
        let nats_proxy = Proxy::start(SocketAddr::from(([127, 0, 0, 1], nats_port))).await?;

        let database = format!("chaos_{}", Uuid::new_v4().simple());
        let admin = PgPool::connect(setup.database_url)
            .await
            .with_context(|| "connecting to PostgreSQL (DATABASE_URL)")?;
        sqlx::query(sqlx::AssertSqlSafe(format!("create database {database}")))
            .execute(&admin)
            .await?;
        admin.close().await;
        let server = Url::parse(setup.database_url).context("DATABASE_URL is not a URL")?;
        let pg_addr = tokio::net::lookup_host((
            server.host_str().unwrap_or("127.0.0.1"),
            server.port().unwrap_or(5432),
        ))
        .await?
        .next()
        .context("no address for DATABASE_URL's host")?;
        let pg_proxy = Proxy::start(pg_addr).await?;
        let direct_url = with_database(&server, &database, None);
        let proxied_url = with_database(&server, &database, Some(pg_proxy.addr()));

        let keys = KeyPair::generate()?;
        let key_dir = setup.work_dir.join("keys");
        std::fs::create_dir_all(&key_dir)?;
        let public_key = key_dir.join("public.pem");
        std::fs::write(&public_key, &keys.public_pem)?;
        let mail_dir = setup.work_dir.join("mail");

        let common = |addr_var: &str, addr: SocketAddr| {
            vec![
                (addr_var.to_owned(), addr.to_string()),
                ("DATABASE_URL".to_owned(), proxied_url.clone()),
                ("REDIS_URL".to_owned(), redis_url.clone()),
                (
                    "NATS_URL".to_owned(),
                    format!("nats://{}", nats_proxy.addr()),
                ),
                (
                    "JWT_PUBLIC_KEY".to_owned(),
                    public_key.display().to_string(),
                ),
                ("JWT_ISSUER".to_owned(), JWT_ISSUER.to_owned()),
                ("JWT_AUDIENCE".to_owned(), JWT_AUDIENCE.to_owned()),
                ("REDIS_KEY_PREFIX".to_owned(), KEY_PREFIX.to_owned()),
                ("RUST_LOG".to_owned(), "info".to_owned()),
            ]
        };
        let service = |name: &'static str, addr_var: &str, extra: Vec<(String, String)>| {
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
            let mut env = common(addr_var, addr);
            env.extend(extra);
            anyhow::Ok((
                Spec {
                    name,
                    program: setup.bin_dir.join(name),
                    args: Vec::new(),
                    env,
                    log: logs.join(format!("{name}.log")),
                    ready: Ready::Http(format!("http://{addr}/readyz")),
                },
                format!("http://{addr}"),
            ))
        };
        // catalog-api first: it migrates the new database before the others connect.
        let (catalog_spec, catalog_url) = service("catalog-api", "CATALOG_ADDR", Vec::new())?;
        let catalog = Process::start(catalog_spec, &http).await?;
        let (door_spec, door_url) = service("admission", "ADMISSION_ADDR", Vec::new())?;
        let door = Process::start(door_spec, &http).await?;
        let (worker_spec, _) = service(
            "workers",
            "WORKERS_ADDR",
            vec![("MAIL_DIR".to_owned(), mail_dir.display().to_string())],
        )?;
        let worker = Process::start(worker_spec, &http).await?;

        let db = flash_core::db::connect(&pg_args(&direct_url)).await?;
        let redis = flash_core::redis::connect(&redis_args(&redis_url)).await?;
        let signer =
            JwtSigner::from_pem(keys.private_pem.as_bytes(), JWT_ISSUER, JWT_AUDIENCE, 3600)?;
        Ok(Self {
            stores: Stores {
                db,
                redis,
                keys: Keys::new(KEY_PREFIX),
                signer,
                door_url,
                catalog_url,
            },
            parts: Parts {
                door,
                catalog,
                worker,
                nats_proxy,
                pg_proxy,
                http,
                redis_server,
                nats_server,
            },
            admin_url: setup.database_url.to_owned(),
            database,
        })
    }

    /// Stops every process and drops the run's database.
    ///
    /// # Errors
    /// When the database cannot be dropped.
    pub(crate) async fn stop(self) -> anyhow::Result<()> {
        let Self {
            stores,
            parts,
            admin_url,
            database,
        } = self;
        stores.db.close().await;
        drop(stores);
        drop(parts);
        let admin = PgPool::connect(&admin_url).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "drop database if exists {database} with (force)"
        )))
        .execute(&admin)
        .await?;
        admin.close().await;
        Ok(())
    }
}

/// `server` pointed at `database`, and at `via` instead of its own host and port when given.
fn with_database(server: &Url, database: &str, via: Option<SocketAddr>) -> String {
    let mut url = server.clone();
    url.set_path(database);
    if let Some(via) = via {
        // Both only fail for URLs that cannot have a host, which a postgres:// URL has.
        let _ = url.set_ip_host(via.ip());
        let _ = url.set_port(Some(via.port()));
    }
    url.to_string()
}

#[derive(clap::Parser)]
struct StoreArgs {
    #[command(flatten)]
    pg: PgArgs,
    #[command(flatten)]
    redis: RedisArgs,
}

fn pg_args(url: &str) -> PgArgs {
    use clap::Parser as _;
    StoreArgs::parse_from(["chaos", "--database-url", url]).pg
}

fn redis_args(url: &str) -> RedisArgs {
    use clap::Parser as _;
    StoreArgs::parse_from([
        "chaos",
        "--redis-url",
        url,
        "--redis-key-prefix",
        KEY_PREFIX,
    ])
    .redis
}
