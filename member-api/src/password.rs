//! Password rules and Argon2id hashing, off the async runtime and bounded in concurrency.

use std::sync::Arc;

use anyhow::Context;
use argon2::{
    Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version,
    password_hash::{SaltString, rand_core::OsRng},
};
use tokio::sync::Semaphore;

use crate::config::Argon2Args;

/// Shortest password accepted (NIST SP 800-63B asks for at least 8; we ask a little more).
pub(crate) const MIN_LEN: usize = 10;
/// Longest password accepted; long enough for passphrases, short enough to bound hashing input.
pub(crate) const MAX_LEN: usize = 128;

/// Checks a new password against the rules, returning the message to show when it fails.
pub(crate) fn check_rules(password: &str, email: &str) -> Result<(), String> {
    let chars = password.chars().count();
    if chars < MIN_LEN {
        return Err(format!("must be at least {MIN_LEN} characters"));
    }
    if chars > MAX_LEN {
        return Err(format!("must be at most {MAX_LEN} characters"));
    }
    if password.trim().is_empty() {
        return Err("must not be only spaces".to_owned());
    }
    if password
        .chars()
        .collect::<std::collections::HashSet<_>>()
        .len()
        < 4
    {
        return Err("must use at least 4 different characters".to_owned());
    }
    if password.eq_ignore_ascii_case(email) {
        return Err("must not be your email address".to_owned());
    }
    Ok(())
}

/// Hashes and verifies passwords with Argon2id.
pub(crate) struct Passwords {
    argon2: Argon2<'static>,
    permits: Semaphore,
    /// A hash of a random password, verified against when the email is unknown so that an
    /// unknown email costs the same time as a wrong password (no user enumeration by timing).
    decoy: String,
}

impl Passwords {
    /// Builds the hasher and computes the decoy hash (one hash at start-up).
    pub(crate) fn new(args: &Argon2Args) -> anyhow::Result<Arc<Self>> {
        let params = Params::new(
            args.argon2_memory_kib,
            args.argon2_iterations,
            args.argon2_parallelism,
            None,
        )
        .map_err(|e| anyhow::anyhow!("invalid Argon2 parameters: {e}"))?;
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let salt = SaltString::generate(&mut OsRng);
        let decoy = argon2
            .hash_password(uuid::Uuid::new_v4().to_string().as_bytes(), &salt)
            .map_err(|e| anyhow::anyhow!("hashing the decoy password: {e}"))?
            .to_string();
        Ok(Arc::new(Self {
            argon2,
            permits: Semaphore::new(args.argon2_max_concurrent.max(1)),
            decoy,
        }))
    }

    /// Hashes a new password into a PHC string (algorithm, parameters and salt included).
    pub(crate) async fn hash(self: &Arc<Self>, password: String) -> anyhow::Result<String> {
        self.on_blocking_pool(move |this| {
            let salt = SaltString::generate(&mut OsRng);
            this.argon2
                .hash_password(password.as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(|e| anyhow::anyhow!("hashing a password: {e}"))
        })
        .await
    }

    /// Whether `password` matches `stored`; with `stored = None` (unknown email) it checks the
    /// decoy instead, spending the same time, and answers false.
    pub(crate) async fn verify(
        self: &Arc<Self>,
        password: String,
        stored: Option<String>,
    ) -> anyhow::Result<bool> {
        self.on_blocking_pool(move |this| {
            let known = stored.is_some();
            let stored = stored.unwrap_or_else(|| this.decoy.clone());
            let parsed = PasswordHash::new(&stored)
                .map_err(|e| anyhow::anyhow!("stored password hash is malformed: {e}"))?;
            let matches = this
                .argon2
                .verify_password(password.as_bytes(), &parsed)
                .is_ok();
            Ok(known && matches)
        })
        .await
    }

    /// Runs Argon2 work on tokio's blocking pool (it would stall the async workers for
    /// milliseconds), at most `ARGON2_MAX_CONCURRENT` at once.
    async fn on_blocking_pool<T: Send + 'static>(
        self: &Arc<Self>,
        work: impl FnOnce(&Self) -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let _permit = self
            .permits
            .acquire()
            .await
            .context("password hasher closed")?;
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || work(&this))
            .await
            .context("password hashing task panicked")?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> Argon2Args {
        Argon2Args {
            argon2_memory_kib: 1024,
            argon2_iterations: 1,
            argon2_parallelism: 1,
            argon2_max_concurrent: 2,
        }
    }

    #[tokio::test]
    async fn a_hash_verifies_its_password_and_nothing_else() {
        let passwords = Passwords::new(&cheap()).unwrap();
        let hash = passwords
            .hash("correct horse battery".into())
            .await
            .unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(
            passwords
                .verify("correct horse battery".into(), Some(hash.clone()))
                .await
                .unwrap()
        );
        assert!(
            !passwords
                .verify("wrong horse battery".into(), Some(hash))
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn an_unknown_account_never_verifies() {
        let passwords = Passwords::new(&cheap()).unwrap();
        assert!(
            !passwords
                .verify("anything at all".into(), None)
                .await
                .unwrap()
        );
    }

    #[test]
    fn password_rules_explain_each_refusal() {
        let cases = [
            ("short", "too short"),
            ("          ", "only spaces"),
            ("aaaaaaaaaaaa", "too few distinct characters"),
            ("ann@example.com", "equals the email"),
        ];
        for (password, why) in cases {
            assert!(check_rules(password, "ann@example.com").is_err(), "{why}");
        }
        assert!(
            check_rules(&"ab1!".repeat(40), "x@y.z").is_err(),
            "too long"
        );
        assert!(check_rules("correct horse battery", "ann@example.com").is_ok());
    }
}
