//! The outbox relay: jobs written to PostgreSQL in the same transaction as the change that
//! caused them are published to JetStream (`jobs.payment`, `jobs.email`).
//!
//! Several relays may run: `for update skip locked` hands each row to one of them. A row is
//! published with `Nats-Msg-Id` = its outbox id and only then marked published, so a relay that
//! crashes in between republishes it later and JetStream's duplicate window drops the copy.

use std::time::Duration;

use async_nats::jetstream;
use flash_core::nats::publish_durably;
use sqlx::{PgPool, postgres::PgListener};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Rows published per transaction.
const BATCH: i64 = 200;
/// How long the relay sleeps without a notification before looking anyway.
const POLL_FALLBACK: Duration = Duration::from_secs(1);

/// Publishes outbox rows.
pub struct Relay {
    db: PgPool,
    js: jetstream::Context,
    subject_prefix: String,
    poll_fallback: Duration,
}

impl Relay {
    /// A relay publishing under `subject_prefix` (the deployment's NATS prefix).
    pub fn new(db: PgPool, js: jetstream::Context, subject_prefix: &str) -> Self {
        Self {
            db,
            js,
            subject_prefix: subject_prefix.to_owned(),
            poll_fallback: POLL_FALLBACK,
        }
    }

    /// Changes how long the relay waits without a notification (tests lengthen it to show
    /// that notifications alone wake the relay).
    #[must_use]
    pub fn with_poll_fallback(mut self, wait: Duration) -> Self {
        self.poll_fallback = wait;
        self
    }

    /// Publishes one batch of unpublished rows; returns how many.
    ///
    /// # Errors
    /// When PostgreSQL or JetStream fail; the rows stay unpublished and are retried.
    pub async fn relay_once(&self) -> anyhow::Result<usize> {
        let mut tx = self.db.begin().await?;
        let rows: Vec<(Uuid, String, String)> = sqlx::query_as(
            "select outbox_id, subject, payload::text from outbox
             where published_at is null order by created_at
             limit $1 for update skip locked",
        )
        .bind(BATCH)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let msg_ids: Vec<String> = rows.iter().map(|(id, _, _)| id.to_string()).collect();
        let publishes = rows
            .iter()
            .zip(&msg_ids)
            .map(|((_, subject, payload), msg_id)| {
                publish_durably(
                    &self.js,
                    format!("{}{subject}", self.subject_prefix),
                    msg_id,
                    payload.clone().into_bytes().into(),
                    None,
                )
            });
        for outcome in futures::future::join_all(publishes).await {
            outcome?;
        }
        let ids: Vec<Uuid> = rows.iter().map(|(id, _, _)| *id).collect();
        sqlx::query("update outbox set published_at = now() where outbox_id = any($1)")
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        metrics::counter!("flash_workers_outbox_published_total").increment(ids.len() as u64);
        Ok(ids.len())
    }

    /// Relays until shutdown: drains the outbox, then waits for a notification (or the
    /// polling fallback) and drains again.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut listener = match PgListener::connect_with(&self.db).await {
            Ok(mut listener) => match listener.listen("outbox").await {
                Ok(()) => Some(listener),
                Err(err) => {
                    tracing::warn!(error = %err, "LISTEN outbox failed; polling only");
                    None
                }
            },
            Err(err) => {
                tracing::warn!(error = %err, "no LISTEN connection; polling only");
                None
            }
        };
        while !shutdown.is_cancelled() {
            match self.relay_once().await {
                Ok(n) if n > 0 => continue,
                Ok(_) => {}
                Err(err) => {
                    tracing::error!(error.cause_chain = ?err, error.message = %err, "outbox relay failed; retrying")
                }
            }
            let wake = async {
                match listener.as_mut() {
                    Some(listener) => {
                        drop(tokio::time::timeout(self.poll_fallback, listener.recv()).await)
                    }
                    None => tokio::time::sleep(self.poll_fallback).await,
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = wake => {}
            }
        }
    }
}
