//! The fairness of a pre-queue spike (`loadtest spike --prequeue`): did the draw put every
//! pre-queued buyer ahead of the later arrivals, and were the later arrivals served first come
//! first served?

use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use flash_core::redis_model::Keys;

/// One entry after the start: its ticket, when its request left and when its answer came
/// (ms after the start).
#[derive(Debug, Clone, Copy)]
pub struct Arrival {
    /// The ticket it got.
    pub ticket: Uuid,
    /// Request sent.
    pub sent_ms: f64,
    /// Answer received.
    pub answered_ms: f64,
}

/// What the fairness check found.
#[derive(Debug, Clone, Serialize)]
pub struct Fairness {
    /// The draw's seed (with the tickets, it replays the order).
    pub seed: Option<i64>,
    /// Tickets in the pre-queue.
    pub prequeued: usize,
    /// Later arrivals given a queue number ahead of a pre-queued buyer's (should be 0).
    pub ahead_of_prequeue: usize,
    /// Later arrivals overtaken by one whose entry was answered before theirs was even sent
    /// (should be 0): first come first served, by what a client can observe.
    pub inversions: usize,
}

impl Fairness {
    /// Whether the pre-queue came first and the rest were first come first served.
    pub fn is_fair(&self) -> bool {
        self.ahead_of_prequeue == 0 && self.inversions == 0
    }
}

/// Reads every ticket's queue number and the sale's seed, and measures.
///
/// # Errors
/// When PostgreSQL or Redis fail.
pub async fn measure(
    db: &PgPool,
    redis: &flash_core::redis::Redis,
    keys: &Keys,
    sale: Uuid,
    prequeued: &[Uuid],
    arrivals: &[Arrival],
) -> anyhow::Result<Fairness> {
    let seed: Option<i64> =
        sqlx::query_scalar("select draw_seed from flash_sales where flash_sale_id = $1")
            .bind(sale)
            .fetch_one(db)
            .await?;
    let early = seqs(redis, keys, sale, prequeued).await?;
    let later = seqs(
        redis,
        keys,
        sale,
        &arrivals.iter().map(|a| a.ticket).collect::<Vec<_>>(),
    )
    .await?;
    let last_early = early.iter().copied().max().unwrap_or(0);
    let served: Vec<(Arrival, i64)> = arrivals
        .iter()
        .copied()
        .zip(later)
        .filter(|(_, seq)| *seq > 0)
        .collect();
    Ok(Fairness {
        seed,
        prequeued: prequeued.len(),
        ahead_of_prequeue: served.iter().filter(|(_, seq)| *seq < last_early).count(),
        inversions: inversions(&served),
    })
}

/// Later arrivals `b` for which some `a` was answered before `b` was sent yet got a later
/// queue number.
fn inversions(served: &[(Arrival, i64)]) -> usize {
    let mut by_sent: Vec<&(Arrival, i64)> = served.iter().collect();
    by_sent.sort_by(|x, y| x.0.sent_ms.total_cmp(&y.0.sent_ms));
    let mut by_answer: Vec<&(Arrival, i64)> = served.iter().collect();
    by_answer.sort_by(|x, y| x.0.answered_ms.total_cmp(&y.0.answered_ms));
    let (mut next, mut highest, mut overtaken) = (0, 0, 0);
    for (arrival, seq) in by_sent {
        while next < by_answer.len() && by_answer[next].0.answered_ms < arrival.sent_ms {
            highest = highest.max(by_answer[next].1);
            next += 1;
        }
        if highest > *seq {
            overtaken += 1;
        }
    }
    overtaken
}

/// The queue number of each ticket (0 for none).
async fn seqs(
    redis: &flash_core::redis::Redis,
    keys: &Keys,
    sale: Uuid,
    tickets: &[Uuid],
) -> anyhow::Result<Vec<i64>> {
    let mut found = Vec::with_capacity(tickets.len());
    for chunk in tickets.chunks(500) {
        let mut pipe = redis::pipe();
        for ticket in chunk {
            pipe.hget(keys.ticket(sale, *ticket), "seq");
        }
        let mut conn = redis.clone();
        let seqs: Vec<Option<i64>> = pipe.query_async(&mut conn).await?;
        found.extend(seqs.into_iter().map(Option::unwrap_or_default));
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arrival(sent_ms: f64, answered_ms: f64) -> Arrival {
        Arrival {
            ticket: Uuid::now_v7(),
            sent_ms,
            answered_ms,
        }
    }

    #[test]
    fn first_come_first_served_has_no_inversions() {
        let served = [
            (arrival(0.0, 5.0), 1),
            (arrival(6.0, 9.0), 2),
            (arrival(7.0, 8.0), 3),
        ];
        assert_eq!(inversions(&served), 0);
    }

    #[test]
    fn overlapping_requests_may_be_served_in_either_order() {
        // Both were in flight at once: no client could tell who came first.
        let served = [(arrival(0.0, 10.0), 2), (arrival(1.0, 9.0), 1)];
        assert_eq!(inversions(&served), 0);
    }

    #[test]
    fn an_overtaken_arrival_is_counted() {
        // The first was answered before the second was sent, yet served after it.
        let served = [(arrival(0.0, 2.0), 5), (arrival(3.0, 4.0), 4)];
        assert_eq!(inversions(&served), 1);
    }
}
