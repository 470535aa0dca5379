//! Login sessions: access tokens plus rotating refresh tokens with reuse detection.
//!
//! A login starts a *family* (its id is the access token's `sid`). Each refresh uses up the
//! presented refresh token and issues the next one in the family. A refresh token presented a
//! second time has leaked (its owner or a thief already used it), so the whole family is
//! revoked, and the caller denies the session's access tokens too.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Duration, Utc};
use flash_core::{
    auth::{Denylist, keys::JwtSigner},
    domain::{MemberId, Role},
};
use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// The answer to a login or refresh.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct TokenPair {
    /// EdDSA JWT to send as `Authorization: Bearer`.
    pub(crate) access_token: String,
    /// Opaque, single-use token for `POST /auth/refresh`.
    pub(crate) refresh_token: String,
    /// Always `Bearer`.
    pub(crate) token_type: &'static str,
    /// Seconds until the access token expires.
    pub(crate) expires_in: i64,
}

/// A new random opaque token and the SHA-256 hash that is all the database keeps.
pub(crate) fn new_opaque_token() -> (String, Vec<u8>) {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let raw = URL_SAFE_NO_PAD.encode(bytes);
    let hash = hash_token(&raw);
    (raw, hash)
}

/// The stored form of an opaque token. A fast hash suffices: the token has 256 random bits.
pub(crate) fn hash_token(raw: &str) -> Vec<u8> {
    Sha256::digest(raw.as_bytes()).to_vec()
}

/// Starts a new session (refresh family) for a member who just proved their password.
pub(crate) async fn start_session(
    db: &PgPool,
    signer: &JwtSigner,
    member: MemberId,
    role: Role,
    refresh_ttl: Duration,
) -> anyhow::Result<TokenPair> {
    let family_id = Uuid::new_v4();
    let mut conn = db.acquire().await?;
    issue(&mut conn, signer, member, role, family_id, refresh_ttl).await
}

/// What presenting a refresh token led to.
pub(crate) enum Refresh {
    /// The token was valid; here is the next pair.
    Rotated(TokenPair),
    /// The token had already been used: its family is now revoked.
    Reused {
        /// The revoked session, whose access tokens the caller must deny.
        family_id: Uuid,
        /// When the newest access token of the family expires at the latest.
        deny_until: DateTime<Utc>,
    },
    /// Unknown, expired or revoked.
    Invalid,
}

/// Uses up `raw` and issues the next pair, or detects reuse.
pub(crate) async fn rotate(
    db: &PgPool,
    signer: &JwtSigner,
    raw: &str,
    refresh_ttl: Duration,
) -> anyhow::Result<Refresh> {
    let hash = hash_token(raw);
    let mut tx = db.begin().await?;
    let family: Option<Uuid> =
        sqlx::query_scalar("select family_id from refresh_tokens where token_hash = $1")
            .bind(&hash)
            .fetch_optional(&mut *tx)
            .await?;
    let Some(family) = family else {
        return Ok(Refresh::Invalid);
    };
    lock_family(&mut tx, family).await?;
    // INVARIANT: a refresh token is used at most once. The conditional update is atomic, so of
    // two concurrent refreshes with the same token exactly one gets the row.
    let used: Option<(Uuid, MemberId, Role)> = sqlx::query_as(
        "update refresh_tokens t set used_at = now()
         from members m
         where t.token_hash = $1 and m.member_id = t.member_id
           and t.used_at is null and t.revoked_at is null and t.expires_at > now()
         returning t.family_id, t.member_id, m.role",
    )
    .bind(&hash)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some((family_id, member, role)) = used {
        let pair = issue(&mut tx, signer, member, role, family_id, refresh_ttl).await?;
        tx.commit().await?;
        return Ok(Refresh::Rotated(pair));
    }
    let reused: Option<(Uuid,)> = sqlx::query_as(
        "select family_id from refresh_tokens
         where token_hash = $1 and used_at is not null and revoked_at is null",
    )
    .bind(&hash)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((family_id,)) = reused else {
        return Ok(Refresh::Invalid);
    };
    let deny_until = Utc::now() + Duration::seconds(signer.ttl_secs());
    revoke_family(&mut tx, family_id, deny_until).await?;
    tx.commit().await?;
    Ok(Refresh::Reused {
        family_id,
        deny_until,
    })
}

/// Ends a session (logout, or reuse detected): revokes every refresh token of its family and
/// records that its access tokens are refused until `deny_until`. Run it inside a transaction,
/// which holds the family's lock until it commits.
pub(crate) async fn revoke_family(
    conn: &mut PgConnection,
    family_id: Uuid,
    deny_until: DateTime<Utc>,
) -> sqlx::Result<()> {
    lock_family(conn, family_id).await?;
    sqlx::query(
        "update refresh_tokens set revoked_at = now() where family_id = $1 and revoked_at is null",
    )
    .bind(family_id)
    .execute(&mut *conn)
    .await?;
    Denylist::record_ended_session(conn, family_id, deny_until.timestamp()).await
}

/// Takes the family's lock until the transaction ends. A refresh and a logout of one session
/// take it before touching its tokens, so they run one after the other: without it, a logout's
/// update could miss the token a concurrent refresh was inserting, which would stay live in
/// the logged-out family. Each statement after the lock sees what the other committed.
async fn lock_family(conn: &mut PgConnection, family_id: Uuid) -> sqlx::Result<()> {
    sqlx::query("select pg_advisory_xact_lock(hashtextextended($1::text, 0))")
        .bind(family_id)
        .execute(conn)
        .await?;
    Ok(())
}

async fn issue(
    conn: &mut PgConnection,
    signer: &JwtSigner,
    member: MemberId,
    role: Role,
    family_id: Uuid,
    refresh_ttl: Duration,
) -> anyhow::Result<TokenPair> {
    let (refresh_token, hash) = new_opaque_token();
    sqlx::query(
        "insert into refresh_tokens (token_hash, family_id, member_id, expires_at)
         values ($1, $2, $3, $4)",
    )
    .bind(hash)
    .bind(family_id)
    .bind(member)
    .bind(Utc::now() + refresh_ttl)
    .execute(conn)
    .await?;
    let (access_token, _) = signer.mint(member, role, family_id)?;
    Ok(TokenPair {
        access_token,
        refresh_token,
        token_type: "Bearer",
        expires_in: signer.ttl_secs(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opaque_tokens_are_random_and_stored_only_as_hashes() {
        let (a, hash_a) = new_opaque_token();
        let (b, _) = new_opaque_token();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43, "32 bytes, base64url without padding");
        assert_eq!(hash_token(&a), hash_a);
        assert_ne!(hash_a, a.as_bytes());
    }
}
