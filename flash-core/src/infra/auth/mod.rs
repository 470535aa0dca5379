//! Access-token verification and the extractors that turn a bearer token into a member.
//!
//! Only member-api holds the private key and mints tokens ([`keys::JwtSigner`]); every other
//! service verifies with the public key alone. A logged-out token's `jti` sits on a Redis
//! denylist, which every service checks, so logout takes effect everywhere at once.

mod denylist;
pub mod keys;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context;
use axum::{
    extract::{FromRef, FromRequestParts},
    http::{HeaderMap, header, request::Parts},
};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use denylist::{Denylist, DenylistFeed};

use crate::{
    config::JwtVerifyArgs,
    domain::{MemberId, Role},
    problem::{ApiError, ProblemType},
};

/// The claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// The member.
    pub sub: MemberId,
    /// What the member may do.
    pub role: Role,
    /// Unique token id: what logout puts on the denylist.
    pub jti: Uuid,
    /// The login session (refresh-token family) the token belongs to; logout revokes it.
    pub sid: Uuid,
    /// Issued at (Unix seconds).
    pub iat: i64,
    /// Expires at (Unix seconds).
    pub exp: i64,
    /// Who minted it.
    pub iss: String,
    /// Who it is for.
    pub aud: String,
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// Past its `exp`.
    #[error("access token has expired")]
    Expired,
    /// Malformed, wrong algorithm, wrong key, wrong issuer or audience.
    #[error("access token is invalid")]
    Invalid,
}

/// Verifies EdDSA access tokens with the public key.
#[derive(Clone)]
pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl JwtVerifier {
    /// A verifier for tokens signed by the private half of `public_pem`.
    ///
    /// # Errors
    /// When the PEM is not an Ed25519 public key.
    pub fn from_pem(public_pem: &[u8], issuer: &str, audience: &str) -> anyhow::Result<Self> {
        let key = DecodingKey::from_ed_pem(public_pem).context("parsing the JWT public key")?;
        // Only EdDSA: a token claiming `none` or an HMAC algorithm is refused outright.
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iat", "sub", "iss", "aud"]);
        validation.leeway = 5;
        Ok(Self { key, validation })
    }

    /// Reads the public key file named in the config.
    ///
    /// # Errors
    /// When the file is missing or not an Ed25519 public key.
    pub fn from_args(args: &JwtVerifyArgs) -> anyhow::Result<Self> {
        let pem = std::fs::read(&args.jwt_public_key).with_context(|| {
            format!(
                "reading JWT_PUBLIC_KEY {} (run scripts/stack up once to generate a dev pair)",
                args.jwt_public_key.display()
            )
        })?;
        Self::from_pem(&pem, &args.jwt_issuer, &args.jwt_audience)
    }

    /// Checks the signature, algorithm, expiry, issuer and audience.
    ///
    /// # Errors
    /// [`TokenError`] saying whether the token expired or is otherwise invalid.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        match jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation) {
            Ok(data) => Ok(data.claims),
            Err(err) if matches!(err.kind(), ErrorKind::ExpiredSignature) => {
                Err(TokenError::Expired)
            }
            Err(_) => Err(TokenError::Invalid),
        }
    }
}

/// How long a cached "not logged out" answer is trusted when no [`DenylistFeed`] vouches for it.
/// Every service must refuse a logged-out token within one second; half of that leaves room
/// for clocks.
pub const DENYLIST_RECHECK: Duration = Duration::from_millis(500);

/// Verifier plus denylist: everything a service needs to authenticate a request.
pub struct Authenticator {
    verifier: JwtVerifier,
    denylist: Denylist,
    cache: Option<TokenCache>,
    feed: Option<DenylistFeed>,
}

/// Tokens already verified, so a buyer polling with one token pays the EdDSA check once.
/// Keyed by the whole token text, so only the exact token ever matches.
struct TokenCache {
    capacity: usize,
    entries: Mutex<Tokens>,
}

/// Remembered tokens by their text. Hashed with foldhash: SipHash over a 250-byte token cost
/// ~1,500 instructions a request. Flooding attacks need keys an attacker chooses, and only
/// tokens this service signed and verified are ever stored (under a per-process random seed).
type Tokens = HashMap<Arc<str>, CachedToken, foldhash::fast::RandomState>;

#[derive(Clone)]
struct CachedToken {
    /// Shared, so a hit costs a reference count, not copies of the issuer and audience.
    claims: Arc<Claims>,
    /// When the denylist last said this token was not logged out.
    allowed_at: Instant,
    /// The feed generation that was live when that was asked: while it still is, every later
    /// logout of this token would have been heard.
    vouched_by: Option<u64>,
}

impl Authenticator {
    /// Combines a verifier and a denylist; every request verifies its token.
    pub fn new(verifier: JwtVerifier, denylist: Denylist) -> Self {
        Self {
            verifier,
            denylist,
            cache: None,
            feed: None,
        }
    }

    /// Also remembers up to `capacity` verified tokens until they expire. The denylist is still
    /// asked about a remembered token once per [`DENYLIST_RECHECK`], so logout still reaches
    /// this service within a second. Used by the front door, where each buyer polls many times.
    #[must_use]
    pub fn with_cache(mut self, capacity: usize) -> Self {
        self.cache = Some(TokenCache {
            capacity,
            entries: Mutex::new(Tokens::default()),
        });
        self
    }

    /// Also follows the denylist's announcements. A remembered token is then re-checked with
    /// Redis only when the feed was down at its last check or has broken since, instead of
    /// every [`DENYLIST_RECHECK`]; a logout the feed hears refuses the token at once.
    #[must_use]
    pub fn with_feed(mut self, feed: DenylistFeed) -> Self {
        self.feed = Some(feed);
        self
    }

    /// The denylist, for logout.
    pub fn denylist(&self) -> &Denylist {
        &self.denylist
    }

    /// Authenticates the `Authorization: Bearer` header.
    ///
    /// # Errors
    /// 401 for a missing, malformed, expired, forged or logged-out token; 503 when Redis cannot
    /// say whether the token was logged out.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Arc<Claims>, ApiError> {
        let token = bearer_token(headers)?;
        let Some(cache) = &self.cache else {
            let claims = Arc::new(self.verify(token)?);
            return self.allowed(claims).await;
        };
        let now = Instant::now();
        let cached = cache.get(token);
        if let Some(entry) = &cached {
            if entry.claims.exp <= chrono::Utc::now().timestamp() {
                cache.remove(token);
                return Err(ApiError::unauthorized(TokenError::Expired.to_string()));
            }
            if self.feed_denies(&entry.claims) {
                cache.remove(token);
                return Err(revoked());
            }
            let vouched = entry.vouched_by.is_some() && entry.vouched_by == self.live_generation();
            if vouched || now.duration_since(entry.allowed_at) < DENYLIST_RECHECK {
                return Ok(Arc::clone(&entry.claims));
            }
        }
        let claims = match cached {
            Some(entry) => entry.claims,
            None => Arc::new(self.verify(token)?),
        };
        // Read before asking Redis: a logout after this point is announced to this generation.
        let vouched_by = self.live_generation();
        let claims = self
            .allowed(claims)
            .await
            .inspect_err(|_| cache.remove(token))?;
        cache.insert(
            token,
            CachedToken {
                claims: Arc::clone(&claims),
                allowed_at: now,
                vouched_by,
            },
        );
        Ok(claims)
    }

    fn live_generation(&self) -> Option<u64> {
        self.feed.as_ref().and_then(DenylistFeed::live_generation)
    }

    fn feed_denies(&self, claims: &Claims) -> bool {
        self.feed.as_ref().is_some_and(|feed| feed.denies(claims))
    }

    fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        self.verifier
            .verify(token)
            .map_err(|e| ApiError::unauthorized(e.to_string()))
    }

    async fn allowed(&self, claims: Arc<Claims>) -> Result<Arc<Claims>, ApiError> {
        if self.feed_denies(&claims) || self.denylist.is_denied(&claims).await? {
            return Err(revoked());
        }
        Ok(claims)
    }
}

/// The denylist records that a session ended, not why (a logout, or a refresh token used twice,
/// which ends the whole family), so the answer claims neither.
fn revoked() -> ApiError {
    ApiError::unauthorized("access token was revoked: its session has ended")
}

impl TokenCache {
    fn get(&self, token: &str) -> Option<CachedToken> {
        self.lock().get(token).cloned()
    }

    fn insert(&self, token: &str, entry: CachedToken) {
        let mut entries = self.lock();
        if entries.len() >= self.capacity && !entries.contains_key(token) {
            make_room(&mut entries, self.capacity);
        }
        entries.insert(Arc::from(token), entry);
    }

    fn remove(&self, token: &str) {
        self.lock().remove(token);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tokens> {
        // Each operation is a single HashMap call, so a panic elsewhere cannot leave the map
        // half-updated: a poisoned lock is still safe to use.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Frees room in a full token cache. Expired tokens go first; if that frees less than a quarter
/// of it, every other remaining token goes too (the map's order has nothing to do with age, so
/// that forgets a fair sample). Forgetting everything instead would send every buyer of a large
/// sale back to the EdDSA check at once, in the middle of the rush; this way the sweep, which
/// holds the lock for one pass over the map, runs at most once per quarter of the capacity.
fn make_room(entries: &mut Tokens, capacity: usize) {
    let now = chrono::Utc::now().timestamp();
    entries.retain(|_, cached| cached.claims.exp > now);
    if entries.len() > capacity - capacity / 4 {
        let mut keep = false;
        entries.retain(|_, _| {
            keep = !keep;
            keep
        });
    }
}

fn bearer_token(headers: &HeaderMap) -> Result<&str, ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("missing `Authorization: Bearer <token>` header"))?;
    let value = value
        .to_str()
        .map_err(|_| ApiError::unauthorized("Authorization header is not valid text"))?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim())
        }
        _ => Err(ApiError::unauthorized(
            "Authorization header must be `Bearer <token>`",
        )),
    }
}

/// A request made by an authenticated member (any role).
#[derive(Debug, Clone)]
pub struct AuthMember {
    /// The member.
    pub member_id: MemberId,
    /// Their role.
    pub role: Role,
    /// The full claims, for logout (`jti`, `sid`, `exp`).
    pub claims: Arc<Claims>,
}

impl<S> FromRequestParts<S> for AuthMember
where
    Arc<Authenticator>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let auth = Arc::<Authenticator>::from_ref(state);
        let claims = auth.authenticate(&parts.headers).await?;
        Ok(Self {
            member_id: claims.sub,
            role: claims.role,
            claims,
        })
    }
}

/// A request made by an authenticated admin; anyone else gets 401 or 403.
#[derive(Debug, Clone)]
pub struct AdminMember(pub AuthMember);

impl<S> FromRequestParts<S> for AdminMember
where
    Arc<Authenticator>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let member = AuthMember::from_request_parts(parts, state).await?;
        if member.role != Role::Admin {
            return Err(ApiError::new(
                ProblemType::Forbidden,
                "this action needs the admin role",
            ));
        }
        Ok(Self(member))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::keys::{JwtSigner, KeyPair};

    fn pair() -> (JwtSigner, JwtVerifier) {
        let keys = KeyPair::generate().unwrap();
        let signer = JwtSigner::from_pem(keys.private_pem.as_bytes(), "iss", "aud", 60).unwrap();
        let verifier = JwtVerifier::from_pem(keys.public_pem.as_bytes(), "iss", "aud").unwrap();
        (signer, verifier)
    }

    #[test]
    fn a_minted_token_verifies_and_round_trips_its_claims() {
        let (signer, verifier) = pair();
        let member = MemberId::new();
        let (token, claims) = signer.mint(member, Role::Admin, Uuid::new_v4()).unwrap();
        assert_eq!(verifier.verify(&token), Ok(claims));
    }

    #[test]
    fn a_token_from_another_key_is_invalid() {
        let (signer, _) = pair();
        let (_, other_verifier) = pair();
        let (token, _) = signer
            .mint(MemberId::new(), Role::Buyer, Uuid::new_v4())
            .unwrap();
        assert_eq!(other_verifier.verify(&token), Err(TokenError::Invalid));
    }

    #[test]
    fn wrong_issuer_or_audience_is_invalid() {
        let keys = KeyPair::generate().unwrap();
        let signer = JwtSigner::from_pem(keys.private_pem.as_bytes(), "other", "aud", 60).unwrap();
        let verifier = JwtVerifier::from_pem(keys.public_pem.as_bytes(), "iss", "aud").unwrap();
        let (token, _) = signer
            .mint(MemberId::new(), Role::Buyer, Uuid::new_v4())
            .unwrap();
        assert_eq!(verifier.verify(&token), Err(TokenError::Invalid));
        let signer = JwtSigner::from_pem(keys.private_pem.as_bytes(), "iss", "other", 60).unwrap();
        let (token, _) = signer
            .mint(MemberId::new(), Role::Buyer, Uuid::new_v4())
            .unwrap();
        assert_eq!(verifier.verify(&token), Err(TokenError::Invalid));
    }

    #[test]
    fn an_expired_token_is_reported_as_expired() {
        let keys = KeyPair::generate().unwrap();
        let signer = JwtSigner::from_pem(keys.private_pem.as_bytes(), "iss", "aud", -60).unwrap();
        let verifier = JwtVerifier::from_pem(keys.public_pem.as_bytes(), "iss", "aud").unwrap();
        let (token, _) = signer
            .mint(MemberId::new(), Role::Buyer, Uuid::new_v4())
            .unwrap();
        assert_eq!(verifier.verify(&token), Err(TokenError::Expired));
    }

    #[test]
    fn alg_none_and_hmac_tokens_are_invalid() {
        let (signer, verifier) = pair();
        let (token, claims) = signer
            .mint(MemberId::new(), Role::Admin, Uuid::new_v4())
            .unwrap();
        let payload = token.split('.').nth(1).unwrap();
        // {"alg":"none","typ":"JWT"} with the real payload and no signature.
        let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");
        assert_eq!(verifier.verify(&none), Err(TokenError::Invalid));
        let hmac = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(b"guessable"),
        )
        .unwrap();
        assert_eq!(verifier.verify(&hmac), Err(TokenError::Invalid));
        assert_eq!(verifier.verify("not.a.token"), Err(TokenError::Invalid));
    }

    fn cached(exp: i64) -> CachedToken {
        CachedToken {
            claims: Arc::new(Claims {
                sub: MemberId::new(),
                role: Role::Buyer,
                jti: Uuid::new_v4(),
                sid: Uuid::new_v4(),
                iat: 0,
                exp,
                iss: "iss".to_owned(),
                aud: "aud".to_owned(),
            }),
            allowed_at: Instant::now(),
            vouched_by: None,
        }
    }

    fn cache(capacity: usize) -> TokenCache {
        TokenCache {
            capacity,
            entries: Mutex::new(Tokens::default()),
        }
    }

    #[test]
    fn a_full_token_cache_forgets_expired_tokens_first() {
        let cache = cache(8);
        let live = chrono::Utc::now().timestamp() + 600;
        for i in 0..8 {
            let exp = if i % 4 == 0 { live - 1200 } else { live };
            cache.insert(&format!("t{i}"), cached(exp));
        }
        cache.insert("new", cached(live));
        assert_eq!(cache.lock().len(), 7, "the two expired tokens made room");
        for kept in ["t1", "t2", "t3", "t5", "t6", "t7", "new"] {
            assert!(cache.get(kept).is_some(), "{kept} is still remembered");
        }
    }

    #[test]
    fn a_full_token_cache_of_live_tokens_forgets_half_not_all() {
        let cache = cache(8);
        let live = chrono::Utc::now().timestamp() + 600;
        for i in 0..8 {
            cache.insert(&format!("t{i}"), cached(live));
        }
        cache.insert("new", cached(live));
        let remembered = cache.lock().len();
        assert_eq!(remembered, 5, "four of the eight, and the new one");
        assert!(cache.get("new").is_some());
        for i in 0..100 {
            cache.insert(&format!("more{i}"), cached(live));
            assert!(cache.lock().len() <= 8, "never above the capacity");
        }
    }

    #[test]
    fn bearer_header_forms() {
        let mut headers = HeaderMap::new();
        assert!(bearer_token(&headers).is_err());
        headers.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert!(bearer_token(&headers).is_err());
        headers.insert(header::AUTHORIZATION, "Bearer ".parse().unwrap());
        assert!(bearer_token(&headers).is_err());
        headers.insert(header::AUTHORIZATION, "bearer abc.def".parse().unwrap());
        assert_eq!(bearer_token(&headers).unwrap(), "abc.def");
    }
}
