//! A per-test database, Redis prefix and NATS streams, a sale, and tickets published like the
//! front door publishes them.

use std::time::Duration;

use async_nats::jetstream;
use flash_core::{
    domain::MemberId, jobs::TicketMessage, nats::Subjects, redis_model::Keys, testing::Isolation,
};
use sqlx::PgPool;
use uuid::Uuid;
use workers::{
    Delivery, DrainOutcome, DrainSettings, Drainer, Emails, Payments, Reconciler, Relay,
    SimulatedProvider,
};

pub(crate) struct Env {
    pub(crate) db: PgPool,
    pub(crate) iso: Isolation,
    pub(crate) redis: flash_core::redis::Redis,
    pub(crate) keys: Keys,
    pub(crate) js: jetstream::Context,
    pub(crate) stream: jetstream::stream::Stream,
    pub(crate) sale: Uuid,
}

impl Env {
    /// A sale of `quantity` units (one per member) that is live now.
    pub(crate) async fn new(db: PgPool, quantity: i32, per_member_limit: i32) -> Self {
        let iso = Isolation::new();
        let redis = flash_core::redis::connect(&iso.redis).await.unwrap();
        let keys = Keys::new(&iso.redis.redis_key_prefix);
        let nats = flash_core::nats::connect(&iso.nats, "test").await.unwrap();
        let js = flash_core::nats::jetstream(nats, &iso.nats);
        let stream = flash_core::nats::ensure_flash_queue(&js, &iso.nats)
            .await
            .unwrap();
        let product = Uuid::new_v4();
        let sale = Uuid::now_v7();
        sqlx::query("insert into products (product_id, sku, name, price_cents, currency, stock) values ($1, 'S', 'P', 100, 'EUR', 0)")
            .bind(product).execute(&db).await.unwrap();
        sqlx::query(
            "insert into flash_sales (flash_sale_id, product_id, price_cents, currency, quantity, quantity_left, per_member_limit, starts_at, ends_at)
             values ($1, $2, 4900, 'EUR', $3, $3, $4, now() - interval '1 minute', now() + interval '1 hour')",
        )
        .bind(sale).bind(product).bind(quantity).bind(per_member_limit).execute(&db).await.unwrap();
        Self {
            db,
            iso,
            redis,
            keys,
            js,
            stream,
            sale,
        }
    }

    pub(crate) async fn drainer(&self) -> Drainer {
        let settings = DrainSettings {
            batch_size: 64,
            fetch_wait: Duration::from_millis(100),
        };
        let subjects = Subjects::new(&self.iso.nats.nats_subject_prefix);
        Drainer::new(
            self.db.clone(),
            self.redis.clone(),
            self.keys.clone(),
            self.js.clone(),
            subjects,
            &self.stream,
            settings,
        )
    }

    pub(crate) async fn relay(&self) -> Relay {
        flash_core::nats::ensure_jobs_stream(&self.js, &self.iso.nats)
            .await
            .unwrap();
        flash_core::nats::ensure_events_stream(&self.js, &self.iso.nats)
            .await
            .unwrap();
        Relay::new(
            self.db.clone(),
            self.js.clone(),
            &self.iso.nats.nats_subject_prefix,
        )
    }

    /// A payment worker with a simulated provider failing as told.
    pub(crate) async fn payments(
        &self,
        decline_rate: f64,
        transient_rate: f64,
        max_attempts: i64,
    ) -> Payments<SimulatedProvider> {
        flash_core::nats::ensure_jobs_stream(&self.js, &self.iso.nats)
            .await
            .unwrap();
        let jobs = self
            .js
            .get_stream(&self.iso.nats.nats_jobs_stream)
            .await
            .unwrap();
        let provider = SimulatedProvider::new(Duration::ZERO, decline_rate, transient_rate);
        Payments::new(
            self.db.clone(),
            self.redis.clone(),
            self.keys.clone(),
            &jobs,
            &self.iso.nats.nats_subject_prefix,
            provider,
            max_attempts,
        )
        .await
        .unwrap()
    }

    /// An email worker delivering through `delivery`.
    pub(crate) async fn emails(&self, delivery: Delivery, max_attempts: i64) -> Emails {
        flash_core::nats::ensure_jobs_stream(&self.js, &self.iso.nats)
            .await
            .unwrap();
        let jobs = self
            .js
            .get_stream(&self.iso.nats.nats_jobs_stream)
            .await
            .unwrap();
        Emails::new(
            self.db.clone(),
            &jobs,
            &self.iso.nats.nats_subject_prefix,
            delivery,
            "Shop <shop@test>",
            max_attempts,
        )
        .await
        .unwrap()
    }

    /// Messages in this test's jobs stream.
    pub(crate) async fn jobs_in_stream(&self) -> u64 {
        let mut stream = self
            .js
            .get_stream(&self.iso.nats.nats_jobs_stream)
            .await
            .unwrap();
        stream.info().await.unwrap().state.messages
    }

    pub(crate) fn reconciler(&self) -> Reconciler {
        Reconciler::new(
            self.db.clone(),
            self.redis.clone(),
            self.keys.clone(),
            self.stream.clone(),
            self.js.clone(),
            Subjects::new(&self.iso.nats.nats_subject_prefix),
        )
    }

    /// A member who can hold orders.
    pub(crate) async fn member(&self) -> MemberId {
        let id = MemberId::new();
        sqlx::query(
            "insert into members (member_id, email, password_hash, name) values ($1, $2, 'x', 'M')",
        )
        .bind(id)
        .bind(format!("{id}@example.com"))
        .execute(&self.db)
        .await
        .unwrap();
        id
    }

    /// Queues a ticket as the door does (Redis ticket `queued`, then the message); `msg_id`
    /// defaults to the ticket id.
    pub(crate) async fn queue(
        &self,
        member: MemberId,
        seq: i64,
        ticket: Uuid,
        msg_id: Option<&str>,
    ) {
        let key = self.keys.ticket(self.sale, ticket);
        let _: () = redis::AsyncCommands::hset_multiple(
            &mut self.redis.clone(),
            &key,
            &[
                ("member", member.to_string()),
                ("status", "queued".into()),
                ("seq", seq.to_string()),
            ],
        )
        .await
        .unwrap();
        self.publish(member, seq, ticket, msg_id).await;
    }

    /// Publishes a ticket's message and nothing else, as the door does when a buyer re-enters
    /// with a ticket still `queued`.
    pub(crate) async fn publish(
        &self,
        member: MemberId,
        seq: i64,
        ticket: Uuid,
        msg_id: Option<&str>,
    ) {
        let message = TicketMessage {
            ticket_id: ticket.into(),
            sale_id: self.sale.into(),
            member_id: member,
            seq,
            admitted_at_ms: 0,
        };
        flash_core::nats::publish_durably(
            &self.js,
            Subjects::new(&self.iso.nats.nats_subject_prefix).flash_tickets(self.sale),
            msg_id.unwrap_or(&ticket.to_string()),
            serde_json::to_vec(&message).unwrap().into(),
            None,
        )
        .await
        .unwrap();
    }

    /// Holds or releases the sale, and sets its outflow, as catalog-api does.
    pub(crate) async fn control(&self, paused: bool, outflow_per_sec: u32) {
        let meta = flash_core::redis_model::sale_gate::SaleMeta {
            paused,
            outflow_per_sec,
            ..flash_core::redis_model::sale_gate::SaleMeta::open(
                chrono::Utc::now() - chrono::Duration::minutes(1),
                chrono::Utc::now() + chrono::Duration::hours(1),
                1,
            )
        };
        flash_core::redis_model::sale_gate::write_meta(&self.redis, &self.keys, self.sale, &meta)
            .await
            .unwrap();
    }

    /// Arms the sale's gate with `units`, open from a minute ago for an hour (as catalog-api
    /// does when it creates a sale).
    pub(crate) async fn arm(&self, units: i64) {
        flash_core::redis_model::sale_gate::arm(
            &self.redis,
            &self.keys,
            self.sale,
            units,
            &flash_core::redis_model::sale_gate::SaleMeta::open(
                chrono::Utc::now() - chrono::Duration::minutes(1),
                chrono::Utc::now() + chrono::Duration::hours(1),
                1,
            ),
            flash_core::redis_model::sale_gate::Arm::IfAbsent,
        )
        .await
        .unwrap();
    }

    /// The units the sale's gate holds.
    pub(crate) async fn gate(&self) -> i64 {
        redis::AsyncCommands::get(&mut self.redis.clone(), self.keys.sale_gate(self.sale))
            .await
            .unwrap()
    }

    /// Runs the drain until the queue is empty; returns the tickets processed.
    pub(crate) async fn drain_all(&self, drainer: &Drainer) -> usize {
        let mut total = 0;
        for _ in 0..100 {
            match drainer.drain_once().await.unwrap() {
                DrainOutcome::Processed(n) => total += n,
                DrainOutcome::Empty => return total,
            }
        }
        panic!("the queue never emptied");
    }

    pub(crate) async fn status(&self, ticket: Uuid) -> (String, Option<String>) {
        let mut redis = self.redis.clone();
        let key = self.keys.ticket(self.sale, ticket);
        let status: String = redis::AsyncCommands::hget(&mut redis, &key, "status")
            .await
            .unwrap();
        let order: Option<String> = redis::AsyncCommands::hget(&mut redis, &key, "order_id")
            .await
            .unwrap();
        (status, order)
    }

    pub(crate) async fn quantity_left(&self) -> i32 {
        sqlx::query_scalar("select quantity_left from flash_sales where flash_sale_id = $1")
            .bind(self.sale)
            .fetch_one(&self.db)
            .await
            .unwrap()
    }

    pub(crate) async fn orders(&self) -> i64 {
        sqlx::query_scalar("select count(*) from orders where flash_sale_id = $1")
            .bind(self.sale)
            .fetch_one(&self.db)
            .await
            .unwrap()
    }

    pub(crate) async fn cleanup(self) {
        self.iso.cleanup().await;
    }
}
