//! Progress acks for a batch being worked on. Every work-queue consumer (tickets, charges,
//! mails) has a short ack wait ([`WORK_ACK_WAIT`]) so that what a dead worker held comes back
//! within seconds; a live worker's slow batch (PostgreSQL under load, a slow provider) must not
//! come back too, so the worker tells JetStream it is still at it.
//!
//! [`WORK_ACK_WAIT`]: flash_core::nats::WORK_ACK_WAIT

use std::future::Future;

use async_nats::jetstream::{self, AckKind};
use flash_core::nats::WORK_PROGRESS_EVERY;

/// Runs `work`, sending a progress ack (`+WPI`) for each of `messages` every
/// [`WORK_PROGRESS_EVERY`] until it is done.
pub(crate) async fn in_progress<'a, T>(
    messages: impl Iterator<Item = &'a jetstream::Message> + Clone,
    work: impl Future<Output = T>,
) -> T {
    let mut work = std::pin::pin!(work);
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + WORK_PROGRESS_EVERY,
        WORK_PROGRESS_EVERY,
    );
    loop {
        tokio::select! {
            done = &mut work => return done,
            _ = tick.tick() => {
                for message in messages.clone() {
                    // A lost progress ack only risks a redelivery, which every consumer absorbs.
                    if let Err(err) = message.ack_with(AckKind::Progress).await {
                        tracing::warn!(error = %err, "a progress ack failed");
                    }
                }
            }
        }
    }
}
