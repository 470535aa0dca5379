//! PostgreSQL: the pool, the embedded migrations, and readiness.

use std::time::Duration;

use anyhow::Context;
use sqlx::{PgPool, migrate::Migrator, postgres::PgPoolOptions};

use crate::config::PgArgs;

/// Every migration in `migrations/`, embedded at build time.
///
/// Running it is safe when several processes start at once: sqlx takes a PostgreSQL advisory
/// lock for the duration and skips what is already applied.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// Opens the pool, failing start-up early with the URL's host when the server is unreachable.
///
/// # Errors
/// When PostgreSQL cannot be reached or refuses the credentials.
pub async fn connect(args: &PgArgs) -> anyhow::Result<PgPool> {
    PgPoolOptions::new()
        .max_connections(args.database_max_connections)
        .acquire_timeout(Duration::from_millis(args.database_acquire_timeout_ms))
        .connect(&args.database_url)
        .await
        .with_context(|| format!("connecting to PostgreSQL at {}", redact(&args.database_url)))
}

/// Applies pending migrations.
///
/// # Errors
/// When a migration fails or an applied one was edited (checksum mismatch).
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    MIGRATOR
        .run(pool)
        .await
        .context("running database migrations")
}

/// A URL fit for logs: the password, if any, is replaced by `***`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn redact_hides_only_the_password() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("not a url"), "not a url");
    }
}
