//! The embedded default store: SQLite through sqlx, in WAL mode with foreign keys on.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use super::*;
use crate::{ids, secrets};

/// SQLite behind a connection pool.
#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating it if needed) the database at `url` and runs the embedded
    /// migrations.
    pub async fn open(url: &str) -> anyhow::Result<Self> {
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

fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if e.is_unique_violation())
}

fn token(row: &SqliteRow) -> TokenRow {
    TokenRow {
        id: row.get("id"),
        user_id: row.get("user_id"),
        name: row.get("name"),
        token_prefix: row.get("token_prefix"),
        token_hash: row.get("token_hash"),
        created_at: row.get("created_at"),
        expires_at: row.get("expires_at"),
        last_used_at: row.get("last_used_at"),
        revoked_at: row.get("revoked_at"),
    }
}

fn agent(row: &SqliteRow) -> AgentRow {
    AgentRow {
        id: row.get("id"),
        name: row.get("name"),
        current_version_id: row.get("current_version_id"),
        created_at: row.get("created_at"),
        updated_at: row.get("updated_at"),
    }
}

fn agent_version(row: &SqliteRow) -> Result<AgentVersionRow> {
    let config: String = row.get("config");
    Ok(AgentVersionRow {
        id: row.get("id"),
        agent_id: row.get("agent_id"),
        version_number: row.get("version_number"),
        config: serde_json::from_str(&config)?,
        created_at: row.get("created_at"),
    })
}

fn storage(row: &SqliteRow) -> StorageRow {
    StorageRow {
        id: row.get("id"),
        name: row.get("name"),
        current_version_id: row.get("current_version_id"),
        size: row.get("size"),
        file_count: row.get("file_count"),
        created_at: row.get("created_at"),
        updated_at: row.get("updated_at"),
    }
}

fn version(row: &SqliteRow) -> VersionRow {
    VersionRow {
        seq: row.get("seq"),
        storage_id: row.get("storage_id"),
        id: row.get("id"),
        size: row.get("size"),
        file_count: row.get("file_count"),
        message: row.get("message"),
        created_by: row.get("created_by"),
        created_at: row.get("created_at"),
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

impl Store for SqliteStore {
    async fn signing_key(&self) -> Result<Vec<u8>> {
        sqlx::query("INSERT INTO settings (key, value) VALUES ('signing_key', ?) ON CONFLICT (key) DO NOTHING")
            .bind(secrets::new_key())
            .execute(&self.pool)
            .await?;
        Ok(sqlx::query_scalar("SELECT value FROM settings WHERE key = 'signing_key'").fetch_one(&self.pool).await?)
    }

    async fn user_count(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM users").fetch_one(&self.pool).await?)
    }

    async fn ensure_user(&self, name: &str) -> Result<User> {
        sqlx::query("INSERT INTO users (id, name, created_at) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING")
            .bind(ids::new("usr"))
            .bind(name)
            .bind(ids::now())
            .execute(&self.pool)
            .await?;
        let id: String = sqlx::query_scalar("SELECT id FROM users WHERE name = ?").bind(name).fetch_one(&self.pool).await?;
        Ok(User { id, name: name.to_string() })
    }

    async fn insert_token(&self, t: &TokenRow) -> Result<()> {
        sqlx::query("INSERT INTO tokens (id, user_id, name, token_prefix, token_hash, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)")
            .bind(&t.id)
            .bind(&t.user_id)
            .bind(&t.name)
            .bind(&t.token_prefix)
            .bind(&t.token_hash)
            .bind(t.created_at)
            .bind(t.expires_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn token_by_hash(&self, hash: &[u8]) -> Result<Option<TokenRow>> {
        let row = sqlx::query("SELECT * FROM tokens WHERE token_hash = ?").bind(hash).fetch_optional(&self.pool).await?;
        Ok(row.as_ref().map(token))
    }

    async fn touch_token(&self, id: &str, at: DateTime<Utc>) -> Result<()> {
        sqlx::query("UPDATE tokens SET last_used_at = ? WHERE id = ?").bind(at).bind(id).execute(&self.pool).await?;
        Ok(())
    }

    async fn list_tokens(&self, user_id: &str, page: &Page) -> Result<Vec<TokenRow>> {
        let rows = sqlx::query("SELECT * FROM tokens WHERE user_id = ? AND revoked_at IS NULL AND id < ? ORDER BY id DESC LIMIT ?")
            .bind(user_id)
            .bind(id_key(page))
            .bind(page.limit)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(token).collect())
    }

    async fn get_token(&self, user_id: &str, id: &str) -> Result<Option<TokenRow>> {
        let row =
            sqlx::query("SELECT * FROM tokens WHERE user_id = ? AND revoked_at IS NULL AND id = ?").bind(user_id).bind(id).fetch_optional(&self.pool).await?;
        Ok(row.as_ref().map(token))
    }

    async fn revoke_token(&self, user_id: &str, id: &str, at: DateTime<Utc>) -> Result<bool> {
        let done = sqlx::query("UPDATE tokens SET revoked_at = ? WHERE user_id = ? AND id = ? AND revoked_at IS NULL")
            .bind(at)
            .bind(user_id)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn create_agent(&self, user_id: &str, name: &str, config: &Value, at: DateTime<Utc>) -> Result<AgentRow> {
        let (agent_id, version_id) = (ids::new("ag"), ids::new("agv"));
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query("INSERT INTO agents (id, user_id, name, current_version_id, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)")
            .bind(&agent_id)
            .bind(user_id)
            .bind(name)
            .bind(&version_id)
            .bind(at)
            .bind(at)
            .execute(&mut *tx)
            .await;
        match inserted {
            Err(e) if is_unique_violation(&e) => return Err(StoreError::Conflict),
            other => other?,
        };
        sqlx::query("INSERT INTO agent_versions (id, agent_id, version_number, config, created_at) VALUES (?, ?, 1, ?, ?)")
            .bind(&version_id)
            .bind(&agent_id)
            .bind(config.to_string())
            .bind(at)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(AgentRow { id: agent_id, name: name.to_string(), current_version_id: version_id, created_at: at, updated_at: at })
    }

    async fn list_agents(&self, user_id: &str, name: Option<&str>, page: &Page) -> Result<Vec<AgentRow>> {
        let rows = sqlx::query("SELECT * FROM agents WHERE user_id = ? AND id < ? AND (? IS NULL OR name = ?) ORDER BY id DESC LIMIT ?")
            .bind(user_id)
            .bind(id_key(page))
            .bind(name)
            .bind(name)
            .bind(page.limit)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(agent).collect())
    }

    async fn get_agent(&self, user_id: &str, id: &str) -> Result<Option<AgentRow>> {
        let row = sqlx::query("SELECT * FROM agents WHERE user_id = ? AND id = ?").bind(user_id).bind(id).fetch_optional(&self.pool).await?;
        Ok(row.as_ref().map(agent))
    }

    async fn update_agent(&self, user_id: &str, id: &str, config: &Value, at: DateTime<Utc>) -> Result<Option<AgentRow>> {
        let mut tx = self.pool.begin().await?;
        // Write first, so the transaction holds the write lock from its start.
        sqlx::query("UPDATE agents SET updated_at = updated_at WHERE id = ?").bind(id).execute(&mut *tx).await?;
        let Some(row) = sqlx::query("SELECT * FROM agents WHERE user_id = ? AND id = ?").bind(user_id).bind(id).fetch_optional(&mut *tx).await? else {
            return Ok(None);
        };
        let current = agent(&row);
        let current_config: String =
            sqlx::query_scalar("SELECT config FROM agent_versions WHERE id = ?").bind(&current.current_version_id).fetch_one(&mut *tx).await?;
        if serde_json::from_str::<Value>(&current_config)? == *config {
            return Ok(Some(current));
        }
        let version_id = ids::new("agv");
        sqlx::query(
            "INSERT INTO agent_versions (id, agent_id, version_number, config, created_at)
             SELECT ?, ?, MAX(version_number) + 1, ?, ? FROM agent_versions WHERE agent_id = ?",
        )
        .bind(&version_id)
        .bind(id)
        .bind(config.to_string())
        .bind(at)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE agents SET current_version_id = ?, updated_at = ? WHERE id = ?").bind(&version_id).bind(at).bind(id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(Some(AgentRow { current_version_id: version_id, updated_at: at, ..current }))
    }

    async fn delete_agent(&self, user_id: &str, id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM agents WHERE user_id = ? AND id = ?").bind(user_id).bind(id).execute(&self.pool).await?;
        Ok(done.rows_affected() == 1)
    }

    async fn list_agent_versions(&self, agent_id: &str, page: &Page) -> Result<Vec<AgentVersionRow>> {
        let rows = sqlx::query("SELECT * FROM agent_versions WHERE agent_id = ? AND version_number < ? ORDER BY version_number DESC LIMIT ?")
            .bind(agent_id)
            .bind(int_key(page))
            .bind(page.limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(agent_version).collect()
    }

    async fn get_agent_version(&self, agent_id: &str, version_id: &str) -> Result<Option<AgentVersionRow>> {
        let row = sqlx::query("SELECT * FROM agent_versions WHERE agent_id = ? AND id = ?").bind(agent_id).bind(version_id).fetch_optional(&self.pool).await?;
        row.as_ref().map(agent_version).transpose()
    }

    async fn create_storage(&self, kind: Kind, user_id: &str, name: &str, at: DateTime<Utc>) -> Result<StorageRow> {
        let id = ids::new(if kind == Kind::Volume { "vol" } else { "art" });
        let inserted = sqlx::query("INSERT INTO storages (id, user_id, kind, name, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)")
            .bind(&id)
            .bind(user_id)
            .bind(kind.as_str())
            .bind(name)
            .bind(at)
            .bind(at)
            .execute(&self.pool)
            .await;
        match inserted {
            Err(e) if is_unique_violation(&e) => return Err(StoreError::Conflict),
            other => other?,
        };
        Ok(StorageRow { id, name: name.to_string(), current_version_id: None, size: 0, file_count: 0, created_at: at, updated_at: at })
    }

    async fn list_storages(&self, kind: Kind, user_id: &str, page: &Page) -> Result<Vec<StorageRow>> {
        let rows = sqlx::query("SELECT * FROM storages WHERE user_id = ? AND kind = ? AND id < ? ORDER BY id DESC LIMIT ?")
            .bind(user_id)
            .bind(kind.as_str())
            .bind(id_key(page))
            .bind(page.limit)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(storage).collect())
    }

    async fn get_storage(&self, kind: Kind, user_id: &str, id: &str) -> Result<Option<StorageRow>> {
        let row = sqlx::query("SELECT * FROM storages WHERE user_id = ? AND kind = ? AND id = ?")
            .bind(user_id)
            .bind(kind.as_str())
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(storage))
    }

    async fn delete_storage(&self, kind: Kind, user_id: &str, id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM storages WHERE user_id = ? AND kind = ? AND id = ?")
            .bind(user_id)
            .bind(kind.as_str())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn list_versions(&self, storage_id: &str, page: &Page) -> Result<Vec<VersionRow>> {
        let rows = sqlx::query("SELECT * FROM storage_versions WHERE storage_id = ? AND seq < ? ORDER BY seq DESC LIMIT ?")
            .bind(storage_id)
            .bind(int_key(page))
            .bind(page.limit)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(version).collect())
    }

    async fn get_version(&self, storage_id: &str, version_id: &str) -> Result<Option<VersionRow>> {
        let row =
            sqlx::query("SELECT * FROM storage_versions WHERE storage_id = ? AND id = ?").bind(storage_id).bind(version_id).fetch_optional(&self.pool).await?;
        Ok(row.as_ref().map(version))
    }

    async fn version_files(&self, version_seq: i64) -> Result<Vec<FileRow>> {
        let rows =
            sqlx::query("SELECT path, size, hash FROM version_files WHERE version_seq = ? ORDER BY path").bind(version_seq).fetch_all(&self.pool).await?;
        Ok(rows.iter().map(|r| FileRow { path: r.get("path"), size: r.get("size"), hash: r.get("hash") }).collect())
    }

    async fn create_upload_session(&self, session: &UploadSession, at: DateTime<Utc>) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO upload_sessions (id, storage_id, message, created_by, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)")
            .bind(&session.id)
            .bind(&session.storage_id)
            .bind(&session.message)
            .bind(&session.created_by)
            .bind(at)
            .bind(session.expires_at)
            .execute(&mut *tx)
            .await?;
        for (file, upload_id) in &session.files {
            sqlx::query("INSERT INTO upload_files (session_id, upload_id, path, size, hash) VALUES (?, ?, ?, ?, ?)")
                .bind(&session.id)
                .bind(upload_id)
                .bind(&file.path)
                .bind(file.size)
                .bind(&file.hash)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn upload_session(&self, storage_id: &str, id: &str) -> Result<Option<UploadSession>> {
        let Some(row) =
            sqlx::query("SELECT * FROM upload_sessions WHERE storage_id = ? AND id = ?").bind(storage_id).bind(id).fetch_optional(&self.pool).await?
        else {
            return Ok(None);
        };
        let files = sqlx::query("SELECT * FROM upload_files WHERE session_id = ? ORDER BY path").bind(id).fetch_all(&self.pool).await?;
        Ok(Some(UploadSession {
            id: row.get("id"),
            storage_id: row.get("storage_id"),
            message: row.get("message"),
            created_by: row.get("created_by"),
            expires_at: row.get("expires_at"),
            files: files.iter().map(|f| (FileRow { path: f.get("path"), size: f.get("size"), hash: f.get("hash") }, f.get("upload_id"))).collect(),
        }))
    }

    async fn blob_sizes(&self, hashes: &[String]) -> Result<HashMap<String, i64>> {
        let mut out = HashMap::new();
        for chunk in hashes.chunks(500) {
            let marks = vec!["?"; chunk.len()].join(", ");
            let sql = format!("SELECT hash, size FROM blobs WHERE hash IN ({marks})");
            let mut query = sqlx::query(&sql);
            for hash in chunk {
                query = query.bind(hash);
            }
            for row in query.fetch_all(&self.pool).await? {
                out.insert(row.get("hash"), row.get("size"));
            }
        }
        Ok(out)
    }

    async fn record_blob(&self, hash: &str, size: i64, at: DateTime<Utc>) -> Result<()> {
        sqlx::query("INSERT INTO blobs (hash, size, created_at) VALUES (?, ?, ?) ON CONFLICT (hash) DO NOTHING")
            .bind(hash)
            .bind(size)
            .bind(at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn commit_version(&self, storage_id: &str, session_id: &str, new: &NewVersion) -> Result<VersionRow> {
        let mut tx = self.pool.begin().await?;
        // Write first, so the transaction holds the write lock from its start.
        sqlx::query("UPDATE storages SET updated_at = updated_at WHERE id = ?").bind(storage_id).execute(&mut *tx).await?;
        // Blobs are checked inside the transaction, so the collector cannot remove one
        // between this check and the version that refers to it.
        for file in &new.files {
            let size: Option<i64> = sqlx::query_scalar("SELECT size FROM blobs WHERE hash = ?").bind(&file.hash).fetch_optional(&mut *tx).await?;
            match size {
                Some(size) if size == file.size => {}
                Some(size) => return Err(StoreError::InvalidState(format!("{} was uploaded with {size} bytes, not {}", file.path, file.size))),
                None => return Err(StoreError::InvalidState(format!("{} has not been uploaded", file.path))),
            }
        }
        let existing =
            sqlx::query("SELECT * FROM storage_versions WHERE storage_id = ? AND id = ?").bind(storage_id).bind(&new.id).fetch_optional(&mut *tx).await?;
        let row = match existing {
            Some(row) => version(&row),
            None => {
                let size: i64 = new.files.iter().map(|f| f.size).sum();
                let row = sqlx::query(
                    "INSERT INTO storage_versions (storage_id, id, size, file_count, message, created_by, created_at)
                     VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING *",
                )
                .bind(storage_id)
                .bind(&new.id)
                .bind(size)
                .bind(new.files.len() as i64)
                .bind(&new.message)
                .bind(&new.created_by)
                .bind(new.created_at)
                .fetch_one(&mut *tx)
                .await?;
                let row = version(&row);
                for file in &new.files {
                    sqlx::query("INSERT INTO version_files (version_seq, path, size, hash) VALUES (?, ?, ?, ?)")
                        .bind(row.seq)
                        .bind(&file.path)
                        .bind(file.size)
                        .bind(&file.hash)
                        .execute(&mut *tx)
                        .await?;
                }
                row
            }
        };
        sqlx::query("UPDATE storages SET current_version_id = ?, size = ?, file_count = ?, updated_at = ? WHERE id = ?")
            .bind(&row.id)
            .bind(row.size)
            .bind(row.file_count)
            .bind(new.created_at)
            .bind(storage_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM upload_sessions WHERE id = ?").bind(session_id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(row)
    }

    async fn unreferenced_blobs(&self, now: DateTime<Utc>) -> Result<Vec<String>> {
        sqlx::query("DELETE FROM upload_sessions WHERE expires_at < ?").bind(now).execute(&self.pool).await?;
        Ok(sqlx::query_scalar(
            "SELECT hash FROM blobs b
             WHERE NOT EXISTS (SELECT 1 FROM version_files f WHERE f.hash = b.hash)
               AND NOT EXISTS (SELECT 1 FROM upload_files u WHERE u.hash = b.hash)",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    async fn create_run(&self, run: &RunRow, new_session: Option<&SessionRow>) -> Result<()> {
        self.runs_create(run, new_session).await
    }

    async fn get_run(&self, user_id: &str, id: &str) -> Result<Option<RunRow>> {
        let row = sqlx::query("SELECT * FROM runs WHERE user_id = ? AND id = ?").bind(user_id).bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(run).transpose()
    }

    async fn list_runs(&self, user_id: &str, filter: &RunFilter, page: &Page) -> Result<Vec<RunRow>> {
        self.runs_list(user_id, filter, page).await
    }

    async fn get_session(&self, user_id: &str, id: &str) -> Result<Option<SessionRow>> {
        let row = sqlx::query("SELECT * FROM sessions WHERE user_id = ? AND id = ?").bind(user_id).bind(id).fetch_optional(&self.pool).await?;
        Ok(row.map(|r| SessionRow { id: r.get("id"), user_id: r.get("user_id"), agent_id: r.get("agent_id") }))
    }

    async fn get_checkpoint(&self, user_id: &str, id: &str) -> Result<Option<CheckpointRow>> {
        let row =
            sqlx::query("SELECT c.id, c.session_id, s.agent_id FROM checkpoints c JOIN sessions s ON s.id = c.session_id WHERE s.user_id = ? AND c.id = ?")
                .bind(user_id)
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|r| CheckpointRow { id: r.get("id"), session_id: r.get("session_id"), agent_id: r.get("agent_id") }))
    }

    async fn next_pending_run(&self) -> Result<Option<RunRow>> {
        let row = sqlx::query("SELECT * FROM runs WHERE status = 'pending' ORDER BY id LIMIT 1").fetch_optional(&self.pool).await?;
        row.as_ref().map(run).transpose()
    }

    async fn start_run(&self, id: &str, at: DateTime<Utc>) -> Result<bool> {
        let done =
            sqlx::query("UPDATE runs SET status = 'running', started_at = ? WHERE id = ? AND status = 'pending'").bind(at).bind(id).execute(&self.pool).await?;
        Ok(done.rows_affected() == 1)
    }

    async fn end_run(&self, id: &str, end: &RunEnd, checkpoint: Option<&CheckpointRow>) -> Result<bool> {
        self.runs_end(id, end, checkpoint).await
    }

    async fn running_runs(&self) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar("SELECT id FROM runs WHERE status = 'running' ORDER BY id").fetch_all(&self.pool).await?)
    }

    async fn append_event(&self, run_id: &str, event: &str, data: &Value) -> Result<i64> {
        self.runs_append_event(run_id, event, data).await
    }

    async fn events_after(&self, run_id: &str, after: i64, limit: i64) -> Result<Vec<(i64, String, Value)>> {
        let rows = sqlx::query("SELECT id, event, data FROM run_events WHERE run_id = ? AND id > ? ORDER BY id LIMIT ?")
            .bind(run_id)
            .bind(after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok((r.get("id"), r.get("event"), serde_json::from_str(&r.get::<String, _>("data"))?))).collect()
    }

    async fn append_log(&self, run_id: &str, l: &LogRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO run_logs (run_id, seq, timestamp, type, level, message, metadata)
             SELECT ?1, COALESCE(MAX(seq), 0) + 1, ?2, ?3, ?4, ?5, ?6 FROM run_logs WHERE run_id = ?1",
        )
        .bind(run_id)
        .bind(l.timestamp)
        .bind(&l.kind)
        .bind(&l.level)
        .bind(&l.message)
        .bind(l.metadata.to_string())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn list_logs(&self, run_id: &str, query: &LogQuery, page: &Page) -> Result<Vec<LogRow>> {
        self.runs_list_logs(run_id, query, page).await
    }

    async fn append_metric(&self, run_id: &str, m: &MetricRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO run_metrics (run_id, seq, timestamp, cpu_percent, memory_used_mb, memory_total_mb, disk_used_mb, disk_total_mb)
             SELECT ?1, COALESCE(MAX(seq), 0) + 1, ?2, ?3, ?4, ?5, ?6, ?7 FROM run_metrics WHERE run_id = ?1",
        )
        .bind(run_id)
        .bind(m.timestamp)
        .bind(m.cpu_percent)
        .bind(m.memory_used_mb)
        .bind(m.memory_total_mb)
        .bind(m.disk_used_mb)
        .bind(m.disk_total_mb)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn metrics(&self, run_id: &str) -> Result<Vec<MetricRow>> {
        let rows = sqlx::query("SELECT * FROM run_metrics WHERE run_id = ? ORDER BY seq").bind(run_id).fetch_all(&self.pool).await?;
        Ok(rows
            .iter()
            .map(|r| MetricRow {
                timestamp: r.get("timestamp"),
                cpu_percent: r.get("cpu_percent"),
                memory_used_mb: r.get("memory_used_mb"),
                memory_total_mb: r.get("memory_total_mb"),
                disk_used_mb: r.get("disk_used_mb"),
                disk_total_mb: r.get("disk_total_mb"),
            })
            .collect())
    }

    async fn get_storage_by_name(&self, kind: Kind, user_id: &str, name: &str) -> Result<Option<StorageRow>> {
        let row = sqlx::query("SELECT * FROM storages WHERE user_id = ? AND kind = ? AND name = ?")
            .bind(user_id)
            .bind(kind.as_str())
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(storage))
    }

    async fn get_agent_version_by_number(&self, agent_id: &str, number: i64) -> Result<Option<AgentVersionRow>> {
        let row = sqlx::query("SELECT * FROM agent_versions WHERE agent_id = ? AND version_number = ?")
            .bind(agent_id)
            .bind(number)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(agent_version).transpose()
    }

    async fn cancel_pending_run(&self, id: &str, end: &RunEnd) -> Result<bool> {
        let done = sqlx::query("UPDATE runs SET status = 'cancelled', error = ?, completed_at = ? WHERE id = ? AND status = 'pending'")
            .bind(&end.error)
            .bind(end.completed_at)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn latest_checkpoint(&self, session_id: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar("SELECT id FROM checkpoints WHERE session_id = ? ORDER BY id DESC LIMIT 1").bind(session_id).fetch_optional(&self.pool).await?)
    }

    async fn forget_blob(&self, hash: &str) -> Result<bool> {
        let done = sqlx::query(
            "DELETE FROM blobs WHERE hash = ?1
               AND NOT EXISTS (SELECT 1 FROM version_files WHERE hash = ?1)
               AND NOT EXISTS (SELECT 1 FROM upload_files WHERE hash = ?1)",
        )
        .bind(hash)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

fn run(row: &SqliteRow) -> Result<RunRow> {
    let json = |column: &str| -> Result<Value> { Ok(serde_json::from_str(&row.get::<String, _>(column))?) };
    Ok(RunRow {
        id: row.get("id"),
        user_id: row.get("user_id"),
        agent_id: row.get("agent_id"),
        agent_name: row.get("agent_name"),
        agent_version_id: row.get("agent_version_id"),
        session_id: row.get("session_id"),
        from_checkpoint: row.get("from_checkpoint"),
        status: row.get("status"),
        prompt: row.get("prompt"),
        variables: json("variables")?,
        secrets: json("secrets")?,
        volumes: json("volumes")?,
        artifact_name: row.get("artifact_name"),
        artifact_base: row.get("artifact_base"),
        artifact_version: row.get("artifact_version"),
        checkpoint_id: row.get("checkpoint_id"),
        error: row.get("error"),
        execution_time_ms: row.get("execution_time_ms"),
        created_at: row.get("created_at"),
        started_at: row.get("started_at"),
        completed_at: row.get("completed_at"),
    })
}

fn log(row: &SqliteRow) -> Result<LogRow> {
    Ok(LogRow {
        seq: row.get("seq"),
        timestamp: row.get("timestamp"),
        kind: row.get("type"),
        level: row.get("level"),
        message: row.get("message"),
        metadata: serde_json::from_str(&row.get::<String, _>("metadata"))?,
    })
}

impl SqliteStore {
    pub(super) async fn runs_create(&self, r: &RunRow, session: Option<&SessionRow>) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        if let Some(s) = session {
            sqlx::query("INSERT INTO sessions (id, user_id, agent_id, created_at) VALUES (?, ?, ?, ?)")
                .bind(&s.id)
                .bind(&s.user_id)
                .bind(&s.agent_id)
                .bind(r.created_at)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "INSERT INTO runs (id, user_id, agent_id, agent_name, agent_version_id, session_id, from_checkpoint, status, prompt,
                               variables, secrets, volumes, artifact_name, artifact_base, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&r.id)
        .bind(&r.user_id)
        .bind(&r.agent_id)
        .bind(&r.agent_name)
        .bind(&r.agent_version_id)
        .bind(&r.session_id)
        .bind(&r.from_checkpoint)
        .bind(&r.status)
        .bind(&r.prompt)
        .bind(r.variables.to_string())
        .bind(r.secrets.to_string())
        .bind(r.volumes.to_string())
        .bind(&r.artifact_name)
        .bind(&r.artifact_base)
        .bind(r.created_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn runs_list(&self, user_id: &str, f: &RunFilter, page: &Page) -> Result<Vec<RunRow>> {
        let rows = sqlx::query(
            "SELECT * FROM runs WHERE user_id = ? AND id < ?
               AND (? IS NULL OR agent_id = ?) AND (? IS NULL OR status = ?) AND (? IS NULL OR created_at >= ?)
             ORDER BY id DESC LIMIT ?",
        )
        .bind(user_id)
        .bind(id_key(page))
        .bind(&f.agent_id)
        .bind(&f.agent_id)
        .bind(&f.status)
        .bind(&f.status)
        .bind(f.since)
        .bind(f.since)
        .bind(page.limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(run).collect()
    }

    pub(super) async fn runs_end(&self, id: &str, end: &RunEnd, checkpoint: Option<&CheckpointRow>) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE runs SET status = ?, error = ?, execution_time_ms = ?, completed_at = ?, checkpoint_id = ?, artifact_version = ?
             WHERE id = ? AND status IN ('pending', 'running')",
        )
        .bind(&end.status)
        .bind(&end.error)
        .bind(end.execution_time_ms)
        .bind(end.completed_at)
        .bind(&end.checkpoint_id)
        .bind(&end.artifact_version)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        if let Some(c) = checkpoint {
            sqlx::query("INSERT INTO checkpoints (id, session_id, run_id, created_at) VALUES (?, ?, ?, ?)")
                .bind(&c.id)
                .bind(&c.session_id)
                .bind(id)
                .bind(end.completed_at)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    pub(super) async fn runs_append_event(&self, run_id: &str, event: &str, data: &Value) -> Result<i64> {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO run_events (run_id, id, event, data)
             SELECT ?1, COALESCE(MAX(id), 0) + 1, ?2, ?3 FROM run_events WHERE run_id = ?1 RETURNING id",
        )
        .bind(run_id)
        .bind(event)
        .bind(data.to_string())
        .fetch_one(&self.pool)
        .await?;
        Ok(id)
    }

    pub(super) async fn runs_list_logs(&self, run_id: &str, q: &LogQuery, page: &Page) -> Result<Vec<LogRow>> {
        let (compare, order, start) = if q.descending { ("<", "DESC", i64::MAX) } else { (">", "ASC", 0) };
        let after = page.after.as_deref().and_then(|a| a.parse().ok()).unwrap_or(start);
        let sql = format!(
            "SELECT * FROM run_logs WHERE run_id = ? AND seq {compare} ?
               AND (? IS NULL OR type = ?) AND (? IS NULL OR timestamp >= ?) AND (? IS NULL OR timestamp < ?)
             ORDER BY seq {order} LIMIT ?"
        );
        let rows = sqlx::query(&sql)
            .bind(run_id)
            .bind(after)
            .bind(&q.kind)
            .bind(&q.kind)
            .bind(q.since)
            .bind(q.since)
            .bind(q.until)
            .bind(q.until)
            .bind(page.limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(log).collect()
    }
}
