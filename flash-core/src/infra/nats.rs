//! NATS JetStream: the connection, subject names, the jobs stream, and publishing with dedup.

use std::time::Duration;

use anyhow::Context;
use async_nats::{
    HeaderMap,
    jetstream::{
        self,
        context::PublishErrorKind,
        message::PublishMessage,
        publish::PublishAck,
        stream::{Config as StreamConfig, RetentionPolicy, StorageType},
    },
};
use bytes::Bytes;

use crate::config::NatsArgs;

/// Header carrying the HTTP request id into messages, so one request can be followed from the
/// front door into the workers' logs.
pub const REQUEST_ID_HEADER: &str = "X-Request-Id";

/// How long JetStream remembers a `Nats-Msg-Id` to drop duplicates. Generous, because the
/// outbox relay may republish after a crash long after the first attempt.
pub const DEDUP_WINDOW: Duration = Duration::from_secs(10 * 60);

/// Connects to NATS: to one of the seeds of [`NatsArgs::seeds`], which the client tries in a
/// random order so that a deployment's processes spread over a cluster's nodes.
///
/// # Errors
/// When a URL is malformed, or no seed can be reached at start-up.
pub async fn connect(args: &NatsArgs, name: &str) -> anyhow::Result<async_nats::Client> {
    let seeds = args
        .seeds()
        .into_iter()
        .map(|url| {
            url.parse::<async_nats::ServerAddr>()
                .with_context(|| format!("invalid NATS_URL entry {url}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    anyhow::ensure!(!seeds.is_empty(), "NATS_URL names no server");
    async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_secs(2))
        .connect(seeds)
        .await
        .with_context(|| format!("connecting to NATS at {}", args.nats_url))
}

/// A JetStream context whose API calls and publish acks are bounded by the configured timeout,
/// and which waits (instead of failing) when many publishes are awaiting acks.
pub fn jetstream(client: async_nats::Client, args: &NatsArgs) -> jetstream::Context {
    jetstream::ContextBuilder::new()
        .timeout(args.publish_timeout())
        .ack_timeout(args.publish_timeout())
        .max_ack_inflight(20_000)
        .backpressure_on_inflight(true)
        .build(client)
}

/// Subject names, with the deployment's prefix applied.
#[derive(Debug, Clone)]
pub struct Subjects {
    prefix: String,
}

impl Subjects {
    /// Subjects under `prefix` (empty in production).
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    /// Every job subject, as bound to the jobs stream.
    pub fn all_jobs(&self) -> String {
        format!("{}jobs.>", self.prefix)
    }

    /// Email jobs, consumed by the workers' email sender.
    pub fn email_jobs(&self) -> String {
        format!("{}jobs.email", self.prefix)
    }

    /// Tickets of one flash sale, consumed by the workers' order drain.
    pub fn flash_tickets(&self, sale: uuid::Uuid) -> String {
        format!("{}flash.tickets.{sale}", self.prefix)
    }

    /// Tickets of every sale, as bound to the flash stream.
    pub fn all_flash_tickets(&self) -> String {
        format!("{}flash.tickets.>", self.prefix)
    }

    /// The sale a ticket subject names (`<prefix>flash.tickets.<sale>`), if it names one.
    pub fn sale_of_ticket_subject(&self, subject: &str) -> Option<uuid::Uuid> {
        subject
            .strip_prefix(&self.prefix)?
            .strip_prefix("flash.tickets.")?
            .parse()
            .ok()
    }

    /// State changes of one sale, for other systems (`<prefix>events.sales.<sale>`).
    pub fn sale_events(&self, sale: uuid::Uuid) -> String {
        format!("{}{}", self.prefix, crate::sale_events::subject(sale))
    }

    /// Every sale event, as bound to the events stream.
    pub fn all_sale_events(&self) -> String {
        format!("{}events.sales.>", self.prefix)
    }

    /// Tickets the drain gave up on, kept for inspection (`<prefix>flash.dead.<sale>`).
    pub fn dead_tickets(&self, sale: uuid::Uuid) -> String {
        format!("{}flash.dead.{sale}", self.prefix)
    }
}

/// Name of the consumer of an earlier layout: one consumer over every sale's tickets. A work
/// queue allows no overlapping consumers, so [`ensure_flash_queue`] removes it.
const LEGACY_ORDERS_CONSUMER: &str = "orders";

/// Deliveries of a ticket before the drain gives up on it and dead-letters it.
pub const ORDERS_MAX_DELIVER: i64 = 10;

/// How long a delivered ticket or job waits for its ack before JetStream gives it to another
/// worker: the longest a dead worker's batch stalls its sale, its charges or its mails. A live
/// worker whose batch runs longer says so with progress acks every [`WORK_PROGRESS_EVERY`], so
/// a slow batch is not handed out twice. (It was 30 s: a killed worker then held its tickets,
/// and its charges, for half a minute.)
pub const WORK_ACK_WAIT: Duration = Duration::from_secs(4);

/// How often a worker still working on a batch tells JetStream so (`+WPI`).
pub const WORK_PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Name of the durable consumer of one sale's tickets, shared by every worker process.
pub fn orders_consumer_name(sale: uuid::Uuid) -> String {
    format!("orders-{sale}")
}

/// Creates the flash-ticket stream and its dead-letter stream if absent (idempotent across
/// processes starting at once).
///
/// Work-queue retention: a ticket leaves the stream when a worker acks it. File storage: a
/// ticket survives a NATS restart. The duplicate window drops a re-published ticket. Each sale
/// is drained through its own durable consumer ([`orders_consumer`]) so that a paused or
/// throttled sale is simply not fetched from: its tickets wait in the stream, in order, without
/// using up deliveries.
///
/// # Errors
/// When JetStream is unavailable or a conflicting stream exists.
pub async fn ensure_flash_queue(
    js: &jetstream::Context,
    args: &NatsArgs,
) -> anyhow::Result<jetstream::stream::Stream> {
    let subjects = Subjects::new(&args.nats_subject_prefix);
    let stream = js
        .get_or_create_stream(StreamConfig {
            name: args.nats_flash_stream.clone(),
            subjects: vec![subjects.all_flash_tickets()],
            retention: RetentionPolicy::WorkQueue,
            storage: StorageType::File,
            duplicate_window: DEDUP_WINDOW,
            max_messages: args.nats_flash_max_messages,
            discard: jetstream::stream::DiscardPolicy::New,
            num_replicas: args.nats_stream_replicas.into(),
            ..Default::default()
        })
        .await
        .with_context(|| format!("creating JetStream stream {}", args.nats_flash_stream))?;
    // Its unacked tickets go back to the stream, where the per-sale consumers find them.
    if stream.delete_consumer(LEGACY_ORDERS_CONSUMER).await.is_ok() {
        tracing::warn!(stream = %args.nats_flash_stream, "removed the all-sales orders consumer of an earlier layout");
    }
    // Dead letters: limits retention, kept a week for someone to look at.
    let dead = format!("{}_DEAD", args.nats_flash_stream);
    js.get_or_create_stream(StreamConfig {
        name: dead.clone(),
        subjects: vec![format!("{}flash.dead.>", args.nats_subject_prefix)],
        storage: StorageType::File,
        max_age: Duration::from_secs(7 * 24 * 3600),
        num_replicas: args.nats_stream_replicas.into(),
        ..Default::default()
    })
    .await
    .with_context(|| format!("creating JetStream stream {dead}"))?;
    Ok(stream)
}

/// Opens (creating if absent) the durable consumer of `sale`'s tickets.
///
/// # Errors
/// When JetStream is unavailable.
pub async fn orders_consumer(
    stream: &jetstream::stream::Stream,
    subjects: &Subjects,
    sale: uuid::Uuid,
) -> anyhow::Result<jetstream::consumer::PullConsumer> {
    let name = orders_consumer_name(sale);
    stream
        .get_or_create_consumer(
            &name,
            jetstream::consumer::pull::Config {
                durable_name: Some(name.clone()),
                filter_subject: subjects.flash_tickets(sale),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: WORK_ACK_WAIT,
                max_deliver: ORDERS_MAX_DELIVER,
                max_ack_pending: 100_000,
                // A finished sale's consumer goes away by itself.
                inactive_threshold: Duration::from_secs(24 * 3600),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("opening consumer {name}: {e}"))
}

/// Name of the stream that keeps sale events (a week), beside the flash stream.
pub fn events_stream_name(args: &NatsArgs) -> String {
    format!("{}_EVENTS", args.nats_flash_stream)
}

/// Creates the sale-events stream if absent: limits retention, so any number of other systems
/// may read the events, each with its own consumer.
///
/// # Errors
/// When JetStream is unavailable or a conflicting stream exists.
pub async fn ensure_events_stream(js: &jetstream::Context, args: &NatsArgs) -> anyhow::Result<()> {
    let name = events_stream_name(args);
    js.get_or_create_stream(StreamConfig {
        subjects: vec![Subjects::new(&args.nats_subject_prefix).all_sale_events()],
        storage: StorageType::File,
        duplicate_window: DEDUP_WINDOW,
        max_age: Duration::from_secs(7 * 24 * 3600),
        name: name.clone(),
        num_replicas: args.nats_stream_replicas.into(),
        ..Default::default()
    })
    .await
    .with_context(|| format!("creating JetStream stream {name}"))?;
    Ok(())
}

/// Creates the jobs stream if absent (idempotent across processes starting at once).
///
/// Work-queue retention: a job is deleted once a consumer acks it. File storage: a job survives
/// a NATS restart.
///
/// # Errors
/// When JetStream is unavailable or a stream of that name exists with conflicting subjects.
pub async fn ensure_jobs_stream(js: &jetstream::Context, args: &NatsArgs) -> anyhow::Result<()> {
    let subjects = Subjects::new(&args.nats_subject_prefix);
    js.get_or_create_stream(StreamConfig {
        name: args.nats_jobs_stream.clone(),
        subjects: vec![subjects.all_jobs()],
        retention: RetentionPolicy::WorkQueue,
        storage: StorageType::File,
        duplicate_window: DEDUP_WINDOW,
        num_replicas: args.nats_stream_replicas.into(),
        ..Default::default()
    })
    .await
    .with_context(|| format!("creating JetStream stream {}", args.nats_jobs_stream))?;
    Ok(())
}

/// Why a publish did not end with a stored message.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// No ack arrived in time; the message may or may not be stored.
    #[error("JetStream did not acknowledge the publish in time")]
    Timeout,
    /// JetStream refused the message or the connection failed.
    #[error("JetStream publish failed: {0}")]
    Failed(#[source] async_nats::jetstream::context::PublishError),
}

/// Publishes `payload` with `Nats-Msg-Id: msg_id` (so a retry never stores it twice) and waits
/// for JetStream's ack: only then is the message durable.
///
/// # Errors
/// [`PublishError`] when there is no positive ack.
pub async fn publish_durably(
    js: &jetstream::Context,
    subject: String,
    msg_id: &str,
    payload: Bytes,
    request_id: Option<&str>,
) -> Result<PublishAck, PublishError> {
    let mut headers = HeaderMap::new();
    if let Some(id) = request_id {
        headers.insert(REQUEST_ID_HEADER, id);
    }
    let message = PublishMessage::build()
        .payload(payload)
        .headers(headers)
        .message_id(msg_id);
    let ack = js.send_publish(subject, message).await.map_err(classify)?;
    ack.await.map_err(classify)
}

/// Publishes a flash ticket to its sale's subject with the ticket id as `Nats-Msg-Id` and waits
/// for the ack, as every publisher of tickets does (the door, the pre-queue release, the
/// promoter, the reconciler): a second publish of one ticket is dropped as a duplicate.
///
/// # Errors
/// [`PublishError`] when there is no positive ack.
pub async fn publish_ticket(
    js: &jetstream::Context,
    subjects: &Subjects,
    ticket: &crate::jobs::TicketMessage,
    request_id: Option<&str>,
) -> Result<PublishAck, PublishError> {
    // A struct of ids and numbers always serialises.
    let payload = serde_json::to_vec(ticket).unwrap_or_default();
    publish_durably(
        js,
        subjects.flash_tickets(ticket.sale_id.get()),
        &ticket.ticket_id.to_string(),
        payload.into(),
        request_id,
    )
    .await
}

fn classify(err: async_nats::jetstream::context::PublishError) -> PublishError {
    match err.kind() {
        PublishErrorKind::TimedOut => PublishError::Timeout,
        _ => PublishError::Failed(err),
    }
}

/// Takes up to `max` messages from a pull consumer, waiting at most `wait` for them: one batch
/// for a worker loop. An empty batch means the queue had nothing in that time.
///
/// # Errors
/// When the pull request or a message fails.
pub async fn fetch_batch(
    consumer: &jetstream::consumer::PullConsumer,
    max: usize,
    wait: Duration,
) -> anyhow::Result<Vec<jetstream::Message>> {
    let mut fetched = consumer
        .fetch()
        .max_messages(max)
        .expires(wait)
        .messages()
        .await
        .map_err(|e| anyhow::anyhow!("fetching from {}: {e}", consumer.cached_info().name))?;
    let mut messages = Vec::with_capacity(max);
    while let Some(message) = futures::StreamExt::next(&mut fetched).await {
        messages.push(message.map_err(|e| anyhow::anyhow!("receiving a message: {e}"))?);
    }
    Ok(messages)
}
