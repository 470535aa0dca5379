//! The Redis denylist of logged-out access tokens, and a feed that mirrors it in memory.
//!
//! PostgreSQL's `ended_sessions` is the truth of which sessions ended; Redis holds a copy that
//! every request can ask in one round trip. A marker key says the copy is whole: Redis that
//! lost its keys (a restart without persistence, a `FLUSHALL`) has lost the marker too, and the
//! first check that notices refills the copy from PostgreSQL before it answers. A logout is
//! never undone by Redis forgetting it.
//!
//! Every denial is written and announced on a pub/sub channel in one `MULTI`. A service that
//! follows the channel ([`DenylistFeed`]) learns of a logout as it happens, so it can trust a
//! token it checked earlier without asking Redis again on every request: the front door's
//! polls and entries then cost one Redis round trip less. Trust lasts only while the
//! subscription is provably unbroken; a feed that lost it, even for a moment, sends its callers
//! back to asking Redis.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use crate::redis::Redis;
use anyhow::Context;
use futures::StreamExt;
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::Claims;
use crate::{problem::ApiError, redis_model::Keys};

/// The Redis denylist of logged-out access tokens, refilled from PostgreSQL when Redis lost it.
#[derive(Clone)]
pub struct Denylist {
    redis: Redis,
    keys: Keys,
    db: PgPool,
    /// One refill at a time per process: a Redis that lost everything at 10:00 is refilled once,
    /// not by every request that noticed.
    refilling: Arc<tokio::sync::Mutex<()>>,
}

/// What a denial names: one token, or every token of a login session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Denied {
    Token(Uuid),
    Session(Uuid),
}

impl Denied {
    /// The announcement on the feed: `jti <id> <until>` or `sid <id> <until>`.
    fn message(self, until: i64) -> String {
        match self {
            Self::Token(jti) => format!("jti {jti} {until}"),
            Self::Session(sid) => format!("sid {sid} {until}"),
        }
    }

    fn parse(message: &str) -> Option<(Self, i64)> {
        let mut parts = message.split(' ');
        let kind = parts.next()?;
        let id = parts.next()?.parse().ok()?;
        let until = parts.next()?.parse().ok()?;
        let denied = match kind {
            "jti" => Self::Token(id),
            "sid" => Self::Session(id),
            _ => return None,
        };
        parts.next().is_none().then_some((denied, until))
    }
}

impl Denylist {
    /// A denylist stored in `redis` under `keys`' prefix, whose ended sessions PostgreSQL
    /// (`db`) keeps.
    pub fn new(redis: Redis, keys: Keys, db: PgPool) -> Self {
        Self {
            redis,
            keys,
            db,
            refilling: Arc::default(),
        }
    }

    /// Records in PostgreSQL that session `sid` ended and its access tokens are refused until
    /// `until` (Unix seconds). Call it in the transaction that ends the session, then
    /// [`Self::deny_session`]: the record is what survives Redis losing its copy.
    ///
    /// # Errors
    /// When PostgreSQL fails; the session has then not ended.
    pub async fn record_ended_session(
        conn: &mut PgConnection,
        sid: Uuid,
        until: i64,
    ) -> sqlx::Result<()> {
        sqlx::query(
            "insert into ended_sessions (session_id, denied_until) values ($1, 'epoch'::timestamptz + $2 * interval '1 second')
             on conflict (session_id) do update
             set denied_until = greatest(ended_sessions.denied_until, excluded.denied_until)",
        )
        .bind(sid)
        .bind(until)
        .execute(&mut *conn)
        .await?;
        // Each ending sweeps what expired since the last one, so the table stays as small as
        // the number of sessions that ended within one access-token lifetime.
        sqlx::query("delete from ended_sessions where denied_until < now() - interval '1 minute'")
            .execute(conn)
            .await?;
        Ok(())
    }

    /// Refuses the token with `jti` until `expires_at` (Unix seconds), after which its own
    /// expiry refuses it and the entry can vanish.
    ///
    /// # Errors
    /// When Redis is unreachable; the caller must not report the logout as done.
    pub async fn deny_token(&self, jti: Uuid, expires_at: i64) -> redis::RedisResult<()> {
        self.deny(self.keys.denied_token(jti), Denied::Token(jti), expires_at)
            .await
    }

    /// Refuses every access token of session `sid` minted up to now, until `until` (Unix
    /// seconds; the latest expiry of such a token).
    ///
    /// # Errors
    /// When Redis is unreachable.
    pub async fn deny_session(&self, sid: Uuid, until: i64) -> redis::RedisResult<()> {
        self.deny(self.keys.denied_session(sid), Denied::Session(sid), until)
            .await
    }

    async fn deny(&self, key: String, denied: Denied, until: i64) -> redis::RedisResult<()> {
        let ttl = ttl_until(until, chrono::Utc::now().timestamp());
        let mut redis = self.redis.clone();
        // One transaction: whoever reads the key after it is written also hears the news.
        redis::pipe()
            .atomic()
            .set_ex(key, 1u8, ttl)
            .ignore()
            .publish(self.keys.denylist_channel(), denied.message(until))
            .ignore()
            .query_async(&mut redis)
            .await
    }

    /// Whether the token (by `jti`) or its session (by `sid`) was logged out; one round trip,
    /// unless Redis turns out to have lost the denylist, which is then refilled first.
    ///
    /// # Errors
    /// When Redis is unreachable, or PostgreSQL during a refill; callers fail closed (503),
    /// never open.
    pub async fn is_denied(&self, claims: &Claims) -> Result<bool, ApiError> {
        let keys = [
            self.keys.denied_token(claims.jti),
            self.keys.denied_session(claims.sid),
        ];
        let (found, whole) = self.ask(&keys).await?;
        if whole {
            return Ok(found > 0);
        }
        self.refill().await?;
        let (found, _) = self.ask(&keys).await?;
        Ok(found > 0)
    }

    /// How many of `keys` exist, and whether the denylist is whole (its marker is there).
    async fn ask(&self, keys: &[String]) -> redis::RedisResult<(u32, bool)> {
        let mut redis = self.redis.clone();
        redis::pipe()
            .exists(keys)
            .exists(self.keys.denylist_whole())
            .query_async(&mut redis)
            .await
    }

    /// Copies every live ended session from PostgreSQL into Redis, with the marker that says
    /// the copy is whole, in one transaction: a Redis that loses its keys again loses both.
    async fn refill(&self) -> Result<(), ApiError> {
        let _only_one = self.refilling.lock().await;
        let mut redis = self.redis.clone();
        let whole: bool = redis::cmd("EXISTS")
            .arg(self.keys.denylist_whole())
            .query_async(&mut redis)
            .await?;
        if whole {
            return Ok(());
        }
        let ended: Vec<(Uuid, i64)> = sqlx::query_as(
            "select session_id, extract(epoch from denied_until)::bigint from ended_sessions
             where denied_until > now()",
        )
        .fetch_all(&self.db)
        .await?;
        let now = chrono::Utc::now().timestamp();
        let mut pipe = redis::pipe();
        pipe.atomic();
        for (sid, until) in &ended {
            pipe.set_ex(self.keys.denied_session(*sid), 1u8, ttl_until(*until, now))
                .ignore();
        }
        pipe.set(self.keys.denylist_whole(), 1u8).ignore();
        pipe.query_async::<()>(&mut redis).await?;
        tracing::warn!(
            sessions = ended.len(),
            "the Redis denylist was lost; refilled it from PostgreSQL"
        );
        metrics::counter!("flash_auth_denylist_refills_total").increment(1);
        Ok(())
    }
}

/// Seconds a denial lasts: to `until`, and a little past it to cover the verifier's clock
/// leeway.
fn ttl_until(until: i64, now: i64) -> u64 {
    u64::try_from(until - now).unwrap_or(0) + 10
}

/// How often the feed proves its subscription alive with a `PING` on it.
const FEED_PING_EVERY: Duration = Duration::from_millis(200);

/// How long a feed that has not heard Redis stays trusted. With the ping above, a subscription
/// that silently stopped delivering is distrusted within this, well inside the second within
/// which a logout must reach every service.
const FEED_TRUSTED_FOR: Duration = Duration::from_millis(600);

/// How long to wait before subscribing again after the subscription broke.
const FEED_RESUBSCRIBE_AFTER: Duration = Duration::from_millis(250);

/// An in-memory mirror of the denylist, fed by its pub/sub channel.
///
/// Each unbroken subscription is one *generation*. A caller that asked Redis about a token
/// while generation `g` was live may trust that answer for as long as `g` stays live: any
/// denial written after the answer was announced on the channel and heard here. A new
/// generation knows nothing of what was announced while no subscription was up, so answers
/// from earlier generations are worth nothing in it.
#[derive(Clone)]
pub struct DenylistFeed {
    inner: Arc<FeedState>,
}

struct FeedState {
    /// The live generation, or 0 while no subscription is up.
    generation: AtomicU64,
    /// When Redis last answered on the subscription, in milliseconds since `epoch`.
    heard_at_ms: AtomicU64,
    epoch: Instant,
    /// Denials announced during any generation, until their own expiry (Unix seconds).
    denied: Mutex<HashMap<Denied, i64>>,
}

impl DenylistFeed {
    /// Subscribes to the denylist channel of `keys` on the Redis at `redis_url`, and keeps
    /// subscribing again whenever the subscription breaks, until `shutdown`.
    ///
    /// # Errors
    /// When `redis_url` is not a Redis URL.
    pub fn start(
        redis_url: &str,
        keys: &Keys,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let clients = crate::redis::Target::parse(redis_url)
            .and_then(|target| Ok(target.subscriber_clients()?))
            .with_context(|| format!("invalid REDIS_URL {}", crate::db::redact(redis_url)))?;
        let feed = Self {
            inner: Arc::new(FeedState {
                generation: AtomicU64::new(0),
                heard_at_ms: AtomicU64::new(0),
                epoch: Instant::now(),
                denied: Mutex::new(HashMap::new()),
            }),
        };
        tokio::spawn(
            feed.clone()
                .follow_forever(clients, keys.denylist_channel(), shutdown),
        );
        Ok(feed)
    }

    /// The generation that is live now, if a subscription is up and Redis answered on it
    /// within `FEED_TRUSTED_FOR` (how long a silent feed stays trusted).
    pub fn live_generation(&self) -> Option<u64> {
        let generation = self.inner.generation.load(Ordering::Acquire);
        let heard_at = self.inner.heard_at_ms.load(Ordering::Acquire);
        let silent_for = self.inner.now_ms().saturating_sub(heard_at);
        (generation != 0 && silent_for <= millis(FEED_TRUSTED_FOR)).then_some(generation)
    }

    /// Whether a denial of the token or of its session has been heard.
    pub fn denies(&self, claims: &Claims) -> bool {
        let denied = self.inner.lock();
        denied.contains_key(&Denied::Token(claims.jti))
            || denied.contains_key(&Denied::Session(claims.sid))
    }

    /// Subscribes on the first of `clients`, and after each break on the next: on a cluster
    /// the feed moves to another node when its node dies.
    async fn follow_forever(
        self,
        clients: Vec<redis::Client>,
        channel: String,
        shutdown: CancellationToken,
    ) {
        let mut generation = 0;
        for client in clients.iter().cycle() {
            generation += 1;
            let broken = tokio::select! {
                () = shutdown.cancelled() => return,
                broken = self.follow(client, &channel, generation) => broken,
            };
            self.inner.generation.store(0, Ordering::Release);
            metrics::gauge!("flash_auth_denylist_feed_live").set(0.0);
            tracing::warn!(error = %broken, "the denylist feed broke; every token is checked with Redis until it is back");
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(FEED_RESUBSCRIBE_AFTER) => {}
            }
        }
    }

    /// Follows one subscription until it breaks, which is the only way it returns.
    async fn follow(
        &self,
        client: &redis::Client,
        channel: &str,
        generation: u64,
    ) -> anyhow::Error {
        let subscribed = tokio::time::timeout(FEED_TRUSTED_FOR, async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(channel).await?;
            redis::RedisResult::Ok(pubsub)
        })
        .await;
        let pubsub = match subscribed {
            Ok(Ok(pubsub)) => pubsub,
            Ok(Err(err)) => return anyhow::Error::from(err).context("subscribing"),
            Err(_) => return anyhow::anyhow!("subscribing timed out"),
        };
        let (mut sink, mut messages) = pubsub.split();
        // Live only once Redis confirmed the subscription: from here on, no denial is missed.
        self.inner.heard();
        self.inner.generation.store(generation, Ordering::Release);
        metrics::gauge!("flash_auth_denylist_feed_live").set(1.0);
        let mut ping = tokio::time::interval(FEED_PING_EVERY);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                message = messages.next() => match message {
                    Some(message) => self.inner.hear(&message),
                    None => return anyhow::anyhow!("the subscription closed"),
                },
                _ = ping.tick() => {
                    match tokio::time::timeout(FEED_TRUSTED_FOR, sink.ping::<redis::Value>()).await {
                        Ok(Ok(_)) => self.inner.heard(),
                        Ok(Err(err)) => return anyhow::Error::from(err).context("pinging"),
                        Err(_) => return anyhow::anyhow!("a ping went unanswered"),
                    }
                    self.inner.forget_expired();
                }
            }
        }
    }
}

impl FeedState {
    fn now_ms(&self) -> u64 {
        millis(self.epoch.elapsed())
    }

    fn heard(&self) {
        self.heard_at_ms.store(self.now_ms(), Ordering::Release);
    }

    fn hear(&self, message: &redis::Msg) {
        let Ok(text) = message.get_payload::<String>() else {
            return;
        };
        match Denied::parse(&text) {
            Some((denied, until)) => {
                self.lock().insert(denied, until);
            }
            None => tracing::warn!(message = %text, "ignoring a malformed denylist announcement"),
        }
    }

    fn forget_expired(&self) {
        // The verifier's leeway lets a token live a few seconds past `exp`; so does its denial.
        let now = chrono::Utc::now().timestamp() - 10;
        self.lock().retain(|_, until| *until >= now);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Denied, i64>> {
        // Each operation is a single HashMap call, so a poisoned lock is still consistent.
        self.denied
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_announcement_round_trips_and_garbage_is_refused() {
        let id = Uuid::new_v4();
        for denied in [Denied::Token(id), Denied::Session(id)] {
            assert_eq!(Denied::parse(&denied.message(42)), Some((denied, 42)));
        }
        for garbage in [
            "",
            "jti",
            "jti x 1",
            "sid {id} x",
            "aud {id} 1",
            "jti {id} 1 2",
        ] {
            let garbage = garbage.replace("{id}", &id.to_string());
            assert_eq!(Denied::parse(&garbage), None, "{garbage}");
        }
    }
}
