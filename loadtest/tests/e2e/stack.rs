//! The flash-sale path in-process: catalog-api, admission and workers on free ports.

use std::time::Duration;

use clap::Parser;
use flash_core::{auth::keys::JwtSigner, redis_model::Keys, testing::Isolation};
use loadtest::spike::{Plan, SpikeReport, run_with};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// One stack at a time: each runs every service and a spike, and several at once on two cores
/// would time each other out rather than test anything.
pub(crate) static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The three services of the flash-sale path, on free ports.
pub(crate) struct Stack {
    pub(crate) iso: Isolation,
    pub(crate) keys: Keys,
    pub(crate) signer: JwtSigner,
    pub(crate) redis: flash_core::redis::Redis,
    pub(crate) door: String,
    /// A second admission process on the same servers, as in a scaled-out deployment.
    pub(crate) second_door: String,
    pub(crate) catalog: String,
    mail_dir: std::path::PathBuf,
    shutdown: CancellationToken,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

impl Stack {
    /// The stack with the workers' simulated payment provider declining `decline_rate` of
    /// charges.
    pub(crate) async fn start(db: &PgPool, decline_rate: f64) -> Self {
        let turn = TURN.lock().await;
        let iso = Isolation::new();
        let shutdown = CancellationToken::new();
        // Each socket is bound here and kept until its service serves on it.
        let (door_socket, door) = flash_core::testing::listener();
        let (second_socket, second_door) = flash_core::testing::listener();
        let (catalog_socket, catalog) = flash_core::testing::listener();

        let mut catalog_config = catalog_api::Config::parse_from(["catalog-api"]);
        catalog_config.addr = catalog;
        catalog_config.http.listener = Some(catalog_socket);
        catalog_config.redis = iso.redis.clone();
        catalog_config.jwt.jwt_public_key = iso.public_key_path();
        let signer = JwtSigner::from_pem(
            &std::fs::read(iso.private_key_path()).unwrap(),
            &catalog_config.jwt.jwt_issuer,
            &catalog_config.jwt.jwt_audience,
            3600,
        )
        .unwrap();
        let app = catalog_api::App::build_with(catalog_config, db.clone(), shutdown.clone())
            .await
            .unwrap();
        tokio::spawn(app.run());

        for (socket, addr) in [(door_socket, door), (second_socket, second_door)] {
            let mut door_config = admission::Config::parse_from(["admission"]);
            door_config.addr = addr;
            door_config.http.listener = Some(socket);
            door_config.redis = iso.redis.clone();
            door_config.nats = iso.nats.clone();
            door_config.jwt.jwt_public_key = iso.public_key_path();
            let app = admission::App::build_with(door_config, db.clone(), shutdown.clone())
                .await
                .unwrap();
            tokio::spawn(app.run());
        }

        let mail_dir = std::env::temp_dir().join(format!("loadtest-mail-{}", Uuid::new_v4()));
        let mut worker_config = workers::Config::parse_from(["workers"]);
        worker_config.addr = "127.0.0.1:0".parse().unwrap();
        worker_config.redis = iso.redis.clone();
        worker_config.nats = iso.nats.clone();
        worker_config.mail_dir = mail_dir.clone();
        worker_config.payment_decline_rate = decline_rate;
        let app = workers::App::build_with(worker_config, db.clone(), shutdown.clone())
            .await
            .unwrap();
        tokio::spawn(app.run());

        let redis = flash_core::redis::connect(&iso.redis).await.unwrap();
        Self {
            keys: Keys::new(&iso.redis.redis_key_prefix),
            iso,
            signer,
            redis,
            door: format!("http://{door}"),
            second_door: format!("http://{second_door}"),
            catalog: format!("http://{catalog}"),
            mail_dir,
            shutdown,
            _turn: turn,
        }
    }

    pub(crate) fn plan(&self, buyers: usize, units: i64) -> Plan {
        Plan {
            admission_url: self.door.clone(),
            catalog_url: self.catalog.clone(),
            buyers,
            units,
            connections: 64,
            start_in: Duration::from_secs(2),
            ramp: Duration::ZERO,
            long_poll_secs: 2,
            timeout: Duration::from_secs(60),
            settle_timeout: Duration::from_secs(30),
            baseline: false,
            prequeue: false,
            arrive: true,
            progress: false,
        }
    }

    pub(crate) async fn spike(&self, db: &PgPool, plan: &Plan) -> SpikeReport {
        run_with(db, &self.redis, &self.keys, &self.signer, plan)
            .await
            .unwrap()
    }

    pub(crate) async fn stop(self) {
        self.shutdown.cancel();
        self.iso.cleanup().await;
        let _ = std::fs::remove_dir_all(&self.mail_dir);
    }
}
