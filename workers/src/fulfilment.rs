//! The fulfilment scheduler: the counterpart of the old system's batch jobs. Every pass moves
//! paid orders along `paid → preparing → shipped → delivered`, and returns along
//! `return_requested → returned` (restock and refund), each step once its delay has passed.
//!
//! Any number of worker processes may run it: each step claims its due orders with
//! `FOR UPDATE SKIP LOCKED` and changes their status with a guard on the old one, in one
//! transaction with the step's email (and, for a return, the restock and the refund job). An
//! order is therefore advanced once, and a crash before the commit leaves it to the next pass.
//! The order history's `(order_id, status)` key would refuse a second advance anyway.

use std::{future::Future, time::Duration};

use flash_core::redis::Redis;
use flash_core::{
    domain::{OrderId, OrderStatus},
    jobs::{EmailMessage, PaymentJob},
    outbox,
    redis_model::Keys,
    restock,
};
use sqlx::PgPool;

/// Why the carrier could not answer; the order stays where it is until the next pass.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("carrier unavailable: {0}")]
pub struct CarrierError(pub String);

/// A parcel carrier. Every call may be repeated for the same order (a pass that crashed before
/// committing asks again), so implementations must be idempotent per order.
pub trait Carrier: Send + Sync + 'static {
    /// Books the parcel of a prepared order and returns its tracking reference; booking the
    /// same order again returns the same reference.
    fn ship(&self, order: OrderId) -> impl Future<Output = Result<String, CarrierError>> + Send;
    /// Whether the parcel with this reference reached the buyer.
    fn delivered(&self, tracking: &str) -> impl Future<Output = Result<bool, CarrierError>> + Send;
    /// Whether the buyer's return parcel of `order` arrived back at the warehouse.
    fn return_arrived(
        &self,
        order: OrderId,
    ) -> impl Future<Output = Result<bool, CarrierError>> + Send;
}

/// A stand-in carrier for development and tests: it books at once (the reference is derived
/// from the order, so a repeated booking gets the same one), every parcel arrives by the time
/// it is asked, and it fails with the configured probability, as a real carrier's API does.
pub struct SimulatedCarrier {
    failure_rate: f64,
}

impl SimulatedCarrier {
    /// A carrier whose calls fail with probability `failure_rate` (0.0 to 1.0).
    pub fn new(failure_rate: f64) -> Self {
        Self { failure_rate }
    }

    fn answer<T>(&self, value: T) -> Result<T, CarrierError> {
        if rand::random::<f64>() < self.failure_rate {
            Err(CarrierError("simulated carrier outage".into()))
        } else {
            Ok(value)
        }
    }
}

impl Carrier for SimulatedCarrier {
    async fn ship(&self, order: OrderId) -> Result<String, CarrierError> {
        let simple = order.get().simple().to_string();
        self.answer(format!("SIM{}", &simple[simple.len() - 12..]).to_uppercase())
    }

    async fn delivered(&self, _tracking: &str) -> Result<bool, CarrierError> {
        self.answer(true)
    }

    async fn return_arrived(&self, _order: OrderId) -> Result<bool, CarrierError> {
        self.answer(true)
    }
}

/// How long an order rests in each state before the scheduler moves it on.
#[derive(Debug, Clone, Copy)]
pub struct FulfilmentSettings {
    /// `paid → preparing`.
    pub prepare_after: Duration,
    /// `preparing → shipped`.
    pub ship_after: Duration,
    /// `shipped → delivered` (asked of the carrier from then on).
    pub deliver_after: Duration,
    /// `return_requested → returned` (asked of the carrier from then on).
    pub return_after: Duration,
    /// Most orders one step claims per pass.
    pub batch_size: i64,
}

/// One move of the lifecycle.
#[derive(Debug, Clone, Copy)]
struct Step {
    from: OrderStatus,
    to: OrderStatus,
}

/// Every step, latest first, so an order moves at most one step per pass.
const STEPS: [Step; 4] = [
    Step {
        from: OrderStatus::ReturnRequested,
        to: OrderStatus::Returned,
    },
    Step {
        from: OrderStatus::Shipped,
        to: OrderStatus::Delivered,
    },
    Step {
        from: OrderStatus::Preparing,
        to: OrderStatus::Shipped,
    },
    Step {
        from: OrderStatus::Paid,
        to: OrderStatus::Preparing,
    },
];

/// What the carrier said about one due order.
enum Answer {
    /// Move it on (with the tracking reference, when shipping).
    Go(Option<String>),
    /// Not yet (the parcel is still travelling, or the carrier did not answer).
    Wait,
}

impl Answer {
    /// Go when the carrier says the parcel arrived, else wait.
    fn go_if(arrived: bool) -> Self {
        if arrived { Self::Go(None) } else { Self::Wait }
    }
}

/// Runs the fulfilment steps.
pub struct Fulfilment<C> {
    db: PgPool,
    redis: Redis,
    keys: Keys,
    carrier: C,
    settings: FulfilmentSettings,
}

impl<C: Carrier> Fulfilment<C> {
    /// A scheduler moving orders of `db` through `carrier`.
    pub fn new(
        db: PgPool,
        redis: Redis,
        keys: Keys,
        carrier: C,
        settings: FulfilmentSettings,
    ) -> Self {
        Self {
            db,
            redis,
            keys,
            carrier,
            settings,
        }
    }

    /// One pass over every step; returns how many orders moved.
    ///
    /// # Errors
    /// When PostgreSQL fails; nothing of the failed step is kept, and the next pass retries.
    pub async fn advance_once(&self) -> anyhow::Result<usize> {
        let mut moved = 0;
        for step in STEPS {
            moved += self.advance(step).await?;
        }
        Ok(moved)
    }

    fn delay(&self, from: OrderStatus) -> Duration {
        match from {
            OrderStatus::Paid => self.settings.prepare_after,
            OrderStatus::Preparing => self.settings.ship_after,
            OrderStatus::Shipped => self.settings.deliver_after,
            _ => self.settings.return_after,
        }
    }

    #[tracing::instrument(skip_all, fields(to = %step.to))]
    async fn advance(&self, step: Step) -> anyhow::Result<usize> {
        let mut tx = self.db.begin().await?;
        let due: Vec<(OrderId, Option<String>)> = sqlx::query_as(
            "select order_id, tracking_ref from orders
             where status = $1 and status_changed_at <= now() - make_interval(secs => $2)
             order by status_changed_at limit $3
             for update skip locked",
        )
        .bind(step.from.as_str())
        .bind(self.delay(step.from).as_secs_f64())
        .bind(self.settings.batch_size)
        .fetch_all(&mut *tx)
        .await?;
        if due.is_empty() {
            return Ok(0);
        }
        // The carrier is asked about every claimed order at once; its answers are idempotent.
        let answers = futures::future::join_all(
            due.iter()
                .map(|(order, tracking)| self.ask(step.to, *order, tracking.as_deref())),
        )
        .await;
        let mut moved = 0;
        let mut restocked = Vec::new();
        for ((order, _), answer) in due.iter().zip(answers) {
            let Answer::Go(tracking) = answer else {
                continue;
            };
            sqlx::query(
                "update orders set status = $3, tracking_ref = coalesce($4, tracking_ref)
                 where order_id = $1 and status = $2",
            )
            .bind(order)
            .bind(step.from.as_str())
            .bind(step.to.as_str())
            .bind(&tracking)
            .execute(&mut *tx)
            .await?;
            if step.to == OrderStatus::Returned {
                restocked.push(restock::give_back(&mut tx, *order).await?);
                let refund = PaymentJob::Refund { order_id: *order };
                outbox::enqueue(&mut tx, PaymentJob::SUBJECT, &refund).await?;
            }
            let status = step.to;
            outbox::email_buyer(&mut tx, *order, |o| EmailMessage::OrderProgress {
                order_id: o.order_id,
                status,
                tracking_ref: tracking.clone(),
            })
            .await?;
            moved += 1;
        }
        tx.commit().await?;
        metrics::counter!("flash_workers_fulfilment_total", "to" => step.to.as_str())
            .increment(moved as u64);
        for units in &restocked {
            restock::announce(&self.redis, &self.keys, units).await;
        }
        Ok(moved)
    }

    async fn ask(&self, to: OrderStatus, order: OrderId, tracking: Option<&str>) -> Answer {
        let answer = match (to, tracking) {
            (OrderStatus::Shipped, _) => {
                self.carrier.ship(order).await.map(|t| Answer::Go(Some(t)))
            }
            (OrderStatus::Delivered, Some(tracking)) => {
                self.carrier.delivered(tracking).await.map(Answer::go_if)
            }
            (OrderStatus::Delivered, None) => Err(CarrierError(
                "a shipped order without a tracking reference".into(),
            )),
            (OrderStatus::Returned, _) => {
                self.carrier.return_arrived(order).await.map(Answer::go_if)
            }
            _ => Ok(Answer::Go(None)),
        };
        answer.unwrap_or_else(|err| {
            tracing::warn!(error = %err, %order, %to, "carrier did not answer; the next pass asks again");
            Answer::Wait
        })
    }
}
