//! The order drain: queued tickets become orders, in batches, exactly once.
//!
//! Per batch and sale, in ONE PostgreSQL transaction: lock the sale row, find tickets that
//! already have an order (a redelivery), decide the rest in queue order (granted while units
//! are left; `rejected` above the member's limit; `sold_out` after), insert the orders with
//! `on conflict (ticket_id) do nothing`, take exactly the inserted number from `quantity_left`
//! (guarded), and queue their payment jobs in the outbox. Only after the commit are the tickets
//! updated in Redis and the messages acked, so a crash anywhere leads to a redelivery that
//! reaches the same end state.
//!
//! Each sale has its own durable consumer. A pass looks up which sales have tickets waiting,
//! skips the paused ones, and fetches from the others at most what their outflow limit allows
//! (a token bucket in Redis shared by every worker process), so a held ticket simply stays in
//! the stream, in order, without using up its deliveries.
//!
//! The rule that decides each ticket is [`allocation`], pure and tested on its own; the
//! transaction that feeds it and writes its grants is [`orders`]; this module fetches,
//! retries, publishes the outcome to Redis and acks.

mod allocation;
mod orders;

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use anyhow::Context;
use async_nats::jetstream::{self, AckKind, consumer::PullConsumer};
use chrono::Utc;
use flash_core::redis::Redis;
use flash_core::{
    domain::TicketId,
    jobs::TicketMessage,
    nats::{ORDERS_MAX_DELIVER, Subjects},
    redis_model::{
        Keys, outflow, sale_gate,
        tickets::{self, Decision},
    },
};
use sqlx::PgPool;
use uuid::Uuid;

use self::allocation::Fate;
use crate::progress::in_progress;

/// Longest idle pause when the only waiting sales are held back by their outflow limit: short,
/// so that the limiter's tokens are used as they come.
const THROTTLED_PAUSE: Duration = Duration::from_millis(50);

/// What one pass of the drain did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainOutcome {
    /// This many tickets were decided (and acked).
    Processed(usize),
    /// The queue was empty.
    Empty,
}

/// Turns tickets into orders.
pub struct Drainer {
    db: PgPool,
    redis: Redis,
    keys: Keys,
    js: jetstream::Context,
    subjects: Subjects,
    stream: jetstream::stream::Stream,
    consumers: std::sync::Mutex<HashMap<Uuid, PullConsumer>>,
    batch_size: usize,
    fetch_wait: Duration,
}

/// Where a drain pass tunes itself: queue, batch size and wait.
pub struct DrainSettings {
    /// Tickets per fetch.
    pub batch_size: usize,
    /// Longest wait to fill a fetch.
    pub fetch_wait: Duration,
}

impl Drainer {
    /// A drainer of the tickets in the flash `stream`; each sale's consumer is opened when the
    /// sale first has tickets.
    pub fn new(
        db: PgPool,
        redis: Redis,
        keys: Keys,
        js: jetstream::Context,
        subjects: Subjects,
        stream: &jetstream::stream::Stream,
        settings: DrainSettings,
    ) -> Self {
        Self {
            db,
            redis,
            keys,
            js,
            subjects,
            stream: stream.clone(),
            consumers: std::sync::Mutex::new(HashMap::new()),
            batch_size: settings.batch_size,
            fetch_wait: settings.fetch_wait,
        }
    }

    /// One pass: a batch from every sale that has tickets waiting and may drain now (not
    /// paused, within its outflow). With nothing to do it waits a little before returning
    /// [`DrainOutcome::Empty`], so an idle loop does not spin.
    ///
    /// # Errors
    /// When NATS, PostgreSQL or Redis fail; the batch's messages are then redelivered.
    pub async fn drain_once(&self) -> anyhow::Result<DrainOutcome> {
        let mut count = 0;
        let mut throttled = false;
        for sale in self.sales_waiting().await? {
            match self.drain_sale_batch(sale).await? {
                Some(n) => count += n,
                None => throttled = true,
            }
        }
        if count > 0 {
            return Ok(DrainOutcome::Processed(count));
        }
        let idle = if throttled {
            self.fetch_wait.min(THROTTLED_PAUSE)
        } else {
            self.fetch_wait
        };
        tokio::time::sleep(idle).await;
        Ok(DrainOutcome::Empty)
    }

    /// Sales with tickets in the stream (waiting, or delivered and not yet acked).
    async fn sales_waiting(&self) -> anyhow::Result<Vec<Uuid>> {
        let mut subjects = self
            .stream
            .info_with_subjects(self.subjects.all_flash_tickets())
            .await
            .context("listing sales with tickets")?;
        let mut sales = Vec::new();
        while let Some(entry) = futures::StreamExt::next(&mut subjects).await {
            let (subject, count) =
                entry.map_err(|e| anyhow::anyhow!("listing sales with tickets: {e}"))?;
            if count > 0 {
                match self.subjects.sale_of_ticket_subject(&subject) {
                    Some(sale) => sales.push(sale),
                    None => tracing::warn!(%subject, "tickets on a subject naming no sale"),
                }
            }
        }
        Ok(sales)
    }

    /// Fetches and decides one batch of `sale`: how many tickets it decided, or `None` when the
    /// sale may not drain now (paused, or its outflow used up).
    async fn drain_sale_batch(&self, sale: Uuid) -> anyhow::Result<Option<usize>> {
        let control = sale_gate::drain_control(&self.redis, &self.keys, sale).await?;
        if control.paused {
            return Ok(None);
        }
        let Some(allowance) = self.allowance(sale, control.outflow_per_sec).await? else {
            return Ok(None);
        };
        let consumer = self.consumer(sale).await?;
        let fetched =
            match flash_core::nats::fetch_batch(&consumer, allowance, self.fetch_wait).await {
                Ok(fetched) => fetched,
                Err(err) => {
                    // The consumer may be gone (idle for a day, or deleted): open it afresh next time.
                    self.forget_consumer(sale);
                    return Err(err);
                }
            };
        if control.outflow_per_sec > 0 && fetched.len() < allowance {
            outflow::give_back(&self.redis, &self.keys, sale, allowance - fetched.len()).await?;
        }
        let count = fetched.len();
        let items = read_tickets(sale, fetched).await?;
        if !items.is_empty()
            && let Err(err) = in_progress(
                items.iter().map(|(message, _)| message),
                self.drain_sale(sale, &items, control.abandon_after_secs),
            )
            .await
        {
            tracing::error!(error.cause_chain = ?err, error.message = %err, sale_id = %sale, "draining a sale failed; its tickets will be retried");
            self.retry_or_bury(sale, &items, &format!("{err:#}"))
                .await?;
        }
        Ok(Some(count))
    }

    /// How many tickets of `sale` this batch may fetch: a whole batch without an outflow limit,
    /// else what the shared limiter grants (`None` when it grants nothing now).
    async fn allowance(&self, sale: Uuid, outflow_per_sec: u32) -> anyhow::Result<Option<usize>> {
        if outflow_per_sec == 0 {
            return Ok(Some(self.batch_size));
        }
        let granted = outflow::take(
            &self.redis,
            &self.keys,
            sale,
            outflow_per_sec,
            self.batch_size,
        )
        .await?;
        Ok((granted > 0).then_some(granted))
    }

    fn forget_consumer(&self, sale: Uuid) {
        if let Ok(mut consumers) = self.consumers.lock() {
            consumers.remove(&sale);
        }
    }

    /// The consumer of `sale`, opened once per process.
    async fn consumer(&self, sale: Uuid) -> anyhow::Result<PullConsumer> {
        if let Some(found) = self
            .consumers
            .lock()
            .map_err(|_| anyhow::anyhow!("consumer cache poisoned"))?
            .get(&sale)
        {
            return Ok(found.clone());
        }
        let opened = flash_core::nats::orders_consumer(&self.stream, &self.subjects, sale).await?;
        self.consumers
            .lock()
            .map_err(|_| anyhow::anyhow!("consumer cache poisoned"))?
            .insert(sale, opened.clone());
        Ok(opened)
    }

    /// After a failed attempt: tickets with deliveries left are redelivered after a pause;
    /// those on their last delivery go to the dead-letter stream and become `failed`, so no
    /// ticket is ever silently lost.
    async fn retry_or_bury(
        &self,
        sale: Uuid,
        items: &[(jetstream::Message, TicketMessage)],
        reason: &str,
    ) -> anyhow::Result<()> {
        for (message, ticket) in items {
            let delivered = message.info().map(|i| i.delivered).unwrap_or(1);
            if delivered < ORDERS_MAX_DELIVER {
                let pause = Duration::from_millis(100 * u64::try_from(delivered).unwrap_or(1));
                message
                    .ack_with(AckKind::Nak(Some(pause)))
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                continue;
            }
            flash_core::nats::publish_durably(
                &self.js,
                self.subjects.dead_tickets(sale),
                &ticket.ticket_id.to_string(),
                message.payload.clone(),
                None,
            )
            .await?;
            let reason: String = reason.chars().take(200).collect();
            tickets::mark_failed(
                &self.redis,
                &self.keys,
                sale,
                ticket.ticket_id.get(),
                &reason,
            )
            .await?;
            message
                .ack_with(AckKind::Term)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            tracing::error!(ticket_id = %ticket.ticket_id, sale_id = %sale, "ticket dead-lettered after {delivered} deliveries");
            metrics::counter!("flash_workers_dead_letters_total").increment(1);
        }
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(sale_id = %sale, n = items.len()))]
    async fn drain_sale(
        &self,
        sale: Uuid,
        items: &[(jetstream::Message, TicketMessage)],
        abandon_after_secs: u32,
    ) -> anyhow::Result<()> {
        let started = Instant::now();
        let redelivered = items
            .iter()
            .filter(|(m, _)| m.info().is_ok_and(|i| i.delivered > 1))
            .count();
        metrics::counter!("flash_workers_redeliveries_total").increment(redelivered as u64);
        let tickets: Vec<&TicketMessage> = items.iter().map(|(_, t)| t).collect();
        let settled = self.settled(sale, &tickets, abandon_after_secs).await?;
        let mut tx = self.db.begin().await?;
        // A sale starts with few rows of its own that statistics know of; a generic plan made
        // then (a scan) gets slower with every batch. Plan each batch's statements afresh.
        sqlx::query("set local plan_cache_mode = force_custom_plan")
            .execute(&mut *tx)
            .await?;
        let fates = orders::decide(&mut tx, sale, &tickets, settled).await?;
        tx.commit().await?;
        self.publish_fates(sale, &tickets, &fates).await?;
        // Acks go out together: they only tell JetStream it may forget the messages.
        for acked in futures::future::join_all(items.iter().map(|(m, _)| m.ack())).await {
            acked.map_err(|e| anyhow::anyhow!("acking a ticket: {e}"))?;
        }
        record_batch(started, items.len(), &fates);
        Ok(())
    }

    /// What Redis says of the batch's tickets, through the rule's pre-database half (see
    /// [`allocation::settled`]).
    async fn settled(
        &self,
        sale: Uuid,
        tickets: &[&TicketMessage],
        abandon_after_secs: u32,
    ) -> anyhow::Result<HashMap<TicketId, Fate>> {
        let ids: Vec<Uuid> = tickets.iter().map(|t| t.ticket_id.get()).collect();
        let found = tickets::claim(&self.redis, &self.keys, sale, &ids).await?;
        Ok(allocation::settled(
            tickets.iter().map(|t| t.ticket_id).zip(found),
            abandon_after_secs,
            Utc::now().timestamp_millis(),
        ))
    }

    /// After the commit: tickets learn their fate, the served counter and drain rate move.
    async fn publish_fates(
        &self,
        sale: Uuid,
        tickets: &[&TicketMessage],
        fates: &HashMap<TicketId, Fate>,
    ) -> anyhow::Result<()> {
        let decisions: Vec<(Uuid, Decision<'_>)> = tickets
            .iter()
            .filter_map(|ticket| {
                let decision = match fates.get(&ticket.ticket_id)? {
                    Fate::Ordered(order) => Decision::Ordered(order.get()),
                    Fate::SoldOut => Decision::SoldOut,
                    Fate::Rejected(reason) => Decision::Rejected(reason),
                    Fate::Expired => Decision::Expired,
                    Fate::Withdrawn | Fate::Decided => return None,
                };
                Some((ticket.ticket_id.get(), decision))
            })
            .collect();
        let highest = tickets.iter().map(|t| t.seq).max().unwrap_or(0);
        tickets::record_decisions(
            &self.redis,
            &self.keys,
            sale,
            &decisions,
            highest,
            tickets.len(),
        )
        .await?;
        Ok(())
    }
}

/// The fetched messages of `sale` with the tickets they carry. A message that is no ticket of
/// this sale at all is dropped for good: retrying cannot help.
async fn read_tickets(
    sale: Uuid,
    fetched: Vec<jetstream::Message>,
) -> anyhow::Result<Vec<(jetstream::Message, TicketMessage)>> {
    let mut items = Vec::with_capacity(fetched.len());
    for message in fetched {
        match serde_json::from_slice::<TicketMessage>(&message.payload) {
            Ok(ticket) if ticket.sale_id.get() == sale => items.push((message, ticket)),
            Ok(_) | Err(_) => {
                tracing::error!(%sale, "unreadable ticket message dropped");
                message
                    .ack_with(AckKind::Term)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
            }
        }
    }
    Ok(items)
}

/// The metrics of a decided batch: its time since `started`, its size and each ticket's fate.
fn record_batch(started: Instant, size: usize, fates: &HashMap<TicketId, Fate>) {
    metrics::histogram!("flash_workers_drain_batch_seconds")
        .record(started.elapsed().as_secs_f64());
    #[allow(clippy::cast_precision_loss)]
    metrics::histogram!("flash_workers_drain_batch_size").record(size as f64);
    for fate in fates.values() {
        metrics::counter!("flash_workers_tickets_total", "outcome" => fate.outcome()).increment(1);
    }
}
