//! The first admin, from `ADMIN_EMAIL` / `ADMIN_PASSWORD`, created once if absent.

use anyhow::{Context, bail};
use flash_core::domain::{Email, MemberId};
use secrecy::{ExposeSecret, SecretString};
use sqlx::PgPool;

use crate::password::{self, Passwords};

/// Creates the admin account unless the email is taken. An existing account is left as it is
/// (its password and role are not overwritten), so restarts never undo a password change.
pub(crate) async fn ensure_admin(
    db: &PgPool,
    passwords: &std::sync::Arc<Passwords>,
    email: &str,
    password: &SecretString,
) -> anyhow::Result<()> {
    let email = Email::parse(email).map_err(|m| anyhow::anyhow!("ADMIN_EMAIL {m}"))?;
    let exists: Option<(String,)> = sqlx::query_as("select role from members where email = $1")
        .bind(email.as_str())
        .fetch_optional(db)
        .await
        .context("looking up the admin account")?;
    if let Some((role,)) = exists {
        if role != "admin" {
            tracing::warn!(email = %email, "ADMIN_EMAIL belongs to a member who is not an admin; left unchanged");
        }
        return Ok(());
    }
    if let Err(message) = password::check_rules(password.expose_secret(), email.as_str()) {
        bail!("ADMIN_PASSWORD {message}");
    }
    let hash = passwords.hash(password.expose_secret().to_owned()).await?;
    sqlx::query(
        "insert into members (member_id, email, password_hash, name, role)
         values ($1, $2, $3, 'Admin', 'admin') on conflict (email) do nothing",
    )
    .bind(MemberId::new())
    .bind(email.as_str())
    .bind(hash)
    .execute(db)
    .await
    .context("creating the admin account")?;
    tracing::info!(email = %email, "admin account created");
    Ok(())
}
