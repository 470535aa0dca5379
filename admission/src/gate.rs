//! The door's Redis side: entries and ticket reads over the door's fast connection, with what
//! a process remembers of its sales.
//!
//! An entry is one call of the data model's entry script
//! ([`flash_core::redis_model::entry`]): it returns the buyer's existing ticket if they have
//! one (re-entry never takes a second unit), else checks the sale window, takes a unit from
//! the gate and creates a `queued` ticket, or waitlists the buyer, or records a `sold_out`
//! ticket. This module chooses the connection and keeps the process-local maps that spare a
//! poll every read but its ticket's.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use flash_core::redis::Redis;
use flash_core::{
    domain::{MemberId, TicketStatus},
    redis_model::{
        self, Keys,
        entry::{self, Entry, EntryCall, SEEN_FIELD, TICKET_FIELDS, TicketFields},
    },
};
use uuid::Uuid;

use crate::{pipelined::Pipelined, ticket_id};

/// A ticket as Redis holds it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TicketState {
    pub(crate) sale: Uuid,
    pub(crate) member: Uuid,
    pub(crate) status: TicketStatus,
    pub(crate) seq: i64,
    pub(crate) order_id: Option<Uuid>,
    /// Highest sequence number the workers finished.
    pub(crate) served: i64,
    /// Tickets drained per second lately (0 when unknown).
    pub(crate) drain_rate: f64,
    /// An admin holds the sale: nothing drains until it resumes.
    pub(crate) paused: bool,
    /// Waitlisted buyers ahead of this one plus one (waitlisted tickets only).
    pub(crate) waitlist_position: Option<i64>,
    /// When the pre-queue is drawn: the sale's start (pre-queued tickets only).
    pub(crate) draw_at: Option<DateTime<Utc>>,
}

/// How long a process trusts what it read of a sale: its paused flag and start, and how far
/// its queue has been served. Every poll needs them and all of a sale's buyers share them, so a
/// poll reads only its own ticket from Redis; a position or a pause reaches a waiting buyer at
/// most this much later, well inside the shortest poll interval (250 ms).
const SALE_FRESH_FOR: Duration = Duration::from_millis(100);

/// Sales whose flags a process remembers; cleared when full.
const KNOWN_SALES: usize = 10_000;

/// What a poll needs to know of its sale besides the ticket.
#[derive(Debug, Clone, Copy)]
struct SaleView {
    paused: bool,
    starts_at: Option<i64>,
    abandon_after_secs: u32,
    /// Tickets the workers have decided so far.
    served: i64,
    /// Orders per second the workers measured, 0 when unknown.
    drain_rate: f64,
    read_at: Instant,
}

/// How long a process trusts what it read of a tag's sales, and how often it re-registers a
/// sale it admits to (so a Redis that lost the tag set learns it again within this long).
const TAGS_FRESH_FOR: Duration = Duration::from_secs(60);

/// A tag's sales as this process last read or wrote them.
#[derive(Debug, Clone)]
struct TagSales {
    sales: Vec<Uuid>,
    read_at: Instant,
}

/// Entry and ticket operations on Redis.
#[derive(Clone)]
pub(crate) struct Gate {
    redis: Redis,
    /// The door's own connection for the two hot commands, an entry's script and a poll's
    /// read (see [`Pipelined`]); `None` for a Redis it does not speak to (a Unix socket),
    /// where they go through `redis` like the rest.
    pipelined: Option<Pipelined>,
    keys: Keys,
    /// Sales this process admits to, and when it last registered their tag.
    registered: Arc<Mutex<Local<Uuid, Instant>>>,
    tags: Arc<Mutex<Local<u32, TagSales>>>,
    sales: Arc<Mutex<Local<Uuid, SaleView>>>,
}

impl Gate {
    pub(crate) fn new(redis: Redis, pipelined: Option<Pipelined>, keys: Keys) -> Self {
        Self {
            redis,
            pipelined,
            keys,
            registered: Arc::default(),
            tags: Arc::default(),
            sales: Arc::default(),
        }
    }

    /// Makes sure Redis lists `sale` under its tag before the door hands out a ticket of it;
    /// a round trip on the sale's first entry in this process, then once per
    /// [`TAGS_FRESH_FOR`].
    async fn register(&self, sale: Uuid) -> redis::RedisResult<()> {
        let fresh = lock(&self.registered)
            .get(&sale)
            .is_some_and(|at| at.elapsed() < TAGS_FRESH_FOR);
        if fresh {
            return Ok(());
        }
        redis_model::register_tag(&self.redis, &self.keys, sale).await?;
        let tag = ticket_id::sale_tag(sale);
        let mut registered = lock(&self.registered);
        if registered.len() >= KNOWN_SALES {
            registered.clear();
        }
        registered.insert(sale, Instant::now());
        drop(registered);
        let mut tags = lock(&self.tags);
        let known = tags.entry(tag).or_insert_with(|| TagSales {
            sales: Vec::new(),
            read_at: Instant::now(),
        });
        if !known.sales.contains(&sale) {
            known.sales.push(sale);
        }
        Ok(())
    }

    /// The sales whose tickets carry `tag`, and whether they came from memory (fresh ones do,
    /// unless `reread`) rather than from Redis.
    async fn sales_tagged(&self, tag: u32, reread: bool) -> redis::RedisResult<(Vec<Uuid>, bool)> {
        if !reread
            && let Some(known) = lock(&self.tags)
                .get(&tag)
                .filter(|t| t.read_at.elapsed() < TAGS_FRESH_FOR)
        {
            return Ok((known.sales.clone(), true));
        }
        let mut conn = self.redis.clone();
        let members: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.keys.sale_tag(tag))
            .query_async(&mut conn)
            .await?;
        let sales: Vec<Uuid> = members.iter().filter_map(|s| s.parse().ok()).collect();
        let mut tags = lock(&self.tags);
        if tags.len() >= KNOWN_SALES {
            tags.clear();
        }
        tags.insert(
            tag,
            TagSales {
                sales: sales.clone(),
                read_at: Instant::now(),
            },
        );
        Ok((sales, false))
    }

    /// Decides an entry of `member` into `sale` (one round trip), and registers the sale
    /// under its tag once the entry made or found a ticket, before anyone can poll it: a sale
    /// that does not exist is never registered, so made-up sale ids leave no keys behind. A
    /// unit taken for a ticket that cannot be registered goes back.
    pub(crate) async fn enter(
        &self,
        sale: Uuid,
        member: MemberId,
        now: DateTime<Utc>,
        work: u32,
    ) -> redis::RedisResult<Entry> {
        let entry = self.decide(sale, member, now, work).await?;
        let holds_ticket = matches!(
            entry,
            Entry::Queued { .. }
                | Entry::Waitlisted { .. }
                | Entry::Prequeued { .. }
                | Entry::SoldOut { .. }
                | Entry::Existing { .. }
        );
        if holds_ticket && let Err(err) = self.register(sale).await {
            if let Entry::Queued { ticket, .. } = entry {
                // Not published yet: no worker can hold it, so the undo withdraws it.
                self.undo(sale, member, ticket).await?;
            }
            return Err(err);
        }
        Ok(entry)
    }

    /// The entry script's decision.
    async fn decide(
        &self,
        sale: Uuid,
        member: MemberId,
        now: DateTime<Utc>,
        work: u32,
    ) -> redis::RedisResult<Entry> {
        let call = EntryCall::new(
            &self.keys,
            sale,
            member,
            ticket_id::new_ticket(sale),
            now,
            work,
        );
        match &self.pipelined {
            Some(pipelined) => {
                let reply = pipelined
                    .eval_text(EntryCall::script(), &call.keys(), &call.args())
                    .await?;
                Ok(entry::parse_entry(&reply))
            }
            None => call.run(&self.redis).await,
        }
    }

    /// The ticket `member` holds in `sale`, if Redis knows one: the waiting room asks on
    /// arrival, so a buyer who reloads the page finds their place again.
    pub(crate) async fn member_ticket(
        &self,
        sale: Uuid,
        member: MemberId,
    ) -> redis::RedisResult<Option<Uuid>> {
        let mut conn = self.redis.clone();
        let ticket: Option<String> = redis::cmd("GET")
            .arg(self.keys.member_ticket(sale, member.get()))
            .query_async(&mut conn)
            .await?;
        Ok(ticket.and_then(|t| t.parse::<Uuid>().ok()))
    }

    /// When `sale` opens, if Redis holds its metadata (remembered like the paused flag).
    pub(crate) async fn starts_at(&self, sale: Uuid) -> redis::RedisResult<Option<DateTime<Utc>>> {
        Ok(self
            .sale_view(sale)
            .await?
            .starts_at
            .and_then(DateTime::from_timestamp_millis))
    }

    /// Takes back a queued ticket whose publish failed: the unit returns to the gate and the
    /// ticket becomes `withdrawn`, unless a worker claimed it (the publish was stored after all).
    pub(crate) async fn undo(
        &self,
        sale: Uuid,
        member: MemberId,
        ticket: Uuid,
    ) -> redis::RedisResult<entry::Undo> {
        entry::undo(&self.redis, &self.keys, sale, member, ticket).await
    }

    /// The ticket's state, or `None` when Redis does not know it. The ticket's id names its
    /// sale's tag; a tag read from memory that leads nowhere is read again from Redis, in case
    /// another process registered a sale with the same tag since.
    pub(crate) async fn ticket(&self, ticket: Uuid) -> redis::RedisResult<Option<TicketState>> {
        let Some(tag) = ticket_id::ticket_tag(ticket) else {
            return Ok(None);
        };
        let (sales, remembered) = self.sales_tagged(tag, false).await?;
        if let Some(state) = self.ticket_in_any(&sales, ticket).await? {
            return Ok(Some(state));
        }
        if !remembered {
            return Ok(None);
        }
        let (sales, _) = self.sales_tagged(tag, true).await?;
        self.ticket_in_any(&sales, ticket).await
    }

    /// The ticket's state in the first of `sales` that holds it.
    async fn ticket_in_any(
        &self,
        sales: &[Uuid],
        ticket: Uuid,
    ) -> redis::RedisResult<Option<TicketState>> {
        for sale in sales {
            if let Some(state) = self.ticket_in(*sale, ticket).await? {
                return Ok(Some(state));
            }
        }
        Ok(None)
    }

    /// The ticket's state if it is one of `sale`'s.
    async fn ticket_in(&self, sale: Uuid, ticket: Uuid) -> redis::RedisResult<Option<TicketState>> {
        let mut conn = self.redis.clone();
        let key = self.keys.ticket(sale, ticket);
        let values = match &self.pipelined {
            Some(pipelined) => pipelined.hmget(&key, TICKET_FIELDS).await?,
            None => {
                redis::cmd("HMGET")
                    .arg(&key)
                    .arg(&TICKET_FIELDS)
                    .query_async(&mut conn)
                    .await?
            }
        };
        let Some(TicketFields {
            member,
            status,
            seq,
            order_id,
            wseq,
        }) = TicketFields::parse(values)?
        else {
            return Ok(None);
        };
        let view = self.sale_view(sale).await?;
        // A poll is the buyer's sign of life: a sale that expires abandoned tickets needs it.
        if view.abandon_after_secs > 0
            && matches!(status, TicketStatus::Queued | TicketStatus::Prequeued)
        {
            redis::cmd("HSET")
                .arg(&key)
                .arg(SEEN_FIELD)
                .arg(Utc::now().timestamp_millis())
                .query_async::<()>(&mut conn)
                .await?;
        }
        // Only a waitlisted ticket needs the waitlist's progress: a second, rare round trip.
        let waitlist_left: Option<i64> = if status == TicketStatus::Waitlisted {
            redis::cmd("GET")
                .arg(self.keys.sale_waitlist_left(sale))
                .query_async(&mut conn)
                .await?
        } else {
            None
        };
        Ok(Some(TicketState {
            sale,
            member,
            seq,
            order_id,
            served: view.served,
            drain_rate: view.drain_rate,
            paused: view.paused,
            waitlist_position: wseq
                .filter(|_| status == TicketStatus::Waitlisted)
                .map(|wseq| (wseq - waitlist_left.unwrap_or(0)).max(1)),
            draw_at: (status == TicketStatus::Prequeued)
                .then(|| view.starts_at.and_then(DateTime::from_timestamp_millis))
                .flatten(),
            status,
        }))
    }

    /// What polls need of `sale`, remembered for [`SALE_FRESH_FOR`].
    async fn sale_view(&self, sale: Uuid) -> redis::RedisResult<SaleView> {
        if let Some(view) = lock(&self.sales)
            .get(&sale)
            .filter(|v| v.read_at.elapsed() < SALE_FRESH_FOR)
        {
            return Ok(*view);
        }
        let mut conn = self.redis.clone();
        #[allow(clippy::type_complexity)]
        let ((paused, starts_at, abandon), served, rate): (
            (Option<u8>, Option<i64>, Option<u32>),
            Option<i64>,
            Option<f64>,
        ) = redis::pipe()
            .cmd("HMGET")
            .arg(self.keys.sale_meta(sale))
            .arg(&["paused", "starts_at", "abandon"])
            .cmd("GET")
            .arg(self.keys.sale_served(sale))
            .cmd("GET")
            .arg(self.keys.sale_drain_rate(sale))
            .query_async(&mut conn)
            .await?;
        let view = SaleView {
            paused: paused == Some(1),
            starts_at,
            abandon_after_secs: abandon.unwrap_or(0),
            served: served.unwrap_or(0),
            drain_rate: rate.unwrap_or(0.0),
            read_at: Instant::now(),
        };
        let mut known = lock(&self.sales);
        if known.len() >= KNOWN_SALES {
            known.clear();
        }
        known.insert(sale, view);
        Ok(view)
    }
}

/// A process-local map, hashed with foldhash (SipHash was a tenth of a poll's read). Its
/// size is capped ([`KNOWN_SALES`]) and its seed random per process.
type Local<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Locks a process-local map; each use is one map operation, so a panic elsewhere cannot leave it
/// half-changed and a poisoned lock is still safe to use.
fn lock<K, V>(map: &Mutex<Local<K, V>>) -> std::sync::MutexGuard<'_, Local<K, V>> {
    map.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use chrono::Duration as Span;
    use flash_core::{
        redis_model::sale_gate::{self, Arm, SaleMeta},
        testing::Isolation,
    };

    use super::*;

    /// The door speaks to Redis over its own pipelined connection, or through the `redis`
    /// crate when the URL names a server that connection does not speak to (a Unix socket).
    /// Both must decide entries and read tickets alike.
    #[tokio::test]
    async fn entries_and_tickets_read_alike_over_either_connection() {
        let iso = Isolation::new();
        let redis = flash_core::redis::connect(&iso.redis).await.unwrap();
        let keys = Keys::new(&iso.redis.redis_key_prefix);
        let pipelined = Pipelined::start(&iso.redis.redis_url, std::time::Duration::from_secs(2))
            .unwrap()
            .expect("a TCP Redis URL");
        let gates = [
            Gate::new(redis.clone(), None, keys.clone()),
            Gate::new(redis.clone(), Some(pipelined), keys.clone()),
        ];
        let now = Utc::now();
        let sale = Uuid::now_v7();
        let meta = SaleMeta::open(now - Span::minutes(1), now + Span::hours(1), 1);
        sale_gate::arm(&redis, &keys, sale, 3, &meta, Arm::IfAbsent)
            .await
            .unwrap();
        let mut seen = Vec::new();
        for (i, gate) in gates.iter().enumerate() {
            let member = MemberId::new();
            let Entry::Queued { ticket, seq } = gate.enter(sale, member, now, 0).await.unwrap()
            else {
                panic!("gate {i}: the first entry is queued");
            };
            assert_eq!(seq, i64::try_from(i).unwrap() + 1, "gate {i}");
            let again = gate.enter(sale, member, now, 0).await.unwrap();
            assert!(
                matches!(again, Entry::Existing { ticket: t, .. } if t == ticket),
                "gate {i}: {again:?}"
            );
            for reader in &gates {
                let state = reader.ticket(ticket).await.unwrap().expect("the ticket");
                assert_eq!(
                    (state.status, state.member, state.seq, state.sale),
                    (TicketStatus::Queued, member.get(), seq, sale),
                    "entered at gate {i}"
                );
            }
            seen.push(ticket);
        }
        let unknown = ticket_id::new_ticket(sale);
        for gate in &gates {
            assert!(gate.ticket(unknown).await.unwrap().is_none());
        }
        assert_ne!(seen[0], seen[1]);
        iso.cleanup().await;
    }
}
