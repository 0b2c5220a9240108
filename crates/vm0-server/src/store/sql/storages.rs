//! Volumes, artifacts, their versions and files, upload sessions and blobs.

use chrono::{DateTime, Utc};

use super::{conflict_or, holds, id_key, int_key, SqlStore};
use crate::ids;
use crate::store::{
    Condition, FileRow, Kind, NewVersion, Page, Pin, Result, StorageRow, StorageStore, StoreError,
    UploadSession, VersionRow,
};

/// An upload session's row, before its files join it.
#[derive(sqlx::FromRow)]
struct SessionRow {
    id: String,
    storage_id: String,
    message: Option<String>,
    created_by: String,
    expires_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct UploadFileRow {
    #[sqlx(flatten)]
    file: FileRow,
    upload_id: String,
}

/// Checks that the blob of `file` was uploaded by the committing user (`size` is its
/// recorded size, `None` when it was not) with the size the version lists.
fn uploaded_as_listed(file: &FileRow, size: Option<i64>) -> Result<()> {
    match size {
        Some(size) if size == file.size => Ok(()),
        Some(size) => Err(StoreError::InvalidState(format!(
            "{} was uploaded with {size} bytes, not {}",
            file.path.as_str(),
            file.size
        ))),
        None => {
            Err(StoreError::InvalidState(format!("{} has not been uploaded", file.path.as_str())))
        }
    }
}

/// Checks, in the transaction `tx`, that the blob of every one of `files` was uploaded by
/// `user_id` with the size the file lists.
pub(super) async fn check_uploads<DB>(
    tx: &mut sqlx::Transaction<'_, DB>,
    user_id: &str,
    files: &[FileRow],
) -> Result<()>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> DB::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    (i64,): for<'r> sqlx::FromRow<'r, DB::Row>,
{
    for file in files {
        let size: Option<i64> = sqlx::query_scalar(
            "SELECT b.size FROM blobs b \
             JOIN blob_owners o ON o.hash = b.hash AND o.user_id = $1 \
             WHERE b.hash = $2",
        )
        .bind(user_id)
        .bind(file.hash.as_str())
        .fetch_optional(&mut **tx)
        .await?;
        uploaded_as_listed(file, size)?;
    }
    Ok(())
}

/// Commits the version `new` of storage `storage_id` by `user_id` in the transaction `tx`,
/// of either backend: checks its blobs, stores it (or finds the same one stored before),
/// and makes it the storage's current version; the version's row. A run's end commits
/// its artifact's version this way, in the transaction that ends the run.
/// The version an upload session made, by its storage and id.
const COMMITTED_VERSION: &str = "SELECT v.* FROM committed_uploads c \
     JOIN storage_versions v ON v.seq = c.version_seq \
     WHERE c.storage_id = $1 AND c.session_id = $2";

/// How long a committed upload session answers a replayed commit with its version.
const COMMITS_KEPT: chrono::Duration = chrono::Duration::hours(24);

macro_rules! commit_in {
    ($tx:ident, $storage_id:expr, $user_id:expr, $new:expr) => {{
        let (storage_id, user_id, new): (&str, &str, &$crate::store::NewVersion) =
            ($storage_id, $user_id, $new);
        // Blobs are checked inside the transaction, so the collector cannot remove one
        // between this check and the version that refers to it.
        $crate::store::sql::storages::check_uploads(&mut $tx, user_id, &new.files).await?;
        let existing: Option<$crate::store::VersionRow> =
            sqlx::query_as("SELECT * FROM storage_versions WHERE storage_id = $1 AND id = $2")
                .bind(storage_id)
                .bind(&new.id)
                .fetch_optional(&mut *$tx)
                .await?;
        let row = match existing {
            Some(row) => row,
            None => {
                let size: i64 = new.files.iter().map(|f| f.size).sum();
                let row: $crate::store::VersionRow = sqlx::query_as(
                    "INSERT INTO storage_versions
                       (storage_id, id, size, file_count, message, created_by, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *",
                )
                .bind(storage_id)
                .bind(&new.id)
                .bind(size)
                .bind(new.files.len() as i64)
                .bind(&new.message)
                .bind(&new.created_by)
                .bind(new.created_at)
                .fetch_one(&mut *$tx)
                .await?;
                for file in &new.files {
                    sqlx::query(
                        "INSERT INTO version_files (version_seq, path, size, hash) \
                         VALUES ($1, $2, $3, $4)",
                    )
                    .bind(row.seq)
                    .bind(file.path.as_str())
                    .bind(file.size)
                    .bind(file.hash.as_str())
                    .execute(&mut *$tx)
                    .await?;
                }
                row
            }
        };
        sqlx::query(
            "UPDATE storages \
             SET current_version_id = $1, size = $2, file_count = $3, updated_at = $4 \
             WHERE id = $5",
        )
        .bind(&row.id)
        .bind(row.size)
        .bind(row.file_count)
        .bind(new.created_at)
        .bind(storage_id)
        .execute(&mut *$tx)
        .await?;
        row
    }};
}
pub(super) use commit_in;

/// The lock, on PostgreSQL, that serializes the reservations and forgets of one blob
/// across instances: a transaction's advisory lock, in a key space of the blobs' own.
const BLOB_LOCK: &str = "SELECT pg_advisory_xact_lock(hashtext('vm0 blob'), hashtext($1))";

impl StorageStore for SqlStore {
    async fn create_storage(
        &self,
        kind: Kind,
        user_id: &str,
        name: &str,
        at: DateTime<Utc>,
    ) -> Result<StorageRow> {
        on_pool!(self, |pool| {
            let id = ids::new(kind.prefix());
            sqlx::query_as(
                "INSERT INTO storages (id, user_id, kind, name, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING *",
            )
            .bind(&id)
            .bind(user_id)
            .bind(kind.as_str())
            .bind(name)
            .bind(at)
            .bind(at)
            .fetch_one(pool)
            .await
            .map_err(conflict_or)
        })
    }

    async fn list_storages(
        &self,
        kind: Kind,
        user_id: &str,
        page: &Page,
    ) -> Result<Vec<StorageRow>> {
        on_pool!(self, |pool| {
            Ok(sqlx::query_as(
                "SELECT * FROM storages WHERE user_id = $1 AND kind = $2 AND id < $3 \
                 ORDER BY id DESC LIMIT $4",
            )
            .bind(user_id)
            .bind(kind.as_str())
            .bind(id_key(page))
            .bind(page.limit)
            .fetch_all(pool)
            .await?)
        })
    }

    async fn get_storage(&self, kind: Kind, user_id: &str, id: &str) -> Result<Option<StorageRow>> {
        on_pool!(self, |pool| {
            Ok(sqlx::query_as(
                "SELECT * FROM storages WHERE user_id = $1 AND kind = $2 AND id = $3",
            )
            .bind(user_id)
            .bind(kind.as_str())
            .bind(id)
            .fetch_optional(pool)
            .await?)
        })
    }

    async fn get_storage_by_name(
        &self,
        kind: Kind,
        user_id: &str,
        name: &str,
    ) -> Result<Option<StorageRow>> {
        on_pool!(self, |pool| {
            Ok(sqlx::query_as(
                "SELECT * FROM storages WHERE user_id = $1 AND kind = $2 AND name = $3",
            )
            .bind(user_id)
            .bind(kind.as_str())
            .bind(name)
            .fetch_optional(pool)
            .await?)
        })
    }

    async fn delete_storage(
        &self,
        kind: Kind,
        user_id: &str,
        id: &str,
        condition: Condition<'_, StorageRow>,
    ) -> Result<bool> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            // Of its kind only: a volume's id given for an artifact is 404, whatever the tag.
            let select = format!(
                "SELECT * FROM storages WHERE user_id = $1 AND id = $2 AND kind = '{}'",
                kind.as_str()
            );
            lock_and_check!(
                tx,
                "UPDATE storages SET updated_at = updated_at WHERE user_id = $1 AND id = $2",
                &select,
                user_id,
                id,
                condition
            );
            let done =
                sqlx::query("DELETE FROM storages WHERE user_id = $1 AND kind = $2 AND id = $3")
                    .bind(user_id)
                    .bind(kind.as_str())
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            tx.commit().await?;
            Ok(done.rows_affected() == 1)
        })
    }

    async fn list_versions(&self, storage_id: &str, page: &Page) -> Result<Vec<VersionRow>> {
        on_pool!(self, |pool| {
            Ok(sqlx::query_as(
                "SELECT * FROM storage_versions WHERE storage_id = $1 AND seq < $2 \
                 ORDER BY seq DESC LIMIT $3",
            )
            .bind(storage_id)
            .bind(int_key(page))
            .bind(page.limit)
            .fetch_all(pool)
            .await?)
        })
    }

    async fn get_version(&self, storage_id: &str, version_id: &str) -> Result<Option<VersionRow>> {
        on_pool!(self, |pool| {
            Ok(sqlx::query_as("SELECT * FROM storage_versions WHERE storage_id = $1 AND id = $2")
                .bind(storage_id)
                .bind(version_id)
                .fetch_optional(pool)
                .await?)
        })
    }

    async fn version_files(&self, version_seq: i64) -> Result<Vec<FileRow>> {
        on_pool!(self, |pool| {
            Ok(sqlx::query_as(
                "SELECT path, size, hash FROM version_files WHERE version_seq = $1 ORDER BY path",
            )
            .bind(version_seq)
            .fetch_all(pool)
            .await?)
        })
    }

    async fn create_upload_session(
        &self,
        session: &UploadSession,
        at: DateTime<Utc>,
    ) -> Result<()> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "INSERT INTO upload_sessions \
                 (id, storage_id, message, created_by, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&session.id)
            .bind(&session.storage_id)
            .bind(&session.message)
            .bind(&session.created_by)
            .bind(at)
            .bind(session.expires_at)
            .execute(&mut *tx)
            .await?;
            for (file, upload_id) in &session.files {
                sqlx::query(
                    "INSERT INTO upload_files (session_id, upload_id, path, size, hash) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&session.id)
                .bind(upload_id)
                .bind(file.path.as_str())
                .bind(file.size)
                .bind(file.hash.as_str())
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    async fn committed_upload(&self, storage_id: &str, id: &str) -> Result<Option<VersionRow>> {
        on_pool!(self, |pool| {
            Ok(sqlx::query_as(COMMITTED_VERSION)
                .bind(storage_id)
                .bind(id)
                .fetch_optional(pool)
                .await?)
        })
    }

    async fn upload_session(&self, storage_id: &str, id: &str) -> Result<Option<UploadSession>> {
        on_pool!(self, |pool| {
            let row: Option<SessionRow> =
                sqlx::query_as("SELECT * FROM upload_sessions WHERE storage_id = $1 AND id = $2")
                    .bind(storage_id)
                    .bind(id)
                    .fetch_optional(pool)
                    .await?;
            let Some(row) = row else { return Ok(None) };
            let files: Vec<UploadFileRow> = sqlx::query_as(
                "SELECT path, size, hash, upload_id FROM upload_files \
                 WHERE session_id = $1 ORDER BY path",
            )
            .bind(id)
            .fetch_all(pool)
            .await?;
            Ok(Some(UploadSession {
                id: row.id,
                storage_id: row.storage_id,
                message: row.message,
                created_by: row.created_by,
                expires_at: row.expires_at,
                files: files.into_iter().map(|f| (f.file, f.upload_id)).collect(),
            }))
        })
    }

    async fn record_blob(
        &self,
        hash: &str,
        size: i64,
        at: DateTime<Utc>,
        owner: &str,
        pin: Option<&Pin>,
        reserved: &str,
    ) -> Result<()> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query("DELETE FROM blob_pins WHERE hash = $1 AND holder = $2")
                .bind(hash)
                .bind(reserved)
                .execute(&mut *tx)
                .await?;
            if let Some(pin) = pin {
                sqlx::query(
                    "INSERT INTO blob_pins (hash, holder, until) VALUES ($1, $2, $3) \
                     ON CONFLICT (hash, holder) DO UPDATE SET until = excluded.until",
                )
                .bind(hash)
                .bind(&pin.holder)
                .bind(pin.until)
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query(
                "INSERT INTO blobs (hash, size, created_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (hash) DO NOTHING",
            )
            .bind(hash)
            .bind(size)
            .bind(at)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO blob_owners (hash, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )
            .bind(hash)
            .bind(owner)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(())
        })
    }

    async fn commit_version(
        &self,
        storage_id: &str,
        user_id: &str,
        session_id: &str,
        new: &NewVersion,
        condition: Condition<'_, StorageRow>,
    ) -> Result<VersionRow> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            // Write first, so the transaction holds the write lock from its start.
            sqlx::query("UPDATE storages SET updated_at = updated_at WHERE id = $1")
                .bind(storage_id)
                .execute(&mut *tx)
                .await?;
            // The upload session ends first, and must still be live: its files keep their
            // blobs from the collector until this transaction commits the version that
            // refers to them instead. (A commit can outlast its session, reading uploads
            // back from S3, and the collector ends expired sessions.) A run's commit has no
            // session: its pins hold its blobs.
            if !session_id.is_empty() {
                let ended =
                    sqlx::query("DELETE FROM upload_sessions WHERE id = $1 AND expires_at >= $2")
                        .bind(session_id)
                        .bind(Utc::now())
                        .execute(&mut *tx)
                        .await?;
                if ended.rows_affected() == 0 {
                    // The same commit, replayed while the first ran: the storage's row
                    // held them one after the other, and the first is done.
                    let made: Option<VersionRow> = sqlx::query_as(COMMITTED_VERSION)
                        .bind(storage_id)
                        .bind(session_id)
                        .fetch_optional(&mut *tx)
                        .await?;
                    return made.ok_or_else(|| {
                        StoreError::InvalidState(format!(
                            "Upload session '{session_id}' has expired: prepare the upload again"
                        ))
                    });
                }
            }
            if condition.is_some() {
                let current: StorageRow = sqlx::query_as("SELECT * FROM storages WHERE id = $1")
                    .bind(storage_id)
                    .fetch_one(&mut *tx)
                    .await?;
                holds(condition, &current)?;
            }
            let row = commit_in!(tx, storage_id, user_id, new);
            if !session_id.is_empty() {
                sqlx::query(
                    "INSERT INTO committed_uploads (session_id, storage_id, version_seq, \
                     committed_at) VALUES ($1, $2, $3, $4)",
                )
                .bind(session_id)
                .bind(storage_id)
                .bind(row.seq)
                .bind(Utc::now())
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(row)
        })
    }

    async fn unreferenced_blobs(&self, now: DateTime<Utc>) -> Result<Vec<String>> {
        on_pool!(self, |pool| {
            sqlx::query("DELETE FROM upload_sessions WHERE expires_at < $1")
                .bind(now)
                .execute(pool)
                .await?;
            sqlx::query("DELETE FROM blob_pins WHERE until < $1").bind(now).execute(pool).await?;
            sqlx::query("DELETE FROM committed_uploads WHERE committed_at < $1")
                .bind(now - COMMITS_KEPT)
                .execute(pool)
                .await?;
            Ok(sqlx::query_scalar(
                "SELECT hash FROM blobs b
                 WHERE NOT EXISTS (SELECT 1 FROM blob_pins p
                                   WHERE p.hash = b.hash AND p.until >= $1)
                   AND NOT EXISTS (SELECT 1 FROM version_files f WHERE f.hash = b.hash)
                   AND NOT EXISTS (SELECT 1 FROM upload_files u WHERE u.hash = b.hash)
                   AND NOT EXISTS (SELECT 1 FROM checkpoint_files c WHERE c.hash = b.hash)",
            )
            .bind(now)
            .fetch_all(pool)
            .await?)
        })
    }

    async fn reserve_blob(
        &self,
        hash: &str,
        holder: &str,
        until: DateTime<Utc>,
        stale: std::time::Duration,
    ) -> Result<bool> {
        let postgres = self.is_postgres();
        let sql = format!(
            "DELETE FROM blob_removals WHERE hash = $1 AND since_ms < {} - $2",
            self.now_ms()
        );
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            if postgres {
                sqlx::query(BLOB_LOCK).bind(hash).execute(&mut *tx).await?;
            }
            // A write first, which on SQLite takes the database's one write lock.
            sqlx::query(&sql).bind(hash).bind(stale.as_millis() as i64).execute(&mut *tx).await?;
            let removing: Option<i32> =
                sqlx::query_scalar("SELECT 1 FROM blob_removals WHERE hash = $1")
                    .bind(hash)
                    .fetch_optional(&mut *tx)
                    .await?;
            if removing.is_some() {
                return Ok(false);
            }
            sqlx::query("INSERT INTO blob_pins (hash, holder, until) VALUES ($1, $2, $3)")
                .bind(hash)
                .bind(holder)
                .bind(until)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(true)
        })
    }

    async fn abandoned_removals(&self, stale: std::time::Duration) -> Result<Vec<String>> {
        let now = self.now_ms();
        let sql = format!(
            "UPDATE blob_removals SET since_ms = {now} WHERE since_ms < {now} - $1 RETURNING hash"
        );
        on_pool!(self, |pool| {
            Ok(sqlx::query_scalar(&sql).bind(stale.as_millis() as i64).fetch_all(pool).await?)
        })
    }

    async fn removed_blob(&self, hash: &str) -> Result<()> {
        on_pool!(self, |pool| {
            sqlx::query("DELETE FROM blob_removals WHERE hash = $1")
                .bind(hash)
                .execute(pool)
                .await?;
            Ok(())
        })
    }

    async fn forget_blob(&self, hash: &str, now: DateTime<Utc>) -> Result<bool> {
        let postgres = self.is_postgres();
        let removal = format!(
            "INSERT INTO blob_removals (hash, since_ms) VALUES ($1, {0}) \
             ON CONFLICT (hash) DO UPDATE SET since_ms = {0}",
            self.now_ms()
        );
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            if postgres {
                sqlx::query(BLOB_LOCK).bind(hash).execute(&mut *tx).await?;
            }
            let done = sqlx::query(
                "DELETE FROM blobs WHERE hash = $1
                   AND NOT EXISTS (SELECT 1 FROM blob_pins WHERE hash = $1 AND until >= $2)
                   AND NOT EXISTS (SELECT 1 FROM version_files WHERE hash = $1)
                   AND NOT EXISTS (SELECT 1 FROM upload_files WHERE hash = $1)
                   AND NOT EXISTS (SELECT 1 FROM checkpoint_files WHERE hash = $1)",
            )
            .bind(hash)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            // Whoever held the bytes holds them no more: a later upload of the same bytes by
            // someone else must not become theirs. A blob still referred to keeps its owners.
            if done.rows_affected() == 1 {
                sqlx::query("DELETE FROM blob_owners WHERE hash = $1")
                    .bind(hash)
                    .execute(&mut *tx)
                    .await?;
                // Its writers wait until the file or object is gone.
                sqlx::query(&removal).bind(hash).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(done.rows_affected() == 1)
        })
    }
}
