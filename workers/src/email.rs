//! Email jobs: each email is recorded and delivered once, retried with backoff, and
//! dead-lettered (status `dead`) after `EMAIL_MAX_ATTEMPTS` tries.
//!
//! Delivery goes through SMTP (lettre) when `SMTP_URL` is set; otherwise the message is written
//! as `<email_id>.eml` into the mail folder for a developer to open. The file is named by the
//! email id and replaced atomically, so a redelivered job never produces a second mail. Over
//! SMTP the row's `sent` status is what prevents a second send; a crash between the server's
//! acceptance and that update can still repeat one mail (SMTP offers no idempotency key).

use std::{path::PathBuf, time::Duration};

use async_nats::jetstream::{self, AckKind, consumer::PullConsumer};
use chrono::Utc;
use flash_core::{
    domain::{OrderId, OrderStatus},
    jobs::{EmailJob, EmailMessage},
};
use lettre::{
    Address, AsyncSmtpTransport, AsyncTransport, Tokio1Executor, address::Envelope,
    message::Mailbox,
};
use sqlx::PgPool;
use uuid::Uuid;

use crate::progress::in_progress;

/// Where mail goes.
pub enum Delivery {
    /// Each mail becomes `<email_id>.eml` in this folder.
    Folder(PathBuf),
    /// Each mail is sent through this SMTP server.
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
}

impl Delivery {
    /// SMTP when `smtp_url` is given, else the mail folder.
    ///
    /// # Errors
    /// When the SMTP URL is malformed.
    pub fn from_config(smtp_url: Option<&str>, folder: PathBuf) -> anyhow::Result<Self> {
        match smtp_url {
            Some(url) => Ok(Self::Smtp(
                AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
                    .map_err(|e| anyhow::anyhow!("SMTP_URL is not usable: {e}"))?
                    .build(),
            )),
            None => Ok(Self::Folder(folder)),
        }
    }
}

/// Email jobs taken at once: recorded and marked in one statement each, delivered concurrently.
const BATCH: usize = 256;

/// Name of the durable consumer of email jobs.
const EMAILS_CONSUMER: &str = "emails";

/// Runs email jobs.
pub struct Emails {
    db: PgPool,
    consumer: PullConsumer,
    delivery: Delivery,
    from: Mailbox,
    max_attempts: i64,
}

impl Emails {
    /// Email jobs from the jobs stream (consumer created if absent), sent through `delivery`
    /// from `from` (e.g. `Flash Shop <shop@flash.local>`).
    ///
    /// # Errors
    /// When the consumer cannot be created or `from` is not an address.
    pub async fn new(
        db: PgPool,
        jobs: &jetstream::stream::Stream,
        subject_prefix: &str,
        delivery: Delivery,
        from: &str,
        max_attempts: i64,
    ) -> anyhow::Result<Self> {
        let from: Mailbox = from
            .parse()
            .map_err(|e| anyhow::anyhow!("MAIL_FROM {from:?} is not an address: {e}"))?;
        let consumer = jobs
            .get_or_create_consumer(
                EMAILS_CONSUMER,
                jetstream::consumer::pull::Config {
                    durable_name: Some(EMAILS_CONSUMER.to_owned()),
                    filter_subject: format!("{subject_prefix}{}", EmailJob::SUBJECT),
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    ack_wait: flash_core::nats::WORK_ACK_WAIT,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| anyhow::anyhow!("creating the emails consumer: {e}"))?;
        Ok(Self {
            db,
            consumer,
            delivery,
            from,
            max_attempts,
        })
    }

    /// Runs one batch of email jobs; returns how many were taken. The batch is recorded in one
    /// statement and its sent mails marked in another, whatever its size; the mails themselves
    /// go out concurrently.
    ///
    /// # Errors
    /// When NATS fails; when PostgreSQL fails the whole batch is retried.
    pub async fn run_once(&self) -> anyhow::Result<usize> {
        let messages =
            flash_core::nats::fetch_batch(&self.consumer, BATCH, Duration::from_millis(200))
                .await?;
        let mut jobs = Vec::new();
        for (i, message) in messages.iter().enumerate() {
            match serde_json::from_slice::<EmailJob>(&message.payload) {
                Ok(job) => jobs.push((i, job)),
                Err(err) => tracing::error!(error = %err, "unreadable email job dropped"),
            }
        }
        let mut acks = vec![AckKind::Ack; messages.len()];
        let backoff = |i: usize| {
            let delivered = messages[i].info().map(|i| i.delivered).unwrap_or(1);
            // Back off: 1 s, 2 s, 4 s, … capped at a minute.
            AckKind::Nak(Some(Duration::from_secs(1 << delivered.clamp(0, 6))))
        };
        match in_progress(messages.iter(), self.handle_all(&messages, &jobs)).await {
            Ok(failed) => {
                for i in failed {
                    acks[i] = backoff(i);
                }
            }
            Err(err) => {
                tracing::warn!(error.cause_chain = ?err, error.message = %err, emails = jobs.len(), "a batch of email jobs failed; it will be retried");
                for (i, _) in &jobs {
                    acks[*i] = backoff(*i);
                }
            }
        }
        for (message, ack) in messages.iter().zip(acks) {
            message
                .ack_with(ack)
                .await
                .map_err(|e| anyhow::anyhow!("acking an email job: {e}"))?;
        }
        Ok(messages.len())
    }

    /// Records, delivers and marks a batch of emails; returns the places (in `messages`) of
    /// the jobs to retry.
    async fn handle_all(
        &self,
        messages: &[jetstream::Message],
        jobs: &[(usize, EmailJob)],
    ) -> anyhow::Result<Vec<usize>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let rendered: Vec<_> = jobs.iter().map(|(_, job)| render(&job.message)).collect();
        // INVARIANT: each email is recorded once and sent at most once. A member deleted since
        // the job was queued is recorded as none (as `on delete set null` would have left it),
        // so one such job cannot fail the whole batch on the foreign key.
        sqlx::query(
            "insert into emails (email_id, member_id, to_address, kind, subject)
             select t.id, m.member_id, t.address, t.kind, t.subject
             from unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[])
                  as t(id, member, address, kind, subject)
             left join members m on m.member_id = t.member
             on conflict (email_id) do nothing",
        )
        .bind(jobs.iter().map(|(_, j)| j.email_id).collect::<Vec<_>>())
        .bind(
            jobs.iter()
                .map(|(_, j)| j.member_id.map(|m| m.get()))
                .collect::<Vec<_>>(),
        )
        .bind(jobs.iter().map(|(_, j)| j.to.as_str()).collect::<Vec<_>>())
        .bind(
            rendered
                .iter()
                .map(|(kind, _, _)| *kind)
                .collect::<Vec<_>>(),
        )
        .bind(
            rendered
                .iter()
                .map(|(_, subject, _)| subject.as_str())
                .collect::<Vec<_>>(),
        )
        .execute(&self.db)
        .await?;
        let pending: Vec<Uuid> = sqlx::query_scalar(
            "select email_id from emails where email_id = any($1) and status = 'pending'",
        )
        .bind(jobs.iter().map(|(_, j)| j.email_id).collect::<Vec<_>>())
        .fetch_all(&self.db)
        .await?;
        // A job the batch holds twice is sent once.
        let mut to_send: Vec<(usize, &EmailJob, &(&str, String, String))> = Vec::new();
        for ((i, job), rendered) in jobs.iter().zip(&rendered) {
            if pending.contains(&job.email_id)
                && !to_send.iter().any(|(_, j, _)| j.email_id == job.email_id)
            {
                to_send.push((*i, job, rendered));
            }
        }
        let delivered = futures::future::join_all(to_send.iter().map(|(_, job, rendered)| {
            let (_, subject, body) = rendered;
            let message = self.compose(job, subject, body);
            async move {
                self.deliver(&job.email_id.to_string(), &job.to, &message)
                    .await
            }
        }))
        .await;
        let mut sent = Vec::new();
        let mut failed = Vec::new();
        for ((i, job, _), outcome) in to_send.iter().zip(delivered) {
            match outcome {
                Ok(()) => sent.push(job.email_id),
                Err(err) => failed.push((*i, job.email_id, err)),
            }
        }
        // Mark what went out first: should a later statement fail, the batch is retried, and
        // these must not be sent again.
        sqlx::query(
            "update emails set status = 'sent', sent_at = now(), attempts = attempts + 1
             where email_id = any($1) and status = 'pending'",
        )
        .bind(&sent)
        .execute(&self.db)
        .await?;
        metrics::counter!("flash_workers_emails_total", "outcome" => "sent")
            .increment(sent.len() as u64);
        let mut retry = Vec::new();
        for (i, email, err) in failed {
            let tries = messages[i].info().map(|i| i.delivered).unwrap_or(1);
            if !self.give_up(email, tries, &err).await? {
                tracing::warn!(error.cause_chain = ?err, error.message = %err, email_id = %email, "delivering an email failed; it will be retried");
                retry.push(i);
            }
        }
        Ok(retry)
    }

    /// Counts a failed try; after `max_attempts` the email is dead-lettered (true).
    async fn give_up(&self, email: Uuid, tries: i64, err: &anyhow::Error) -> anyhow::Result<bool> {
        let dead = tries >= self.max_attempts;
        sqlx::query(
            "update emails set attempts = attempts + 1, last_error = $2,
                    status = case when $3 then 'dead' else status end
             where email_id = $1",
        )
        .bind(email)
        .bind(err.to_string())
        .bind(dead)
        .execute(&self.db)
        .await?;
        if dead {
            tracing::error!(error = %err, email_id = %email, "email dead-lettered after {tries} tries");
            metrics::counter!("flash_workers_emails_total", "outcome" => "dead").increment(1);
        }
        Ok(dead)
    }

    /// The mail as it goes out: headers on one line each, then the plain-text body.
    fn compose(&self, job: &EmailJob, subject: &str, body: &str) -> String {
        format!(
            "From: {from}\r\nTo: {to}\r\nSubject: {subject}\r\nDate: {date}\r\nMessage-ID: <{id}@flash.local>\r\n\
             MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n",
            from = single_line(&self.from.to_string()),
            to = single_line(&job.to),
            subject = single_line(subject),
            date = Utc::now().to_rfc2822(),
            id = job.email_id,
        )
    }

    /// Sends the message, or writes it as `<id>.eml` atomically (a reader never sees half a
    /// mail).
    async fn deliver(&self, id: &str, to: &str, message: &str) -> anyhow::Result<()> {
        match &self.delivery {
            Delivery::Folder(folder) => {
                tokio::fs::create_dir_all(folder).await?;
                let partial = folder.join(format!(".{id}.eml.partial"));
                tokio::fs::write(&partial, message).await?;
                tokio::fs::rename(&partial, folder.join(format!("{id}.eml"))).await?;
            }
            Delivery::Smtp(transport) => {
                let to: Address = to
                    .parse()
                    .map_err(|e| anyhow::anyhow!("recipient {to:?}: {e}"))?;
                let envelope = Envelope::new(Some(self.from.email.clone()), vec![to])?;
                transport.send_raw(&envelope, message.as_bytes()).await?;
            }
        }
        Ok(())
    }
}

/// Header values must stay on one line (no header injection).
fn single_line(text: &str) -> String {
    text.replace(['\r', '\n'], " ")
}

/// The stored kind, subject and plain-text body of a message.
fn render(message: &EmailMessage) -> (&'static str, String, String) {
    match message {
        EmailMessage::VerifyEmail { name, token } => (
            "verify_email",
            "Confirm your email address".to_owned(),
            format!(
                "Hello {name},\r\n\r\nconfirm your address with this one-time token (valid 24 hours):\r\n\r\n    {token}\r\n\r\nPOST it as {{\"token\": \"...\"}} to /members/verify-email.\r\n"
            ),
        ),
        EmailMessage::OrderConfirmation {
            order_id,
            total_cents,
            currency,
        } => (
            "order_confirmation",
            "Your order is confirmed".to_owned(),
            format!(
                "Thank you! Order {order_id} is paid: {} {currency}.\r\n",
                money(*total_cents)
            ),
        ),
        EmailMessage::PaymentFailed { order_id } => (
            "payment_failed",
            "Your payment did not go through".to_owned(),
            format!(
                "We could not charge order {order_id}, so it was cancelled and its items released.\r\n"
            ),
        ),
        EmailMessage::OrderProgress {
            order_id,
            status,
            tracking_ref,
        } => progress(*order_id, *status, tracking_ref.as_deref()),
    }
}

/// The email of one lifecycle step.
fn progress(
    order: OrderId,
    status: OrderStatus,
    tracking: Option<&str>,
) -> (&'static str, String, String) {
    let (subject, body) = match status {
        OrderStatus::Preparing => (
            "We are preparing your order",
            format!("Order {order} is being packed.\r\n"),
        ),
        OrderStatus::Shipped => (
            "Your order is on its way",
            format!(
                "Order {order} left our warehouse. Tracking reference: {}.\r\n",
                tracking.unwrap_or("not given")
            ),
        ),
        OrderStatus::Delivered => (
            "Your order was delivered",
            format!(
                "Order {order} was delivered. Not right? You may return it within the return window.\r\n"
            ),
        ),
        OrderStatus::Cancelled => (
            "Your order is cancelled",
            format!("Order {order} is cancelled; anything you paid is refunded.\r\n"),
        ),
        OrderStatus::ReturnRequested => (
            "We are expecting your return",
            format!(
                "We registered the return of order {order}. Send the parcel back; we refund you once it arrives.\r\n"
            ),
        ),
        OrderStatus::Returned => (
            "Your return arrived",
            format!("The return of order {order} arrived; your refund is on its way.\r\n"),
        ),
        OrderStatus::PendingPayment | OrderStatus::Paid => (
            "Your order was updated",
            format!("Order {order} is now {status}.\r\n"),
        ),
    };
    ("order_progress", subject.to_owned(), body)
}

fn money(cents: i64) -> String {
    format!("{}.{:02}", cents / 100, (cents % 100).abs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_cannot_inject_headers() {
        assert_eq!(single_line("a@b.c\r\nBcc: x@y.z"), "a@b.c  Bcc: x@y.z");
    }

    #[test]
    fn amounts_render_in_major_units() {
        assert_eq!(money(12_900), "129.00");
        assert_eq!(money(5), "0.05");
    }
}
