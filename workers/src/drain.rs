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

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use anyhow::Context;
use async_nats::jetstream::{self, AckKind, consumer::PullConsumer};
use chrono::{DateTime, Utc};
use flash_core::{
    domain::{MemberId, TicketId, TicketStatus},
    jobs::{PaymentJob, TicketMessage},
    nats::{ORDERS_MAX_DELIVER, Subjects},
    outbox,
    redis_model::{
        Keys, outflow, sale_gate,
        tickets::{self, Decision},
    },
    sale_events::{self, SaleEvent},
};
use redis::aio::ConnectionManager;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

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

/// The fate of one ticket.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Fate {
    Ordered(Uuid),
    SoldOut,
    Rejected(&'static str),
    /// The door withdrew it (its publish timed out but was stored): the buyer was told no.
    Withdrawn,
    /// Its buyer stopped polling longer ago than the sale allows: no order, and the unit goes
    /// back to the gate (where the waitlist, if any, gets it first).
    Expired,
    /// Decided sold out or rejected by an earlier delivery: this is a copy (the door publishes
    /// a `queued` ticket again when its buyer re-enters, and past the duplicate window both
    /// copies stay). The buyer has their answer; deciding again could change it.
    Decided,
}

/// Turns tickets into orders.
pub struct Drainer {
    db: PgPool,
    redis: ConnectionManager,
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

/// The sale a batch belongs to, locked for the transaction.
#[derive(sqlx::FromRow)]
struct SaleRow {
    product_id: Uuid,
    price_cents: i64,
    currency: String,
    quantity_left: i32,
    per_member_limit: i32,
    cancelled_at: Option<DateTime<Utc>>,
}

impl Drainer {
    /// A drainer of the tickets in the flash `stream`; each sale's consumer is opened when the
    /// sale first has tickets.
    pub fn new(
        db: PgPool,
        redis: ConnectionManager,
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
        let allowance = if control.outflow_per_sec == 0 {
            self.batch_size
        } else {
            let granted = outflow::take(
                &self.redis,
                &self.keys,
                sale,
                control.outflow_per_sec,
                self.batch_size,
            )
            .await?;
            if granted == 0 {
                return Ok(None);
            }
            granted
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
        let mut items = Vec::with_capacity(count);
        for message in fetched {
            match serde_json::from_slice::<TicketMessage>(&message.payload) {
                Ok(ticket) if ticket.sale_id.get() == sale => items.push((message, ticket)),
                Ok(_) | Err(_) => {
                    // Not a ticket of this sale at all: retrying cannot help.
                    tracing::error!(%sale, "unreadable ticket message dropped");
                    message
                        .ack_with(AckKind::Term)
                        .await
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                }
            }
        }
        if !items.is_empty()
            && let Err(err) = self
                .drain_sale(sale, &mut items, control.abandon_after_secs)
                .await
        {
            tracing::error!(error.cause_chain = ?err, error.message = %err, sale_id = %sale, "draining a sale failed; its tickets will be retried");
            self.retry_or_bury(sale, &items, &format!("{err:#}"))
                .await?;
        }
        Ok(Some(count))
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
        items: &mut [(jetstream::Message, TicketMessage)],
        abandon_after_secs: u32,
    ) -> anyhow::Result<()> {
        let started = Instant::now();
        items.sort_by_key(|(_, t)| t.seq);
        let redelivered = items
            .iter()
            .filter(|(m, _)| m.info().is_ok_and(|i| i.delivered > 1))
            .count();
        metrics::counter!("flash_workers_redeliveries_total").increment(redelivered as u64);
        let items = &*items;
        let settled = self.settled(sale, items, abandon_after_secs).await?;
        let mut tx = self.db.begin().await?;
        // A sale starts with few rows of its own that statistics know of; a generic plan made
        // then (a scan) gets slower with every batch. Plan each batch's statements afresh.
        sqlx::query("set local plan_cache_mode = force_custom_plan")
            .execute(&mut *tx)
            .await?;
        let fates = decide(&mut tx, sale, items, settled).await?;
        tx.commit().await?;
        self.publish_fates(sale, items, &fates).await?;
        // Acks go out together: they only tell JetStream it may forget the messages.
        for acked in futures::future::join_all(items.iter().map(|(m, _)| m.ack())).await {
            acked.map_err(|e| anyhow::anyhow!("acking a ticket: {e}"))?;
        }
        let elapsed = started.elapsed().as_secs_f64();
        metrics::histogram!("flash_workers_drain_batch_seconds").record(elapsed);
        #[allow(clippy::cast_precision_loss)]
        metrics::histogram!("flash_workers_drain_batch_size").record(items.len() as f64);
        for fate in fates.values() {
            let outcome = match fate {
                Fate::Ordered(_) => TicketStatus::Ordered.as_str(),
                Fate::SoldOut => TicketStatus::SoldOut.as_str(),
                Fate::Rejected(_) => TicketStatus::Rejected.as_str(),
                Fate::Withdrawn => TicketStatus::Withdrawn.as_str(),
                Fate::Expired => TicketStatus::Expired.as_str(),
                Fate::Decided => "duplicate",
            };
            metrics::counter!("flash_workers_tickets_total", "outcome" => outcome).increment(1);
        }
        Ok(())
    }

    /// Tickets decided before the database is asked: withdrawn by the door (see
    /// [`Fate::Withdrawn`]), abandoned by their buyer for longer than the sale allows (see
    /// [`Fate::Expired`]; the buyer's last poll is stamped on the ticket by the door), or
    /// decided already (see [`Fate::Decided`]).
    async fn settled(
        &self,
        sale: Uuid,
        items: &[(jetstream::Message, TicketMessage)],
        abandon_after_secs: u32,
    ) -> anyhow::Result<HashMap<TicketId, Fate>> {
        let ids: Vec<Uuid> = items.iter().map(|(_, t)| t.ticket_id.get()).collect();
        let found = tickets::statuses(&self.redis, &self.keys, sale, &ids).await?;
        let abandoned_before = Utc::now().timestamp_millis() - i64::from(abandon_after_secs) * 1000;
        Ok(items
            .iter()
            .zip(found)
            .filter_map(|((_, t), (status, seen))| match status {
                Some(TicketStatus::Withdrawn) => Some((t.ticket_id, Fate::Withdrawn)),
                // Expired by an earlier delivery of this ticket.
                Some(TicketStatus::Expired) => Some((t.ticket_id, Fate::Expired)),
                // Only a worker's decision sets these on a published ticket (the door's own
                // sold-out tickets are never published); an ordered one has its order, which
                // the database finds.
                Some(TicketStatus::SoldOut | TicketStatus::Rejected) => {
                    Some((t.ticket_id, Fate::Decided))
                }
                Some(TicketStatus::Queued)
                    if abandon_after_secs > 0 && seen.is_some_and(|s| s < abandoned_before) =>
                {
                    Some((t.ticket_id, Fate::Expired))
                }
                _ => None,
            })
            .collect())
    }

    /// After the commit: tickets learn their fate, the served counter and drain rate move.
    async fn publish_fates(
        &self,
        sale: Uuid,
        items: &[(jetstream::Message, TicketMessage)],
        fates: &HashMap<TicketId, Fate>,
    ) -> anyhow::Result<()> {
        let decisions: Vec<(Uuid, Decision<'_>)> = items
            .iter()
            .filter_map(|(_, ticket)| {
                let decision = match fates.get(&ticket.ticket_id)? {
                    Fate::Ordered(order) => Decision::Ordered(*order),
                    Fate::SoldOut => Decision::SoldOut,
                    Fate::Rejected(reason) => Decision::Rejected(reason),
                    Fate::Expired => Decision::Expired,
                    Fate::Withdrawn | Fate::Decided => return None,
                };
                Some((ticket.ticket_id.get(), decision))
            })
            .collect();
        let highest = items.iter().map(|(_, t)| t.seq).max().unwrap_or(0);
        tickets::record_decisions(
            &self.redis,
            &self.keys,
            sale,
            &decisions,
            highest,
            items.len(),
        )
        .await?;
        Ok(())
    }
}

/// What the database knows of a ticket before it is decided.
#[derive(sqlx::FromRow)]
struct KnownTicket {
    ticket_id: TicketId,
    member_id: Uuid,
    /// The order a redelivered ticket already has.
    order_id: Option<Uuid>,
    member_exists: bool,
    /// Live orders the member already holds in the sale.
    live_orders: i32,
}

/// One round trip for every ticket of the batch. Each lookup is a scalar subquery, so it is
/// an index probe per ticket whatever the statistics say: a sale grows by thousands of orders
/// within seconds, and a join planned from its statistics scanned all of the sale's
/// entitlements (and, in a young database, all its orders) for every batch.
async fn known_tickets(
    conn: &mut PgConnection,
    sale: Uuid,
    items: &[(jetstream::Message, TicketMessage)],
) -> sqlx::Result<Vec<KnownTicket>> {
    let tickets: Vec<TicketId> = items.iter().map(|(_, t)| t.ticket_id).collect();
    let members: Vec<Uuid> = items.iter().map(|(_, t)| t.member_id.get()).collect();
    sqlx::query_as(
        "select u.ticket_id, u.member_id,
                (select o.order_id from orders o where o.ticket_id = u.ticket_id) as order_id,
                coalesce((select true from members m where m.member_id = u.member_id), false)
                    as member_exists,
                coalesce((select e.live_orders from flash_sale_entitlements e
                          where e.flash_sale_id = $1 and e.member_id = u.member_id), 0)
                    as live_orders
         from unnest($2::uuid[], $3::uuid[]) as u(ticket_id, member_id)",
    )
    .bind(sale)
    .bind(&tickets)
    .bind(&members)
    .fetch_all(&mut *conn)
    .await
}

/// Decides every ticket of one sale's share of a batch, inside `conn`'s transaction.
async fn decide(
    conn: &mut PgConnection,
    sale: Uuid,
    items: &[(jetstream::Message, TicketMessage)],
    settled: HashMap<TicketId, Fate>,
) -> anyhow::Result<HashMap<TicketId, Fate>> {
    let mut fates = settled;
    // The row lock serialises batches of one sale across worker processes. `no key update`, as
    // the quantity update below would take: it does not block the foreign-key checks other
    // transactions make against the sale (`for update` would).
    let row: Option<SaleRow> = sqlx::query_as(
        "select product_id, price_cents, currency, quantity_left, per_member_limit, cancelled_at
         from flash_sales where flash_sale_id = $1 for no key update",
    )
    .bind(sale)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else {
        for (_, t) in items {
            fates
                .entry(t.ticket_id)
                .or_insert(Fate::Rejected("unknown sale"));
        }
        return Ok(fates);
    };
    let mut holding = HashMap::new();
    for known in known_tickets(conn, sale, items).await? {
        // A redelivered ticket already has its order.
        if let Some(order) = known.order_id {
            fates.insert(known.ticket_id, Fate::Ordered(order));
        }
        if known.member_exists {
            holding.insert(known.member_id, known.live_orders);
        }
    }

    let mut left = if row.cancelled_at.is_some() {
        0
    } else {
        row.quantity_left
    };
    let mut grants: Vec<(Uuid, MemberId, TicketId)> = Vec::new();
    for (_, ticket) in items {
        if fates.contains_key(&ticket.ticket_id) {
            continue;
        }
        let Some(held) = holding.get_mut(&ticket.member_id.get()) else {
            fates.insert(ticket.ticket_id, Fate::Rejected("unknown member"));
            continue;
        };
        let fate = if *held >= row.per_member_limit {
            // INVARIANT: at most per_member_limit live orders per member per sale (the
            // entitlements CHECK is the backstop; deciding here keeps the batch insert valid).
            Fate::Rejected("per-member limit reached")
        } else if left > 0 {
            left -= 1;
            *held += 1;
            let order = Uuid::now_v7();
            grants.push((order, ticket.member_id, ticket.ticket_id));
            Fate::Ordered(order)
        } else {
            Fate::SoldOut
        };
        fates.insert(ticket.ticket_id, fate);
    }
    if grants.is_empty() {
        return Ok(fates);
    }

    let inserted: Vec<(Uuid, Uuid)> = sqlx::query_as(
        "insert into orders (order_id, member_id, kind, status, total_cents, currency, flash_sale_id, ticket_id)
         select o, m, 'flash', 'pending_payment', $4, $5, $6, t
         from unnest($1::uuid[], $2::uuid[], $3::uuid[]) as g(o, m, t)
         on conflict (ticket_id) do nothing
         returning ticket_id, order_id",
    )
    .bind(grants.iter().map(|g| g.0).collect::<Vec<_>>())
    .bind(grants.iter().map(|g| g.1.get()).collect::<Vec<_>>())
    .bind(grants.iter().map(|g| g.2).collect::<Vec<_>>())
    .bind(row.price_cents)
    .bind(&row.currency)
    .bind(sale)
    .fetch_all(&mut *conn)
    .await?;
    // Under the sale's row lock no other worker inserts these tickets, and redeliveries were
    // found above, so every grant must have been inserted; anything else rolls the batch back.
    anyhow::ensure!(
        inserted.len() == grants.len(),
        "{} of {} orders of sale {sale} conflicted",
        grants.len() - inserted.len(),
        grants.len()
    );
    let orders: Vec<Uuid> = inserted.iter().map(|(_, o)| *o).collect();
    sqlx::query(
        "insert into order_items (order_id, product_id, quantity, unit_price_cents)
         select o, $2, 1, $3 from unnest($1::uuid[]) as g(o)",
    )
    .bind(&orders)
    .bind(row.product_id)
    .bind(row.price_cents)
    .execute(&mut *conn)
    .await?;
    let taken = i32::try_from(orders.len()).context("batch too large")?;
    // INVARIANT: quantity_left never < 0, and drops by exactly the orders inserted.
    let left_now: Option<i32> = sqlx::query_scalar(
        "update flash_sales set quantity_left = quantity_left - $2
         where flash_sale_id = $1 and quantity_left >= $2
         returning quantity_left",
    )
    .bind(sale)
    .bind(taken)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(left_now) = left_now else {
        anyhow::bail!("quantity_left of sale {sale} would go negative");
    };
    if left_now == 0 {
        sale_events::record(&mut *conn, sale, SaleEvent::SoldOut).await?;
    }
    let charges: Vec<PaymentJob> = orders
        .iter()
        .map(|order| PaymentJob::Charge {
            order_id: *order,
            amount_cents: row.price_cents,
            currency: row.currency.clone(),
        })
        .collect();
    outbox::enqueue_many(&mut *conn, PaymentJob::SUBJECT, &charges).await?;
    Ok(fates)
}
