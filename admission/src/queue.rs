//! The flash-ticket queue: durable publishes, and the depth the door watches for backpressure.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use async_nats::jetstream;
use flash_core::{
    jobs::TicketMessage,
    nats::{PublishError, Subjects, publish_ticket},
};
use tokio_util::sync::CancellationToken;

/// How often the queue depth is refreshed; entries read the last value, never NATS itself.
const DEPTH_REFRESH: Duration = Duration::from_millis(250);

/// Publishes queued tickets and knows how deep the queue is.
#[derive(Clone)]
pub(crate) struct Queue {
    js: jetstream::Context,
    subjects: Subjects,
    depth: Arc<AtomicU64>,
}

impl Queue {
    pub(crate) fn new(js: jetstream::Context, subjects: Subjects) -> Self {
        Self {
            js,
            subjects,
            depth: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Publishes a ticket with `Nats-Msg-Id` = ticket id and waits for JetStream's ack: only an
    /// acked ticket may be promised to the buyer. `false` when JetStream already held it (a
    /// duplicate within its window), so that a re-entry can tell a stranded ticket it queued.
    pub(crate) async fn publish(
        &self,
        ticket: &TicketMessage,
        request_id: Option<&str>,
    ) -> Result<bool, PublishError> {
        let started = Instant::now();
        let outcome = publish_ticket(&self.js, &self.subjects, ticket, request_id).await;
        metrics::histogram!("flash_admission_publish_seconds")
            .record(started.elapsed().as_secs_f64());
        outcome.map(|ack| !ack.duplicate)
    }

    /// Tickets waiting in the queue, as of the last refresh.
    pub(crate) fn depth(&self) -> u64 {
        self.depth.load(Ordering::Relaxed)
    }

    /// Keeps [`Queue::depth`] current until shutdown.
    pub(crate) async fn watch_depth(
        self,
        mut stream: jetstream::stream::Stream,
        shutdown: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(DEPTH_REFRESH);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = tick.tick() => match stream.info().await {
                    Ok(info) => {
                        self.depth.store(info.state.messages, Ordering::Relaxed);
                        #[allow(clippy::cast_precision_loss)]
                        metrics::gauge!("flash_admission_queue_depth").set(info.state.messages as f64);
                    }
                    Err(err) => tracing::warn!(error = %err, "reading the queue depth failed"),
                },
            }
        }
    }
}
