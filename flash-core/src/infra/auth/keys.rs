//! The Ed25519 key pair: generating a dev pair and minting tokens with the private half.

use anyhow::Context;
use ed25519_dalek::{
    SigningKey,
    pkcs8::{EncodePrivateKey, EncodePublicKey, spki::der::pem::LineEnding},
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rand::RngCore;
use uuid::Uuid;

use crate::{
    auth::Claims,
    domain::{MemberId, Role},
};

/// An Ed25519 key pair as PEM text (PKCS#8 private, SPKI public).
pub struct KeyPair {
    /// The signing key; only member-api may hold it.
    pub private_pem: String,
    /// The verifying key every service reads.
    pub public_pem: String,
}

impl KeyPair {
    /// A fresh random pair, for a dev stack's first start and for tests.
    ///
    /// # Errors
    /// Only if PEM encoding fails, which would be a bug in the encoder.
    pub fn generate() -> anyhow::Result<Self> {
        let mut seed = [0u8; 32];
        rand::rng().fill_bytes(&mut seed);
        let signing = SigningKey::from_bytes(&seed);
        let private_pem = signing
            .to_pkcs8_pem(LineEnding::LF)
            .context("encoding the private key")?
            .to_string();
        let public_pem = signing
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .context("encoding the public key")?;
        Ok(Self {
            private_pem,
            public_pem,
        })
    }
}

/// Mints access tokens. Lives beside the verifier so both agree on the claims, but only
/// processes given the private key can build one.
#[derive(Clone)]
pub struct JwtSigner {
    key: EncodingKey,
    issuer: String,
    audience: String,
    ttl_secs: i64,
}

impl JwtSigner {
    /// A signer whose tokens live `ttl_secs`.
    ///
    /// # Errors
    /// When the PEM is not an Ed25519 private key.
    pub fn from_pem(
        private_pem: &[u8],
        issuer: &str,
        audience: &str,
        ttl_secs: i64,
    ) -> anyhow::Result<Self> {
        let key = EncodingKey::from_ed_pem(private_pem).context("parsing the JWT private key")?;
        Ok(Self {
            key,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            ttl_secs,
        })
    }

    /// How long minted tokens live, in seconds.
    pub fn ttl_secs(&self) -> i64 {
        self.ttl_secs
    }

    /// Signs a new access token for `member` in login session `sid`.
    ///
    /// # Errors
    /// When signing fails (a broken key).
    pub fn mint(
        &self,
        member: MemberId,
        role: Role,
        sid: Uuid,
    ) -> anyhow::Result<(String, Claims)> {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: member,
            role,
            jti: Uuid::new_v4(),
            sid,
            iat: now,
            exp: now + self.ttl_secs,
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &claims, &self.key)
            .context("signing an access token")?;
        Ok((token, claims))
    }
}
