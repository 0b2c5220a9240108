//! The store on SQL: SQLite (the embedded default, in WAL mode with foreign keys on) or
//! PostgreSQL, chosen by the database URL. Every query is written once, with `$N`
//! placeholders that both take, and compiled for each backend by `on_pool!`; the two
//! differ only in their migrations (`migrations/sqlite`, `migrations/postgres`). One file
//! per resource, each implementing its trait of `store`.

/// Runs `body` with `pool` bound to the pool of whichever database this is, so that a
/// method is written once and compiled for both backends.
macro_rules! on_pool {
    ($self:ident, |$pool:ident| $body:block) => {
        match &$self.pool {
            $crate::store::sql::Pool::Sqlite($pool) => $body,
            $crate::store::sql::Pool::Postgres($pool) => $body,
        }
    };
}

/// The first step of a conditional write in the transaction `tx`: locks the user's row
/// `id` with `lock`, a write that changes nothing (so SQLite's transaction holds the write
/// lock and PostgreSQL's the row's), reads it with `select`, both bound to `user_id` and
/// `id`, and checks `condition` on it. Returns `Ok(false)` from the enclosing function
/// when there is no such row, and fails with [`StoreError::Changed`] when the condition
/// does not hold. Nothing is done without a condition.
macro_rules! lock_and_check {
    ($tx:ident, $lock:literal, $select:expr, $user_id:expr, $id:expr, $condition:expr) => {
        if $condition.is_some() {
            sqlx::query($lock).bind($user_id).bind($id).execute(&mut *$tx).await?;
            let current =
                sqlx::query_as($select).bind($user_id).bind($id).fetch_optional(&mut *$tx).await?;
            let Some(current) = current else { return Ok(false) };
            $crate::store::sql::holds($condition, &current)?;
        }
    };
}

/// Signals the runs `runs` on `channel` in the transaction `tx` (see `Signal`), delivered
/// when it commits; on PostgreSQL only, since an SQLite database has one instance, which
/// needs none.
macro_rules! signal {
    ($self:ident, $tx:expr, $channel:expr, $runs:expr) => {
        if $self.is_postgres() {
            for run in $runs {
                sqlx::query("SELECT pg_notify($1, $2)")
                    .bind($channel)
                    .bind(run)
                    .execute(&mut *$tx)
                    .await?;
            }
        }
    };
}

mod agents;
mod keys;
mod runs;
mod storages;
mod users;

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};

use super::{Condition, DatabaseStore, Listener, Page, Result, StoreError};
use crate::metrics::DatabaseReading;

/// How long PostgreSQL lets a session sit idle inside a transaction, in milliseconds.
const IDLE_IN_TRANSACTION: &str = "10000";

/// SQLite or PostgreSQL behind a connection pool.
#[derive(Clone)]
pub struct SqlStore {
    pool: Pool,
}

#[derive(Clone)]
pub(crate) enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl SqlStore {
    /// Opens the database at `url` (`sqlite://PATH`, created if missing, or
    /// `postgres://…`) and runs its migrations.
    pub async fn open(url: &str) -> Result<Self> {
        let pool = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            // A transaction left open by an instance that was paused or cut off holds its
            // rows' locks (a run's, which the others need to end it as lost) until
            // PostgreSQL ends its session: after 10 s idle, well within a lease.
            let options = PgConnectOptions::from_str(url)?
                .options([("idle_in_transaction_session_timeout", IDLE_IN_TRANSACTION)]);
            let pool = PgPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(options)
                .await?;
            // Instances starting together on an empty database migrate it once: sqlx
            // holds an advisory lock around the migrations.
            sqlx::migrate!("./migrations/postgres").run(&pool).await?;
            Pool::Postgres(pool)
        } else {
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(10));
            let pool = SqlitePoolOptions::new().max_connections(8).connect_with(options).await?;
            sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
            Pool::Sqlite(pool)
        };
        Ok(SqlStore { pool })
    }

    /// The SQLite pool when this is SQLite, for checks such as `PRAGMA integrity_check`.
    pub fn sqlite(&self) -> Option<&SqlitePool> {
        match &self.pool {
            Pool::Sqlite(pool) => Some(pool),
            Pool::Postgres(_) => None,
        }
    }

    /// On PostgreSQL, holds the database for the server instance `instance` until the
    /// process ends: `alone`, as an instance whose blobs live in its data directory must
    /// be (another instance would not find them), or beside other instances holding it
    /// the same way; and holds the instance id, which a copied data directory would give
    /// a second live instance (whose start would end the first one's runs as its own
    /// left over). The holds are session-level advisory locks on a connection of their
    /// own, so a killed instance lets go as soon as PostgreSQL sees its connection close;
    /// a start waits a few seconds for that. They end when the returned value is dropped.
    /// SQLite needs none: its file lives in one instance's data directory.
    pub async fn hold(&self, alone: bool, instance: &str) -> Result<Option<InstanceHold>> {
        let Pool::Postgres(pool) = &self.pool else { return Ok(None) };
        let mut connection = pool.acquire().await?.detach();
        // The database's lock keeps the one key it always had, which instances of earlier
        // versions take; instance ids are locked in a space of two keys.
        let database = if alone {
            "SELECT pg_try_advisory_lock($1::TEXT::BIGINT)"
        } else {
            "SELECT pg_try_advisory_lock_shared($1::TEXT::BIGINT)"
        };
        let refusal = if alone {
            "other vm0-server instances are serving this database: \
             several instances on one database need a shared blob store (--blob-store s3://…)"
                .to_string()
        } else {
            "a vm0-server instance with its blobs in its data directory \
             is serving this database alone"
                .to_string()
        };
        try_for_a_while(&mut connection, database, &DATABASE_LOCK.to_string(), refusal).await?;
        let refusal = format!(
            "another vm0-server has the instance id {instance} \
             (in its data directory's instance-id): \
             each instance needs a data directory of its own. \
             (After its host died, PostgreSQL holds the id \
             until it notices the connection is gone.)"
        );
        try_for_a_while(
            &mut connection,
            "SELECT pg_try_advisory_lock(hashtext('vm0 instance'), hashtext($1))",
            instance,
            refusal,
        )
        .await?;
        Ok(Some(InstanceHold { _connection: connection }))
    }

    /// The database's clock, in milliseconds since 1970, as SQL of this backend: leases
    /// are set and judged by it alone, never by an instance's clock.
    fn now_ms(&self) -> &'static str {
        match &self.pool {
            Pool::Sqlite(_) => "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)",
            Pool::Postgres(_) => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
        }
    }

    fn is_postgres(&self) -> bool {
        matches!(self.pool, Pool::Postgres(_))
    }

    /// Which backend this is, for logs: `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        match &self.pool {
            Pool::Sqlite(_) => "sqlite",
            Pool::Postgres(_) => "postgres",
        }
    }
}

impl DatabaseStore for SqlStore {
    async fn ping(&self, within: Duration) -> Result<()> {
        match &self.pool {
            // Whether a write could start: SQLite serves reads while another process
            // holds the database's one write lock, but no request that writes. On a
            // connection of its own, which waits `within` for the lock and is closed
            // after, so that an abandoned wait never leaves a pooled one mid-transaction.
            Pool::Sqlite(pool) => {
                let options =
                    (*pool.connect_options()).clone().busy_timeout(within).create_if_missing(false);
                let mut connection = sqlx::ConnectOptions::connect(&options).await?;
                sqlx::query("BEGIN IMMEDIATE").execute(&mut connection).await?;
                sqlx::query("ROLLBACK").execute(&mut connection).await?;
            }
            Pool::Postgres(pool) => {
                tokio::time::timeout(
                    within,
                    sqlx::query("SELECT 1 FROM settings LIMIT 1").fetch_optional(pool),
                )
                .await
                .map_err(|_| {
                    StoreError::InvalidState(format!("no answer within {} ms", within.as_millis()))
                })??;
            }
        }
        Ok(())
    }

    async fn listen(&self) -> Result<Option<Listener>> {
        match &self.pool {
            Pool::Sqlite(_) => Ok(None),
            Pool::Postgres(pool) => Listener::start(pool).await.map(Some),
        }
    }

    async fn reading(&self) -> Result<DatabaseReading> {
        let (runs_by_status, oldest, pool_size, pool_idle, pool_max) = on_pool!(self, |pool| {
            let counts: Vec<(String, i64)> =
                sqlx::query_as("SELECT status, COUNT(*) FROM runs GROUP BY status")
                    .fetch_all(pool)
                    .await?;
            let sql = format!(
                "SELECT created_at FROM runs WHERE status = {} ORDER BY id LIMIT 1",
                status(vm0_types::RunStatus::Pending)
            );
            let oldest: Option<chrono::DateTime<chrono::Utc>> =
                sqlx::query_scalar(&sql).fetch_optional(pool).await?;
            (
                counts,
                oldest,
                pool.size(),
                pool.num_idle() as u32,
                pool.options().get_max_connections(),
            )
        });
        let oldest_pending =
            oldest.map(|at| (chrono::Utc::now() - at).to_std().unwrap_or_default());
        Ok(DatabaseReading { runs_by_status, oldest_pending, pool_size, pool_idle, pool_max })
    }
}

/// `url` without its password, for messages and logs: `postgres://vm0:***@db/vm0`.
pub fn redacted(url: &str) -> String {
    let Some(start) = url.find("://").map(|i| i + 3) else { return url.to_string() };
    let authority_end = url[start..].find('/').map_or(url.len(), |i| start + i);
    match url[start..authority_end].rfind('@').map(|i| start + i) {
        Some(at) => match url[start..at].find(':').map(|i| start + i) {
            Some(colon) => format!("{}:***{}", &url[..colon], &url[at..]),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

/// A server instance's hold on its PostgreSQL database: a connection of its own, whose
/// closing lets go of the lock.
pub struct InstanceHold {
    _connection: sqlx::PgConnection,
}

/// Takes an advisory lock by `sql` of `key`, trying for 10 seconds at most; then
/// `InvalidState` with `refusal`.
async fn try_for_a_while(
    connection: &mut sqlx::PgConnection,
    sql: &str,
    key: &str,
    refusal: String,
) -> Result<()> {
    let started = std::time::Instant::now();
    while !sqlx::query_scalar::<_, bool>(sql).bind(key).fetch_one(&mut *connection).await? {
        if started.elapsed() > Duration::from_secs(10) {
            return Err(StoreError::InvalidState(refusal));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// The advisory lock of the database in `hold`: "vm0" in ASCII.
const DATABASE_LOCK: i64 = 0x76_6d_30;

/// A run status as an SQL literal: statuses are spelt by `RunStatus` alone, in the
/// queries as in the rows it reads.
fn status(status: vm0_types::RunStatus) -> String {
    format!("'{status}'")
}

/// Ok when a conditional write may go on with `row`, which it has locked.
pub(super) fn holds<R>(condition: Condition<'_, R>, row: &R) -> Result<()> {
    match condition {
        Some(holds) if !holds(row) => Err(StoreError::Changed),
        _ => Ok(()),
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
/// (PostgreSQL compares the id columns byte by byte, `COLLATE "C"`, as SQLite does.)
fn id_key(page: &Page) -> &str {
    page.after.as_deref().unwrap_or("~")
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_url_is_shown_without_its_password() {
        assert_eq!(
            super::redacted("postgres://vm0:s3cr:et@db.internal:5432/vm0?sslmode=require"),
            "postgres://vm0:***@db.internal:5432/vm0?sslmode=require"
        );
        assert_eq!(super::redacted("postgres://vm0@db/vm0"), "postgres://vm0@db/vm0");
        assert_eq!(super::redacted("sqlite:///tmp/a@b/vm0.db"), "sqlite:///tmp/a@b/vm0.db");
    }
}
