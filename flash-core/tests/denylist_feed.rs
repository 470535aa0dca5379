//! The denylist feed against the real Redis: it spares remembered tokens the denylist round
//! trip only while its subscription is unbroken, and a logout it hears refuses the token.
//!
//! Only [`Denylist`] writes the denylist, and it always announces what it writes. The tests
//! also set a denial key behind its back: whether that key is seen shows whether Redis was
//! asked.

// A failed unwrap is how a test reports an unexpected answer.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, header};
use flash_core::{
    ApiError, ProblemType,
    auth::{
        Authenticator, DENYLIST_RECHECK, Denylist, DenylistFeed, JwtVerifier,
        keys::{JwtSigner, KeyPair},
    },
    domain::{MemberId, Role},
    redis_model::Keys,
};
use redis::AsyncCommands;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

struct Fixture {
    redis: flash_core::redis::Redis,
    keys: Keys,
    db: PgPool,
    signer: JwtSigner,
    feed: DenylistFeed,
    auth: Authenticator,
    shutdown: CancellationToken,
}

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

async fn pubsub_clients(redis: &mut flash_core::redis::Redis) -> Vec<String> {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(redis)
        .await
        .unwrap();
    list.lines()
        .filter_map(|line| line.split(' ').find_map(|f| f.strip_prefix("id=")))
        .map(str::to_owned)
        .collect()
}

async fn live_generation(feed: &DenylistFeed, not: Option<u64>) -> u64 {
    for _ in 0..100 {
        if let Some(generation) = feed.live_generation().filter(|g| Some(*g) != not) {
            return generation;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the feed did not come (back) up within 5 s");
}

impl Fixture {
    /// A cached authenticator whose feed follows the Redis at `feed_url`.
    async fn new(feed_url: &str, db: PgPool) -> Self {
        let client = redis::Client::open(redis_url()).unwrap();
        let redis =
            flash_core::redis::Redis::Single(client.get_connection_manager().await.unwrap());
        let keys = Keys::new(&format!("test:{}:", Uuid::new_v4()));
        let pair = KeyPair::generate().unwrap();
        let signer = JwtSigner::from_pem(pair.private_pem.as_bytes(), "iss", "aud", 60).unwrap();
        let verifier = JwtVerifier::from_pem(pair.public_pem.as_bytes(), "iss", "aud").unwrap();
        let shutdown = CancellationToken::new();
        let feed = DenylistFeed::start(feed_url, &keys, shutdown.clone()).unwrap();
        let auth = Authenticator::new(
            verifier,
            Denylist::new(redis.clone(), keys.clone(), db.clone()),
        )
        .with_cache(100)
        .with_feed(feed.clone());
        Self {
            redis,
            keys,
            db,
            signer,
            feed,
            auth,
            shutdown,
        }
    }

    fn token(&self) -> (HeaderMap, flash_core::auth::Claims) {
        let (token, claims) = self
            .signer
            .mint(MemberId::new(), Role::Buyer, Uuid::new_v4())
            .unwrap();
        let mut headers = HeaderMap::new();
        let value = HeaderValue::from_str(&format!("Bearer {token}")).unwrap();
        headers.insert(header::AUTHORIZATION, value);
        (headers, claims)
    }

    /// Denies the token the way no service does: without announcing it.
    async fn deny_silently(&self, jti: Uuid) {
        let mut redis = self.redis.clone();
        let _: () = redis
            .set_ex(self.keys.denied_token(jti), 1, 60)
            .await
            .unwrap();
    }

    async fn teardown(mut self, jtis: &[Uuid]) {
        self.shutdown.cancel();
        let keys: Vec<String> = jtis.iter().map(|j| self.keys.denied_token(*j)).collect();
        let _: () = self.redis.del(keys).await.unwrap();
    }
}

/// Whether the answer is the refusal of a revoked token: a Redis failure (503) or a bad token
/// must not pass for one.
fn revoked<T>(answer: Result<T, ApiError>) -> bool {
    matches!(
        answer,
        Err(ApiError::Problem { kind: ProblemType::Unauthorized, ref detail }) if detail.contains("revoked")
    )
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn the_feed_vouches_for_remembered_tokens_only_while_its_subscription_holds(db: PgPool) {
    // The subscriptions there are before the feed starts: the feed's own is the one added.
    let mut observer = flash_core::redis::Redis::Single(
        redis::Client::open(redis_url())
            .unwrap()
            .get_connection_manager()
            .await
            .unwrap(),
    );
    let before = pubsub_clients(&mut observer).await;
    let mut fx = Fixture::new(&redis_url(), db).await;
    let first = live_generation(&fx.feed, None).await;
    let ours: Vec<String> = pubsub_clients(&mut fx.redis)
        .await
        .into_iter()
        .filter(|id| !before.contains(id))
        .collect();
    assert_eq!(ours.len(), 1, "the feed holds one subscription: {ours:?}");

    // Checked with Redis while the feed was live: later, the feed alone vouches for it.
    let (kept, kept_claims) = fx.token();
    assert!(fx.auth.authenticate(&kept).await.is_ok());
    fx.deny_silently(kept_claims.jti).await;
    tokio::time::sleep(DENYLIST_RECHECK + Duration::from_millis(200)).await;
    assert!(
        fx.auth.authenticate(&kept).await.is_ok(),
        "with the feed live, a remembered token is not asked about in Redis"
    );

    // A logout through the denylist is announced, and the feed refuses the token.
    let (logged_out, claims) = fx.token();
    assert!(fx.auth.authenticate(&logged_out).await.is_ok());
    Denylist::new(fx.redis.clone(), fx.keys.clone(), fx.db.clone())
        .deny_token(claims.jti, claims.exp)
        .await
        .unwrap();
    let mut refused = false;
    for _ in 0..100 {
        if revoked(fx.auth.authenticate(&logged_out).await) {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "the announced logout was not heard within 1 s");

    // The subscription breaks. A denial written while it was down would never be heard, so
    // the new subscription vouches for nothing checked before it: back to Redis.
    let _: () = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(&ours[0])
        .query_async(&mut fx.redis)
        .await
        .unwrap();
    let second = live_generation(&fx.feed, Some(first)).await;
    assert_ne!(first, second);
    assert!(
        revoked(fx.auth.authenticate(&kept).await),
        "a token vouched for by a broken subscription must be checked with Redis again"
    );

    fx.teardown(&[kept_claims.jti, claims.jti]).await;
}

#[sqlx::test(migrator = "flash_core::db::MIGRATOR")]
async fn without_a_live_feed_a_remembered_token_is_rechecked_every_half_second(db: PgPool) {
    // A feed that can never subscribe: its port is held without listening, so it refuses.
    let (_refusing, addr) = flash_core::testing::refusing_port();
    let fx = Fixture::new(&format!("redis://{addr}"), db).await;
    let (headers, claims) = fx.token();
    assert!(fx.auth.authenticate(&headers).await.is_ok());
    fx.deny_silently(claims.jti).await;
    tokio::time::sleep(DENYLIST_RECHECK + Duration::from_millis(200)).await;
    assert!(revoked(fx.auth.authenticate(&headers).await));
    fx.teardown(&[claims.jti]).await;
}
