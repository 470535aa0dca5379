//! Payment jobs: charge each order at most once; a final failure cancels the order and gives
//! its units back exactly once.
//!
//! The provider sits behind [`PaymentProvider`]; the default is [`SimulatedProvider`], a
//! stand-in with configurable latency and failure rates (a real provider is an adapter behind
//! the same trait). The order id is the idempotency key sent to the provider, and `payments`
//! has one row per order, so a redelivered job never charges twice.

use std::{collections::HashMap, future::Future, sync::Mutex, time::Duration};

use async_nats::jetstream::{self, AckKind, consumer::PullConsumer};
use flash_core::{
    jobs::{EmailMessage, PaymentJob},
    outbox,
    redis::Keys,
    restock::{self, Restocked},
    sale_gate,
};
use rand::Rng;
use redis::aio::ConnectionManager;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

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

/// Name of the durable consumer of payment jobs.
const PAYMENTS_CONSUMER: &str = "payments";

/// Runs payment jobs.
pub struct Payments<P> {
    db: PgPool,
    redis: ConnectionManager,
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
        redis: ConnectionManager,
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
                    ack_wait: Duration::from_secs(30),
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

    /// Runs one batch of payment jobs; returns how many were taken.
    ///
    /// # Errors
    /// When NATS fails; a job whose handling failed is redelivered.
    pub async fn run_once(&self) -> anyhow::Result<usize> {
        let messages =
            flash_core::nats::fetch_batch(&self.consumer, 64, Duration::from_millis(200)).await?;
        let handled = futures::future::join_all(messages.iter().map(|m| self.handle(m))).await;
        for (message, outcome) in messages.iter().zip(handled) {
            let ack = match outcome {
                Ok(()) => AckKind::Ack,
                Err(err) => {
                    tracing::warn!(error.cause_chain = ?err, error.message = %err, "payment job failed; it will be redelivered");
                    AckKind::Nak(Some(Duration::from_millis(500)))
                }
            };
            message
                .ack_with(ack)
                .await
                .map_err(|e| anyhow::anyhow!("acking a payment job: {e}"))?;
        }
        Ok(messages.len())
    }

    async fn handle(&self, message: &jetstream::Message) -> anyhow::Result<()> {
        let job: PaymentJob = match serde_json::from_slice(&message.payload) {
            Ok(job) => job,
            Err(err) => {
                tracing::error!(error = %err, "unreadable payment job dropped");
                return Ok(());
            }
        };
        let delivered = message.info().map(|i| i.delivered).unwrap_or(1);
        match job {
            PaymentJob::Charge {
                order_id,
                amount_cents,
                currency,
            } => {
                self.charge(order_id, amount_cents, &currency, delivered)
                    .await
            }
            PaymentJob::Refund { order_id } => self.refund(order_id).await,
        }
    }

    #[tracing::instrument(skip_all, fields(order_id = %order))]
    async fn charge(
        &self,
        order: Uuid,
        amount_cents: i64,
        currency: &str,
        delivered: i64,
    ) -> anyhow::Result<()> {
        // INVARIANT: one payment per order; a redelivered job finds the row and its outcome.
        sqlx::query(
            "insert into payments (payment_id, order_id, idempotency_key, amount_cents, currency)
             values ($1, $2, $2::text, $3, $4) on conflict (order_id) do nothing",
        )
        .bind(Uuid::now_v7())
        .bind(order)
        .bind(amount_cents)
        .bind(currency)
        .execute(&self.db)
        .await?;
        let status: String = sqlx::query_scalar("select status from payments where order_id = $1")
            .bind(order)
            .fetch_one(&self.db)
            .await?;
        if status != "pending" {
            return Ok(());
        }
        // An order cancelled before its charge ran is not charged at all.
        let voided = sqlx::query(
            "update payments set status = 'failed', last_error = 'order cancelled before the charge'
             where order_id = $1 and status = 'pending'
               and exists (select 1 from orders where order_id = $1 and status = 'cancelled')",
        )
        .bind(order)
        .execute(&self.db)
        .await?;
        if voided.rows_affected() == 1 {
            metrics::counter!("flash_workers_payments_total", "outcome" => "voided").increment(1);
            return Ok(());
        }
        let outcome = self
            .provider
            .charge(&order.to_string(), amount_cents, currency)
            .await;
        let mut tx = self.db.begin().await?;
        // The flash order's sale and ticket and how its payment ended, for the waiting room.
        let mut settled: Option<(Option<Uuid>, Option<Uuid>, &str)> = None;
        match outcome {
            Ok(reference) => {
                sqlx::query("update payments set status = 'succeeded', provider_ref = $2, attempts = attempts + 1 where order_id = $1 and status = 'pending'")
                    .bind(order)
                    .bind(reference)
                    .execute(&mut *tx)
                    .await?;
                let paid: Option<(Option<Uuid>, Option<Uuid>)> = sqlx::query_as(
                    "update orders set status = 'paid' where order_id = $1 and status = 'pending_payment'
                     returning flash_sale_id, ticket_id",
                )
                .bind(order)
                .fetch_optional(&mut *tx)
                .await?;
                settled = paid.map(|(sale, ticket)| (sale, ticket, "paid"));
                if settled.is_some() {
                    outbox::email_buyer(&mut tx, order, |o| EmailMessage::OrderConfirmation {
                        order_id: o.order_id,
                        total_cents: o.total_cents,
                        currency: o.currency,
                    })
                    .await?;
                } else {
                    // Cancelled while the charge was under way: the money goes back.
                    let refund = PaymentJob::Refund { order_id: order };
                    outbox::enqueue(&mut tx, PaymentJob::SUBJECT, &refund).await?;
                }
                metrics::counter!("flash_workers_payments_total", "outcome" => "succeeded")
                    .increment(1);
            }
            Err(ChargeError::Transient(reason)) if delivered < self.max_attempts => {
                sqlx::query("update payments set attempts = attempts + 1, last_error = $2 where order_id = $1")
                    .bind(order)
                    .bind(&reason)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                metrics::counter!("flash_workers_payments_total", "outcome" => "retried")
                    .increment(1);
                anyhow::bail!("transient payment failure (attempt {delivered}): {reason}");
            }
            Err(err) => {
                sqlx::query("update payments set status = 'failed', attempts = attempts + 1, last_error = $2 where order_id = $1 and status = 'pending'")
                    .bind(order)
                    .bind(err.to_string())
                    .execute(&mut *tx)
                    .await?;
                let returned = cancel_order(&mut tx, order).await?;
                if let Some((sale, ticket, _)) = &returned {
                    settled = Some((*sale, *ticket, "cancelled"));
                    outbox::email_buyer(&mut tx, order, |o| EmailMessage::PaymentFailed {
                        order_id: o.order_id,
                    })
                    .await?;
                }
                tx.commit().await?;
                metrics::counter!("flash_workers_payments_total", "outcome" => "failed")
                    .increment(1);
                if let Some((_, _, restocked)) = &returned {
                    restock::announce(&self.redis, &self.keys, restocked).await;
                }
                self.settle_ticket(settled).await;
                return Ok(());
            }
        }
        tx.commit().await?;
        self.settle_ticket(settled).await;
        Ok(())
    }

    /// Moves a flash order's ticket on to how its payment ended. Best effort after the commit:
    /// the order in PostgreSQL is the truth, and a poll of a ticket Redis lost reads it there.
    async fn settle_ticket(&self, settled: Option<(Option<Uuid>, Option<Uuid>, &str)>) {
        if let Some((Some(sale), Some(ticket), status)) = settled
            && let Err(err) =
                sale_gate::settle_ticket(&self.redis, &self.keys, sale, ticket, status).await
        {
            tracing::warn!(error = %err, %ticket, status, "updating the ticket after its payment failed");
        }
    }

    /// Refunds a cancelled or returned order once: only a `succeeded` payment is refunded, and
    /// the provider gets the order id as the key, so a redelivered or repeated job is harmless.
    async fn refund(&self, order: Uuid) -> anyhow::Result<()> {
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
    order: Uuid,
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
