//! The real services on their own ports: member-api, catalog-api and admission (whose gateway
//! forwards to the other two), and the workers when a test wants them, against a database,
//! key prefix and streams of the test's own.

use std::path::PathBuf;

use clap::Parser;
use flash_core::testing::Isolation;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The admin member-api creates at start-up.
pub(crate) const ADMIN: (&str, &str) = ("admin@browser.test", "admin password 123");

/// member-api, catalog-api and admission on their own ports (the workers start later, when a
/// test wants them).
pub(crate) struct Services {
    pub(crate) iso: Isolation,
    pub(crate) members: String,
    pub(crate) catalog: String,
    pub(crate) door: String,
    mail_dir: PathBuf,
    shutdown: CancellationToken,
}

impl Services {
    pub(crate) async fn start(db: &PgPool) -> Self {
        Self::start_with(db, |_| {}, |_| {}).await
    }

    /// [`Self::start`], with member-api's and the door's settings tweaked first.
    pub(crate) async fn start_with(
        db: &PgPool,
        tweak_members: impl FnOnce(&mut member_api::Config),
        tweak_door: impl FnOnce(&mut admission::Config),
    ) -> Self {
        let iso = Isolation::new();
        // Each service's socket is bound here and kept until it serves on it: they must know
        // each other's addresses before any of them starts.
        let (members_socket, members) = flash_core::testing::listener();
        let (catalog_socket, catalog) = flash_core::testing::listener();
        let (door_socket, door) = flash_core::testing::listener();
        let catalog_origin = format!("http://{catalog}");
        let shutdown = CancellationToken::new();

        let mut member_config = member_api::Config::parse_from(["member-api"]);
        member_config.addr = members;
        member_config.http.listener = Some(members_socket);
        member_config.redis = iso.redis.clone();
        member_config.nats = iso.nats.clone();
        member_config.jwt.jwt_public_key = iso.public_key_path();
        member_config.jwt_private_key = iso.private_key_path();
        member_config.admin_email = Some(ADMIN.0.into());
        member_config.admin_password = Some(ADMIN.1.into());
        member_config.order_history.catalog_url = catalog_origin.clone();
        // Only the admin console (catalog-api's page) calls member-api from another origin; the
        // waiting room goes through the door's gateway.
        member_config.http.cors_allowed_origins = vec![catalog_origin.clone()];
        // As deployed: member-api sits behind the door, whose `X-Forwarded-For` names the
        // buyer.
        member_config.client_address.client_address_header = Some("x-forwarded-for".into());
        member_config.client_address.trusted_proxies = vec!["127.0.0.1".into()];
        tweak_members(&mut member_config);
        let member_app = member_api::App::build_with(member_config, db.clone(), shutdown.clone())
            .await
            .unwrap();
        tokio::spawn(member_app.run());

        let mut catalog_config = catalog_api::Config::parse_from(["catalog-api"]);
        catalog_config.addr = catalog;
        catalog_config.http.listener = Some(catalog_socket);
        catalog_config.redis = iso.redis.clone();
        catalog_config.jwt.jwt_public_key = iso.public_key_path();
        catalog_config.http.cors_allowed_origins = vec![];
        catalog_config.member_public_url = format!("http://{members}");
        let catalog_app =
            catalog_api::App::build_with(catalog_config, db.clone(), shutdown.clone())
                .await
                .unwrap();
        tokio::spawn(catalog_app.run());

        let door_origin = format!("http://{door}");
        let mut door_config = admission::Config::parse_from(["admission"]);
        door_config.addr = door;
        door_config.http.listener = Some(door_socket);
        door_config.redis = iso.redis.clone();
        door_config.nats = iso.nats.clone();
        door_config.jwt.jwt_public_key = iso.public_key_path();
        door_config.gateway.member_upstream_url = format!("http://{members}");
        door_config.gateway.catalog_upstream_url = catalog_origin.clone();
        tweak_door(&mut door_config);
        let door_app = admission::App::build_with(door_config, db.clone(), shutdown.clone())
            .await
            .unwrap();
        tokio::spawn(door_app.run());
        Self {
            iso,
            members: format!("http://{members}"),
            catalog: catalog_origin,
            door: door_origin,
            mail_dir: std::env::temp_dir().join(format!("stack-mail-{}", Uuid::new_v4())),
            shutdown,
        }
    }

    pub(crate) async fn start_workers(&self, db: &PgPool) {
        let mut worker_config = workers::Config::parse_from(["workers"]);
        worker_config.addr = "127.0.0.1:0".parse().unwrap();
        worker_config.redis = self.iso.redis.clone();
        worker_config.nats = self.iso.nats.clone();
        worker_config.mail_dir = self.mail_dir.clone();
        // Every charge goes through: the pages' outcomes are not left to the simulated
        // provider's random declines.
        worker_config.payment_decline_rate = 0.0;
        worker_config.payment_transient_rate = 0.0;
        let worker_app = workers::App::build_with(worker_config, db.clone(), self.shutdown.clone())
            .await
            .unwrap();
        tokio::spawn(worker_app.run());
    }

    pub(crate) async fn admin_token(&self, client: &reqwest::Client) -> String {
        let login: Value = client
            .post(format!("{}/auth/login", self.members))
            .json(&json!({"email": ADMIN.0, "password": ADMIN.1}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        login["access_token"].as_str().unwrap().to_owned()
    }

    /// A product and a sale of `quantity` units opening `starts_in` from now, asking each
    /// entry for a proof of work of `pow_bits`.
    pub(crate) async fn sale(
        &self,
        client: &reqwest::Client,
        admin: &str,
        quantity: i64,
        starts_in: chrono::Duration,
        pow_bits: u32,
    ) -> Uuid {
        let product: Value = client
            .post(format!("{}/products", self.catalog))
            .bearer_auth(admin)
            .json(&json!({"sku": format!("BROWSER-{}", Uuid::new_v4()), "name": "Sneaker", "price_cents": 12900, "currency": "EUR", "stock": quantity}))
            .send().await.unwrap().json().await.unwrap();
        let starts = chrono::Utc::now() + starts_in;
        let sale: Value = client
            .post(format!("{}/flash-sales", self.catalog))
            .bearer_auth(admin)
            .json(&json!({"product_id": product["id"], "price_cents": 9900, "quantity": quantity, "per_member_limit": 1,
                          "starts_at": starts, "ends_at": starts + chrono::Duration::hours(1), "pow_bits": pow_bits}))
            .send().await.unwrap().json().await.unwrap();
        sale["id"].as_str().unwrap().parse().unwrap()
    }

    pub(crate) async fn stop(self) {
        self.shutdown.cancel();
        self.iso.cleanup().await;
        let _ = std::fs::remove_dir_all(&self.mail_dir);
    }
}
