//! Payment jobs: charge each order at most once; a final failure cancels the order and gives
//! its units back exactly once.
//!
//! The provider sits behind [`PaymentProvider`]; the default is [`SimulatedProvider`], a
//! stand-in with configurable latency and failure rates (a real provider is an adapter behind
//! the same trait). The order id is the idempotency key sent to the provider, and `payments`
//! has one row per order, so a redelivered job never charges twice.

use std::{collections::HashMap, future::Future, sync::Mutex, time::Duration};

use async_nats::jetstream::{self, AckKind, consumer::PullConsumer};
use flash_core::redis::Redis;
use flash_core::{
    domain::OrderId,
    jobs::{EmailMessage, PaymentJob},
    outbox,
    redis_model::Keys,
    redis_model::tickets::{self, Settled},
    restock::{self, Restocked},
};
use rand::Rng;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::progress::in_progress;

/// Why a charge did not go through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChargeError {
    /// The provider said no (card declined, fraud check): retrying will not help.
    #[error("declined: {0}")]
    Declined(String),
    /// The provider could not answer (timeout, outage): retry later.
    #[error("transient failure: {0}")]
    Transient(String),
}

/// A payment provider. Implementations must treat `key` as an idempotency key: the same key
/// charged twice is charged once.
pub trait PaymentProvider: Send + Sync + 'static {
    /// Charges `amount_cents` and returns the provider's reference.
    fn charge(
        &self,
        key: &str,
        amount_cents: i64,
        currency: &str,
    ) -> impl Future<Output = Result<String, ChargeError>> + Send;
    /// Refunds the charge made under `key`.
    fn refund(&self, key: &str) -> impl Future<Output = Result<(), ChargeError>> + Send;
}

/// A stand-in provider for development and tests: it waits `latency`, then fails with the
/// configured probabilities, and remembers keys so a repeated charge is not charged again.
pub struct SimulatedProvider {
    latency: Duration,
    decline_rate: f64,
    transient_rate: f64,
    charges: Mutex<HashMap<String, String>>,
    refunds: Mutex<Vec<String>>,
}

impl SimulatedProvider {
    /// A provider with the given latency and failure probabilities (0.0 to 1.0).
    pub fn new(latency: Duration, decline_rate: f64, transient_rate: f64) -> Self {
        Self {
            latency,
            decline_rate,
            transient_rate,
            charges: Mutex::new(HashMap::new()),
            refunds: Mutex::new(Vec::new()),
        }
    }

    /// How many refunds were asked for, repeats included: a job that refunds twice shows here
    /// even though a real provider would book the second under the same key as a no-op.
    pub fn refunds_asked(&self) -> usize {
        self.refunds
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// How many distinct charges were made (what a bank statement would show).
    pub fn charges_made(&self) -> usize {
        self.charges
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }
}

impl PaymentProvider for SimulatedProvider {
    async fn charge(
        &self,
        key: &str,
        _amount_cents: i64,
        _currency: &str,
    ) -> Result<String, ChargeError> {
        tokio::time::sleep(self.latency).await;
        if let Some(reference) = self
            .charges
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(key)
        {
            return Ok(reference.clone());
        }
        let roll: f64 = rand::rng().random();
        if roll < self.transient_rate {
            return Err(ChargeError::Transient("simulated provider timeout".into()));
        }
        if roll < self.transient_rate + self.decline_rate {
            return Err(ChargeError::Declined("simulated decline".into()));
        }
        let reference = format!("sim_{}", Uuid::new_v4().simple());
        self.charges
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key.to_owned(), reference.clone());
        Ok(reference)
    }

    async fn refund(&self, key: &str) -> Result<(), ChargeError> {
        tokio::time::sleep(self.latency).await;
        self.refunds
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(key.to_owned());
        Ok(())
    }
}

/// A charge job of the current batch.
struct Charge {
    /// Its message's place in the batch.
    message: usize,
    order: OrderId,
    amount_cents: i64,
    currency: String,
    /// How often JetStream has delivered the job, this time included.
    delivered: i64,
}

/// Payment jobs taken at once. The batch's charges run concurrently, so the provider's latency
/// is paid once per batch: with 50 ms of it, 64 jobs a batch settled ~850 orders/s and 256 a
/// batch ~4× that, while the batch's two transactions grow only by rows.
const BATCH: usize = 256;

/// Name of the durable consumer of payment jobs.
const PAYMENTS_CONSUMER: &str = "payments";

/// Runs payment jobs.
pub struct Payments<P> {
    db: PgPool,
    redis: Redis,
    keys: Keys,
    consumer: PullConsumer,
    provider: P,
    max_attempts: i64,
}

impl<P: PaymentProvider> Payments<P> {
    /// Payment jobs from the jobs stream (consumer created if absent).
    ///
    /// # Errors
    /// When the consumer cannot be created.
    pub async fn new(
        db: PgPool,
        redis: Redis,
        keys: Keys,
        jobs: &jetstream::stream::Stream,
        subject_prefix: &str,
        provider: P,
        max_attempts: i64,
    ) -> anyhow::Result<Self> {
        let consumer = jobs
            .get_or_create_consumer(
                PAYMENTS_CONSUMER,
                jetstream::consumer::pull::Config {
                    durable_name: Some(PAYMENTS_CONSUMER.to_owned()),
                    filter_subject: format!("{subject_prefix}{}", PaymentJob::SUBJECT),
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    ack_wait: flash_core::nats::WORK_ACK_WAIT,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| anyhow::anyhow!("creating the payments consumer: {e}"))?;
        Ok(Self {
            db,
            redis,
            keys,
            consumer,
            provider,
            max_attempts,
        })
    }

    /// The provider, for tests that inspect it.
    pub fn provider(&self) -> &P {
        &self.provider
    }

    /// Runs one batch of payment jobs; returns how many were taken. The batch's charges cost a
    /// handful of statements in two transactions, however many orders it holds: one records
    /// the payments before the provider is asked, one settles every answer.
    ///
    /// # Errors
    /// When NATS fails; a job whose handling failed is redelivered.
    pub async fn run_once(&self) -> anyhow::Result<usize> {
        let messages =
            flash_core::nats::fetch_batch(&self.consumer, BATCH, Duration::from_millis(200))
                .await?;
        let mut charges = Vec::new();
        let mut refunds = Vec::new();
        for (i, message) in messages.iter().enumerate() {
            let delivered = message.info().map(|i| i.delivered).unwrap_or(1);
            match serde_json::from_slice(&message.payload) {
                Ok(PaymentJob::Charge {
                    order_id,
                    amount_cents,
                    currency,
                }) => charges.push(Charge {
                    message: i,
                    order: order_id,
                    amount_cents,
                    currency,
                    delivered,
                }),
                Ok(PaymentJob::Refund { order_id }) => refunds.push((i, order_id)),
                Err(err) => tracing::error!(error = %err, "unreadable payment job dropped"),
            }
        }
        let mut acks = vec![AckKind::Ack; messages.len()];
        let retry = AckKind::Nak(Some(Duration::from_millis(500)));
        match in_progress(messages.iter(), self.charge_all(&charges)).await {
            Ok(retried) => {
                for order in retried {
                    for charge in charges.iter().filter(|c| c.order == order) {
                        acks[charge.message] = retry;
                    }
                }
            }
            Err(err) => {
                tracing::warn!(error.cause_chain = ?err, error.message = %err, charges = charges.len(), "a batch of charges failed; it will be redelivered");
                for charge in &charges {
                    acks[charge.message] = retry;
                }
            }
        }
        let refunded = in_progress(
            messages.iter(),
            futures::future::join_all(refunds.iter().map(|(_, order)| self.refund(*order))),
        )
        .await;
        for ((i, _), outcome) in refunds.iter().zip(refunded) {
            if let Err(err) = outcome {
                tracing::warn!(error.cause_chain = ?err, error.message = %err, "refund job failed; it will be redelivered");
                acks[*i] = retry;
            }
        }
        for (message, ack) in messages.iter().zip(acks) {
            message
                .ack_with(ack)
                .await
                .map_err(|e| anyhow::anyhow!("acking a payment job: {e}"))?;
        }
        Ok(messages.len())
    }

    /// Charges each order of the batch at most once and settles every outcome in one
    /// transaction. Returns the orders whose charge failed transiently with tries left: their
    /// jobs are redelivered. On an error nothing is settled and the whole batch is retried;
    /// the provider's idempotency key makes the repeated charges harmless.
    async fn charge_all(&self, charges: &[Charge]) -> anyhow::Result<Vec<OrderId>> {
        if charges.is_empty() {
            return Ok(Vec::new());
        }
        let mut orders: Vec<OrderId> = charges.iter().map(|c| c.order).collect();
        orders.sort_unstable();
        orders.dedup();
        let pending = self.record(charges, &orders).await?;
        // One charge per order even if the batch holds its job twice.
        let mut to_charge: Vec<&Charge> = Vec::new();
        for charge in charges {
            if pending.contains(&charge.order) && !to_charge.iter().any(|c| c.order == charge.order)
            {
                to_charge.push(charge);
            }
        }
        let answers = futures::future::join_all(to_charge.iter().map(|c| async move {
            self.provider
                .charge(&c.order.to_string(), c.amount_cents, &c.currency)
                .await
        }))
        .await;
        let mut succeeded: Vec<(OrderId, String)> = Vec::new();
        let mut retried: Vec<(OrderId, String)> = Vec::new();
        let mut failed: Vec<(OrderId, String)> = Vec::new();
        for (charge, answer) in to_charge.into_iter().zip(answers) {
            match answer {
                Ok(reference) => succeeded.push((charge.order, reference)),
                Err(ChargeError::Transient(reason)) if charge.delivered < self.max_attempts => {
                    retried.push((charge.order, reason));
                }
                Err(err) => failed.push((charge.order, err.to_string())),
            }
        }
        self.settle(&succeeded, &retried, &failed).await?;
        for (outcome, n) in [
            ("succeeded", succeeded.len()),
            ("retried", retried.len()),
            ("failed", failed.len()),
        ] {
            metrics::counter!("flash_workers_payments_total", "outcome" => outcome)
                .increment(n as u64);
        }
        Ok(retried.into_iter().map(|(order, _)| order).collect())
    }

    /// Records a payment row per order (a redelivered job finds its row and outcome), voids
    /// those whose order was cancelled before its charge ran, and returns the orders still to
    /// charge. One transaction.
    async fn record(&self, charges: &[Charge], orders: &[OrderId]) -> anyhow::Result<Vec<OrderId>> {
        let mut tx = self.db.begin().await?;
        // INVARIANT: one payment per order. A job for an order that does not exist gets no row,
        // so it is not charged and cannot fail the whole batch on the foreign key.
        sqlx::query(
            "insert into payments (payment_id, order_id, idempotency_key, amount_cents, currency)
             select t.id, t.o, t.o::text, t.a, t.c
             from unnest($1::uuid[], $2::uuid[], $3::bigint[], $4::text[]) as t(id, o, a, c)
             join orders o on o.order_id = t.o
             order by t.o on conflict (order_id) do nothing",
        )
        .bind(charges.iter().map(|_| Uuid::now_v7()).collect::<Vec<_>>())
        .bind(charges.iter().map(|c| c.order).collect::<Vec<_>>())
        .bind(charges.iter().map(|c| c.amount_cents).collect::<Vec<_>>())
        .bind(
            charges
                .iter()
                .map(|c| c.currency.as_str())
                .collect::<Vec<_>>(),
        )
        .execute(&mut *tx)
        .await?;
        let voided = sqlx::query(
            "update payments p set status = 'failed', last_error = 'order cancelled before the charge'
             from orders o
             where p.order_id = any($1) and p.status = 'pending'
               and o.order_id = p.order_id and o.status = 'cancelled'",
        )
        .bind(orders)
        .execute(&mut *tx)
        .await?;
        let pending: Vec<OrderId> = sqlx::query_scalar(
            "select order_id from payments where order_id = any($1) and status = 'pending'",
        )
        .bind(orders)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        metrics::counter!("flash_workers_payments_total", "outcome" => "voided")
            .increment(voided.rows_affected());
        Ok(pending)
    }

    /// Settles the provider's answers in one transaction: paid orders get their confirmation
    /// email, orders cancelled while the charge ran get a refund, transient failures count an
    /// attempt, and final failures cancel the order, give its units back once and tell the
    /// buyer. After the commit, the units go back to the gate and the waiting room hears.
    async fn settle(
        &self,
        succeeded: &[(OrderId, String)],
        retried: &[(OrderId, String)],
        failed: &[(OrderId, String)],
    ) -> anyhow::Result<()> {
        if succeeded.is_empty() && retried.is_empty() && failed.is_empty() {
            return Ok(());
        }
        let mut tx = self.db.begin().await?;
        // Each flash order's sale and ticket, and how its payment ended, for the waiting room.
        let mut settled: Vec<(Uuid, Uuid, Settled)> = Vec::new();
        let mut restocked = Vec::new();
        if !succeeded.is_empty() {
            let (orders, references): (Vec<OrderId>, Vec<&str>) = succeeded
                .iter()
                .map(|(order, reference)| (*order, reference.as_str()))
                .unzip();
            sqlx::query(
                "update payments p set status = 'succeeded', provider_ref = t.r, attempts = p.attempts + 1
                 from unnest($1::uuid[], $2::text[]) as t(o, r)
                 where p.order_id = t.o and p.status = 'pending'",
            )
            .bind(&orders)
            .bind(&references)
            .execute(&mut *tx)
            .await?;
            let paid: Vec<(OrderId, Option<Uuid>, Option<Uuid>)> = sqlx::query_as(
                "update orders set status = 'paid'
                 where order_id = any($1) and status = 'pending_payment'
                 returning order_id, flash_sale_id, ticket_id",
            )
            .bind(&orders)
            .fetch_all(&mut *tx)
            .await?;
            let paid_orders: Vec<OrderId> = paid.iter().map(|(order, _, _)| *order).collect();
            outbox::email_buyers(&mut tx, &paid_orders, |o| EmailMessage::OrderConfirmation {
                order_id: o.order_id,
                total_cents: o.total_cents,
                currency: o.currency,
            })
            .await?;
            settled.extend(
                paid.iter()
                    .filter_map(|(_, sale, ticket)| Some(((*sale)?, (*ticket)?, Settled::Paid))),
            );
            // Cancelled while the charge was under way: the money goes back.
            for order in orders.iter().filter(|o| !paid_orders.contains(o)) {
                let refund = PaymentJob::Refund { order_id: *order };
                outbox::enqueue(&mut tx, PaymentJob::SUBJECT, &refund).await?;
            }
        }
        for (order, reason) in retried {
            sqlx::query(
                "update payments set attempts = attempts + 1, last_error = $2 where order_id = $1",
            )
            .bind(order)
            .bind(reason)
            .execute(&mut *tx)
            .await?;
        }
        for (order, reason) in failed {
            sqlx::query("update payments set status = 'failed', attempts = attempts + 1, last_error = $2 where order_id = $1 and status = 'pending'")
                .bind(order)
                .bind(reason)
                .execute(&mut *tx)
                .await?;
            if let Some((sale, ticket, returned)) = cancel_order(&mut tx, *order).await? {
                outbox::email_buyer(&mut tx, *order, |o| EmailMessage::PaymentFailed {
                    order_id: o.order_id,
                })
                .await?;
                if let (Some(sale), Some(ticket)) = (sale, ticket) {
                    settled.push((sale, ticket, Settled::Cancelled));
                }
                restocked.push(returned);
            }
        }
        tx.commit().await?;
        for returned in &restocked {
            restock::announce(&self.redis, &self.keys, returned).await;
        }
        // Best effort after the commit: the order in PostgreSQL is the truth, and a poll of a
        // ticket Redis lost reads it there.
        if let Err(err) = tickets::settle_tickets(&self.redis, &self.keys, &settled).await {
            tracing::warn!(error = %err, tickets = settled.len(), "updating the tickets after their payments failed");
        }
        Ok(())
    }

    /// Refunds a cancelled or returned order once: only a `succeeded` payment is refunded, and
    /// the provider gets the order id as the key, so a redelivered or repeated job is harmless.
    async fn refund(&self, order: OrderId) -> anyhow::Result<()> {
        let status: Option<String> =
            sqlx::query_scalar("select status from payments where order_id = $1")
                .bind(order)
                .fetch_optional(&self.db)
                .await?;
        if status.as_deref() != Some("succeeded") {
            return Ok(());
        }
        self.provider.refund(&order.to_string()).await?;
        sqlx::query(
            "update payments set status = 'refunded' where order_id = $1 and status = 'succeeded'",
        )
        .bind(order)
        .execute(&self.db)
        .await?;
        metrics::counter!("flash_workers_payments_total", "outcome" => "refunded").increment(1);
        Ok(())
    }
}

/// Cancels an unpaid order and gives its units back, exactly once (the status guard makes a
/// second call a no-op). Returns `None` if it was not pending, else its flash sale and ticket
/// (if any) and where its units went.
async fn cancel_order(
    conn: &mut PgConnection,
    order: OrderId,
) -> anyhow::Result<Option<(Option<Uuid>, Option<Uuid>, Restocked)>> {
    let cancelled: Option<(Option<Uuid>, Option<Uuid>)> =
        sqlx::query_as("update orders set status = 'cancelled' where order_id = $1 and status = 'pending_payment' returning flash_sale_id, ticket_id")
            .bind(order)
            .fetch_optional(&mut *conn)
            .await?;
    let Some((sale, ticket)) = cancelled else {
        return Ok(None);
    };
    let restocked = restock::give_back(conn, order).await?;
    Ok(Some((sale, ticket, restocked)))
}
