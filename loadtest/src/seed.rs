//! Buyers for a spike, fast and real.
//!
//! Signing up 50,000 buyers through member-api would cost 50,000 Argon2id hashes (minutes on
//! two cores) before the test even starts. Instead the seeder writes real `members` rows in one
//! statement, all with the Argon2id hash of [`PASSWORD`] computed once (so any of them can also
//! log in through member-api), and mints their access tokens with the dev private key exactly
//! as member-api would. Orders reference these rows, so the sale exercises the real schema.

use std::path::PathBuf;

use anyhow::Context;
use argon2::{PasswordHasher, password_hash::SaltString};
use flash_core::{
    auth::keys::JwtSigner,
    config::JwtVerifyArgs,
    domain::{MemberId, Role},
};
use sqlx::PgPool;
use uuid::Uuid;

/// The password every seeded member has.
pub const PASSWORD: &str = "loadtest password 1";

/// What minting buyers' tokens needs: the dev private key, and the claims the services expect.
#[derive(clap::Args)]
pub struct MintArgs {
    /// The dev private key that mints the buyers' tokens.
    #[arg(
        long,
        env = "JWT_PRIVATE_KEY",
        default_value = ".data/keys/jwt_private.pem"
    )]
    pub jwt_private_key: PathBuf,
    /// Issuer and audience the minted tokens carry.
    #[command(flatten)]
    pub jwt: JwtVerifyArgs,
}

impl MintArgs {
    /// A signer of hour-long access tokens, as member-api would issue.
    ///
    /// # Errors
    /// When the key file cannot be read or is not an Ed25519 private key.
    pub fn signer(&self) -> anyhow::Result<JwtSigner> {
        let pem = std::fs::read(&self.jwt_private_key)
            .with_context(|| format!("reading {}", self.jwt_private_key.display()))?;
        JwtSigner::from_pem(&pem, &self.jwt.jwt_issuer, &self.jwt.jwt_audience, 3600)
    }
}

/// A seeded member and an access token for them.
#[derive(Debug, Clone)]
pub struct Buyer {
    /// The member's id.
    pub id: MemberId,
    /// A bearer token minted with the dev key.
    pub token: String,
}

/// Writes `count` members with `role`, emails `<tag>-<i>@loadtest.example`, and mints a token
/// for each.
///
/// # Errors
/// When PostgreSQL refuses the rows or the key cannot sign.
pub async fn members(
    db: &PgPool,
    signer: &JwtSigner,
    tag: &str,
    count: usize,
    role: Role,
) -> anyhow::Result<Vec<Buyer>> {
    let salt = SaltString::from_b64("bG9hZHRlc3RzZWVkc2FsdA").context("the seed salt")?;
    let hash = argon2::Argon2::default()
        .hash_password(PASSWORD.as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("hashing the seed password: {e}"))?
        .to_string();
    let buyers = (0..count)
        .map(|_| {
            let id = MemberId::new();
            let (token, _) = signer.mint(id, role, Uuid::new_v4())?;
            Ok(Buyer { id, token })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let role_name = match role {
        Role::Admin => "admin",
        Role::Buyer => "buyer",
    };
    for (n, chunk) in buyers.chunks(10_000).enumerate() {
        let ids: Vec<Uuid> = chunk.iter().map(|b| b.id.get()).collect();
        let emails: Vec<String> = (0..chunk.len())
            .map(|i| format!("{tag}-{}@loadtest.example", n * 10_000 + i))
            .collect();
        sqlx::query(
            "insert into members (member_id, email, password_hash, name, role, email_verified_at)
             select id, email, $3, 'Load test buyer', $4, now()
             from unnest($1::uuid[], $2::text[]) as seed(id, email)",
        )
        .bind(&ids)
        .bind(&emails)
        .bind(&hash)
        .bind(role_name)
        .execute(db)
        .await
        .context("seeding members")?;
    }
    Ok(buyers)
}
