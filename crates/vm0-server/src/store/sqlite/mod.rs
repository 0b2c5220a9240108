//! The embedded default store: SQLite through sqlx, in WAL mode with foreign keys on.
//! One file per resource, each implementing its trait of `store`.

mod agents;
mod runs;
mod storages;
mod users;

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

use super::{Page, Result, StoreError};

/// SQLite behind a connection pool.
#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating it if needed) the database at `url` and runs the embedded
    /// migrations.
    pub async fn open(url: &str) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new().max_connections(8).connect_with(options).await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(SqliteStore { pool })
    }

    /// The pool, for checks such as `PRAGMA integrity_check`.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

/// A unique index refused the row: `Conflict`; any other error as it is.
fn conflict_or(error: sqlx::Error) -> StoreError {
    match &error {
        sqlx::Error::Database(e) if e.is_unique_violation() => StoreError::Conflict,
        _ => StoreError::Database(error),
    }
}

/// A page's sort key as the integer it is for versions; a key that is not one reads as
/// "before everything", which cannot come from a signed cursor.
fn int_key(page: &Page) -> i64 {
    page.after.as_deref().map(|k| k.parse().unwrap_or(0)).unwrap_or(i64::MAX)
}

/// The id key of a page: ids sort after every prefix character, so `~` is past the end.
fn id_key(page: &Page) -> &str {
    page.after.as_deref().unwrap_or("~")
}
