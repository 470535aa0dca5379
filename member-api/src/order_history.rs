//! The member's recent orders, fetched from catalog-api behind a circuit breaker.
//!
//! The profile must answer even when catalog-api is down or slow, so each call has a short
//! timeout, and when half or more of the last calls failed the breaker opens: the profile then
//! answers at once with `orders_unavailable: true` instead of waiting on a dead service. After a
//! cool-down one call is let through (half-open); its success closes the breaker again.
//!
//! The member's own access token is forwarded, so catalog-api applies its usual owner check
//! and member-api needs no credential of its own that could read every member's orders.

use std::{collections::VecDeque, time::Duration};

use failsafe::{StateMachine, failure_policy::FailurePolicy};
use serde_json::Value;

use crate::config::OrderHistoryArgs;

/// What the profile shows of the member's orders.
pub(crate) enum History {
    /// The most recent orders, as catalog-api renders them.
    Orders(Vec<Value>),
    /// catalog-api could not be asked (breaker open) or did not answer in time.
    Unavailable,
}

/// Client for `GET {catalog}/orders` guarded by the breaker.
pub(crate) struct OrderHistory {
    client: reqwest::Client,
    url: String,
    breaker: StateMachine<LastCalls, BreakerEvents>,
}

impl OrderHistory {
    pub(crate) fn new(args: &OrderHistoryArgs) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(args.order_history_timeout_ms))
            .connect_timeout(Duration::from_millis(args.order_history_timeout_ms))
            // Below catalog-api's HTTP_HEADER_READ_TIMEOUT_MS (40 s), which closes a kept-alive
            // connection idle that long: the pool lets go of it first.
            .pool_idle_timeout(Duration::from_secs(30))
            .build()?;
        let policy = LastCalls::new(
            args.breaker_window,
            args.breaker_failures,
            Duration::from_millis(args.breaker_cooldown_ms),
        );
        Ok(Self {
            client,
            url: format!(
                "{}/orders?limit={}",
                args.catalog_url.trim_end_matches('/'),
                args.order_history_limit
            ),
            breaker: StateMachine::new(policy, BreakerEvents),
        })
    }

    /// The member's recent orders, asking catalog-api with the member's own `authorization`.
    pub(crate) async fn recent(&self, authorization: &str) -> History {
        if !self.breaker.is_call_permitted() {
            metrics::counter!("flash_member_order_history_calls_total", "outcome" => "rejected")
                .increment(1);
            return History::Unavailable;
        }
        match self.fetch(authorization).await {
            Ok(orders) => {
                self.breaker.on_success();
                metrics::counter!("flash_member_order_history_calls_total", "outcome" => "ok")
                    .increment(1);
                History::Orders(orders)
            }
            Err(err) => {
                self.breaker.on_error();
                metrics::counter!("flash_member_order_history_calls_total", "outcome" => "failed")
                    .increment(1);
                tracing::warn!(error = %err, "order history unavailable");
                History::Unavailable
            }
        }
    }

    async fn fetch(&self, authorization: &str) -> anyhow::Result<Vec<Value>> {
        let response = self
            .client
            .get(&self.url)
            .header(reqwest::header::AUTHORIZATION, authorization)
            .send()
            .await?
            .error_for_status()?;
        let mut page: Value = response.json().await?;
        match page.get_mut("items").map(Value::take) {
            Some(Value::Array(orders)) => Ok(orders),
            _ => anyhow::bail!("catalog-api answered without an `items` list"),
        }
    }
}

/// Breaker policy: open when at least `failures` of the last `window` calls failed.
struct LastCalls {
    outcomes: VecDeque<bool>,
    window: usize,
    failures: usize,
    cooldown: Duration,
}

impl LastCalls {
    fn new(window: usize, failures: usize, cooldown: Duration) -> Self {
        let window = window.max(1);
        Self {
            outcomes: VecDeque::with_capacity(window),
            window,
            failures: failures.clamp(1, window),
            cooldown,
        }
    }

    fn record(&mut self, ok: bool) {
        if self.outcomes.len() == self.window {
            self.outcomes.pop_front();
        }
        self.outcomes.push_back(ok);
    }
}

impl FailurePolicy for LastCalls {
    fn record_success(&mut self) {
        self.record(true);
    }

    fn mark_dead_on_failure(&mut self) -> Option<Duration> {
        self.record(false);
        let failed = self.outcomes.iter().filter(|ok| !**ok).count();
        (failed >= self.failures).then_some(self.cooldown)
    }

    fn revived(&mut self) {
        self.outcomes.clear();
    }
}

/// Logs and counts the breaker's state changes.
struct BreakerEvents;

impl failsafe::Instrument for BreakerEvents {
    fn on_call_rejected(&self) {}

    fn on_open(&self) {
        tracing::warn!("order-history breaker opened: catalog-api is failing");
        transition("open");
    }

    fn on_half_open(&self) {
        tracing::info!("order-history breaker half-open: trying catalog-api again");
        transition("half_open");
    }

    fn on_closed(&self) {
        tracing::info!("order-history breaker closed: catalog-api answers again");
        transition("closed");
    }
}

fn transition(to: &'static str) {
    metrics::counter!("flash_member_order_history_breaker_transitions_total", "to" => to)
        .increment(1);
    metrics::gauge!("flash_member_order_history_breaker_open").set(if to == "open" {
        1.0
    } else {
        0.0
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_when_half_of_the_last_ten_calls_failed() {
        let mut policy = LastCalls::new(10, 5, Duration::from_secs(5));
        for _ in 0..6 {
            policy.record_success();
        }
        for _ in 0..4 {
            assert_eq!(policy.mark_dead_on_failure(), None);
        }
        assert_eq!(policy.mark_dead_on_failure(), Some(Duration::from_secs(5)));
    }

    #[test]
    fn old_failures_slide_out_of_the_window() {
        let mut policy = LastCalls::new(10, 5, Duration::from_secs(5));
        for _ in 0..4 {
            policy.mark_dead_on_failure();
        }
        for _ in 0..10 {
            policy.record_success();
        }
        assert_eq!(
            policy.mark_dead_on_failure(),
            None,
            "the 4 early failures left the window"
        );
    }
}
