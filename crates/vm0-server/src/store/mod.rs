//! The storage interface: everything the handlers keep, behind the `Store` trait, so
//! that a second backend (PostgreSQL) can be added without touching them. `sqlite.rs` is
//! the embedded default.

mod sqlite;

use std::future::Future;

use chrono::{DateTime, Utc};
use serde_json::Value;

pub use sqlite::SqliteStore;

/// What went wrong in the store, independent of HTTP.
#[derive(Debug)]
pub enum StoreError {
    /// A unique name is taken.
    Conflict,
    /// The request cannot be done in the resource's present state; the message says why.
    InvalidState(String),
    /// Something the caller cannot fix; its detail goes to the log only.
    Internal(String),
}

impl<E: std::error::Error> From<E> for StoreError {
    fn from(error: E) -> Self {
        StoreError::Internal(error.to_string())
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// A page request: at most `limit` items after the sort key `after`.
#[derive(Debug, Clone)]
pub struct Page {
    pub limit: i64,
    pub after: Option<String>,
}

#[derive(Debug, Clone)]
pub struct User {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone)]
pub struct TokenRow {
    pub id: String,
    pub user_id: String,
    pub name: String,
    pub token_prefix: String,
    pub token_hash: Vec<u8>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
pub struct AgentRow {
    pub id: String,
    pub name: String,
    pub current_version_id: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct AgentVersionRow {
    pub id: String,
    pub agent_id: String,
    pub version_number: i64,
    pub config: Value,
    pub created_at: DateTime<Utc>,
}

/// Volumes and artifacts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Volume,
    Artifact,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Volume => "volume",
            Kind::Artifact => "artifact",
        }
    }
}

#[derive(Debug, Clone)]
pub struct StorageRow {
    pub id: String,
    pub name: String,
    pub current_version_id: Option<String>,
    pub size: i64,
    pub file_count: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct VersionRow {
    pub seq: i64,
    pub storage_id: String,
    pub id: String,
    pub size: i64,
    pub file_count: i64,
    pub message: Option<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRow {
    pub path: String,
    pub size: i64,
    pub hash: String,
}

#[derive(Debug, Clone)]
pub struct UploadSession {
    pub id: String,
    pub storage_id: String,
    pub message: Option<String>,
    pub created_by: String,
    pub expires_at: DateTime<Utc>,
    /// Each file with its upload id.
    pub files: Vec<(FileRow, String)>,
}

/// A version about to be committed.
#[derive(Debug, Clone)]
pub struct NewVersion {
    pub id: String,
    pub message: Option<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub files: Vec<FileRow>,
}

/// A run as stored; `secrets` never leaves the server.
#[derive(Debug, Clone)]
pub struct RunRow {
    pub id: String,
    pub user_id: String,
    pub agent_id: String,
    pub agent_name: String,
    pub agent_version_id: String,
    pub session_id: String,
    pub from_checkpoint: Option<String>,
    pub status: String,
    pub prompt: String,
    pub variables: Value,
    pub secrets: Value,
    pub volumes: Value,
    pub artifact_name: Option<String>,
    pub artifact_base: Option<String>,
    pub artifact_version: Option<String>,
    pub checkpoint_id: Option<String>,
    pub error: Option<String>,
    pub execution_time_ms: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
pub struct SessionRow {
    pub id: String,
    pub user_id: String,
    pub agent_id: String,
}

#[derive(Debug, Clone)]
pub struct CheckpointRow {
    pub id: String,
    pub session_id: String,
    pub agent_id: String,
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct RunEnd {
    pub status: String,
    pub error: Option<String>,
    pub execution_time_ms: Option<i64>,
    pub completed_at: DateTime<Utc>,
    pub checkpoint_id: Option<String>,
    pub artifact_version: Option<String>,
}

#[derive(Debug, Clone)]
pub struct LogRow {
    pub seq: i64,
    pub timestamp: DateTime<Utc>,
    pub kind: String,
    pub level: String,
    pub message: String,
    pub metadata: Value,
}

#[derive(Debug, Clone)]
pub struct LogQuery {
    pub kind: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub descending: bool,
}

#[derive(Debug, Clone)]
pub struct MetricRow {
    pub timestamp: DateTime<Utc>,
    pub cpu_percent: f64,
    pub memory_used_mb: f64,
    pub memory_total_mb: f64,
    pub disk_used_mb: f64,
    pub disk_total_mb: f64,
}

/// Filters of the run list.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub agent_id: Option<String>,
    pub status: Option<String>,
    pub since: Option<DateTime<Utc>>,
}

/// Everything the server keeps. Methods that take a `user_id` only ever see that user's
/// resources: another user's id reads as missing.
pub trait Store: Send + Sync + 'static {
    /// The server's signing key, created on first use.
    fn signing_key(&self) -> impl Future<Output = Result<Vec<u8>>> + Send;

    fn user_count(&self) -> impl Future<Output = Result<i64>> + Send;
    /// The user called `name`, created if new.
    fn ensure_user(&self, name: &str) -> impl Future<Output = Result<User>> + Send;

    fn insert_token(&self, token: &TokenRow) -> impl Future<Output = Result<()>> + Send;
    fn token_by_hash(&self, hash: &[u8]) -> impl Future<Output = Result<Option<TokenRow>>> + Send;
    fn touch_token(&self, id: &str, at: DateTime<Utc>) -> impl Future<Output = Result<()>> + Send;
    /// Live (unrevoked) tokens only, as `get_token`.
    fn list_tokens(&self, user_id: &str, page: &Page) -> impl Future<Output = Result<Vec<TokenRow>>> + Send;
    fn get_token(&self, user_id: &str, id: &str) -> impl Future<Output = Result<Option<TokenRow>>> + Send;
    /// Revokes a live token; false when there is no such live token.
    fn revoke_token(&self, user_id: &str, id: &str, at: DateTime<Utc>) -> impl Future<Output = Result<bool>> + Send;

    fn create_agent(&self, user_id: &str, name: &str, config: &Value, at: DateTime<Utc>) -> impl Future<Output = Result<AgentRow>> + Send;
    fn list_agents(&self, user_id: &str, name: Option<&str>, page: &Page) -> impl Future<Output = Result<Vec<AgentRow>>> + Send;
    fn get_agent(&self, user_id: &str, id: &str) -> impl Future<Output = Result<Option<AgentRow>>> + Send;
    /// Makes `config` the agent's configuration, with a new version only when it differs.
    fn update_agent(&self, user_id: &str, id: &str, config: &Value, at: DateTime<Utc>) -> impl Future<Output = Result<Option<AgentRow>>> + Send;
    fn delete_agent(&self, user_id: &str, id: &str) -> impl Future<Output = Result<bool>> + Send;
    /// Newest first; `page.after` is a version number.
    fn list_agent_versions(&self, agent_id: &str, page: &Page) -> impl Future<Output = Result<Vec<AgentVersionRow>>> + Send;
    fn get_agent_version(&self, agent_id: &str, version_id: &str) -> impl Future<Output = Result<Option<AgentVersionRow>>> + Send;

    fn create_storage(&self, kind: Kind, user_id: &str, name: &str, at: DateTime<Utc>) -> impl Future<Output = Result<StorageRow>> + Send;
    fn list_storages(&self, kind: Kind, user_id: &str, page: &Page) -> impl Future<Output = Result<Vec<StorageRow>>> + Send;
    fn get_storage(&self, kind: Kind, user_id: &str, id: &str) -> impl Future<Output = Result<Option<StorageRow>>> + Send;
    fn delete_storage(&self, kind: Kind, user_id: &str, id: &str) -> impl Future<Output = Result<bool>> + Send;
    /// Newest first; `page.after` is a version's sequence number.
    fn list_versions(&self, storage_id: &str, page: &Page) -> impl Future<Output = Result<Vec<VersionRow>>> + Send;
    fn get_version(&self, storage_id: &str, version_id: &str) -> impl Future<Output = Result<Option<VersionRow>>> + Send;
    fn version_files(&self, version_seq: i64) -> impl Future<Output = Result<Vec<FileRow>>> + Send;

    fn create_upload_session(&self, session: &UploadSession, at: DateTime<Utc>) -> impl Future<Output = Result<()>> + Send;
    fn upload_session(&self, storage_id: &str, id: &str) -> impl Future<Output = Result<Option<UploadSession>>> + Send;
    /// The size of each of `hashes` that is a complete blob.
    fn blob_sizes(&self, hashes: &[String]) -> impl Future<Output = Result<std::collections::HashMap<String, i64>>> + Send;
    fn record_blob(&self, hash: &str, size: i64, at: DateTime<Utc>) -> impl Future<Output = Result<()>> + Send;
    /// In one transaction: checks that every file's blob is complete with its size
    /// (`InvalidState` naming the first that is not), then the version (or the existing
    /// one with the same id), its files, the storage's current version, and the end of the
    /// upload session.
    fn commit_version(&self, storage_id: &str, session_id: &str, version: &NewVersion) -> impl Future<Output = Result<VersionRow>> + Send;
    /// Blobs that no version and no open upload session refer to.
    fn unreferenced_blobs(&self, now: DateTime<Utc>) -> impl Future<Output = Result<Vec<String>>> + Send;
    /// Stores a new run, and its session when the run starts one.
    fn create_run(&self, run: &RunRow, new_session: Option<&SessionRow>) -> impl Future<Output = Result<()>> + Send;
    fn get_run(&self, user_id: &str, id: &str) -> impl Future<Output = Result<Option<RunRow>>> + Send;
    /// Newest first, by id.
    fn list_runs(&self, user_id: &str, filter: &RunFilter, page: &Page) -> impl Future<Output = Result<Vec<RunRow>>> + Send;
    fn get_session(&self, user_id: &str, id: &str) -> impl Future<Output = Result<Option<SessionRow>>> + Send;
    fn get_checkpoint(&self, user_id: &str, id: &str) -> impl Future<Output = Result<Option<CheckpointRow>>> + Send;
    /// The oldest pending run, for the scheduler.
    fn next_pending_run(&self) -> impl Future<Output = Result<Option<RunRow>>> + Send;
    /// pending → running; false when the run was no longer pending.
    fn start_run(&self, id: &str, at: DateTime<Utc>) -> impl Future<Output = Result<bool>> + Send;
    /// Ends a run that has not ended yet, with its checkpoint when it records one; false
    /// when it had already ended.
    fn end_run(&self, id: &str, end: &RunEnd, checkpoint: Option<&CheckpointRow>) -> impl Future<Output = Result<bool>> + Send;
    /// Ids of the runs left running, as after a crash.
    fn running_runs(&self) -> impl Future<Output = Result<Vec<String>>> + Send;
    /// Appends an event; its id, one more than the run's last.
    fn append_event(&self, run_id: &str, event: &str, data: &Value) -> impl Future<Output = Result<i64>> + Send;
    /// Events after `after`, oldest first, at most `limit`.
    fn events_after(&self, run_id: &str, after: i64, limit: i64) -> impl Future<Output = Result<Vec<(i64, String, Value)>>> + Send;
    fn append_log(&self, run_id: &str, log: &LogRow) -> impl Future<Output = Result<()>> + Send;
    /// `page.after` is a log's sequence number, in the query's order.
    fn list_logs(&self, run_id: &str, query: &LogQuery, page: &Page) -> impl Future<Output = Result<Vec<LogRow>>> + Send;
    fn append_metric(&self, run_id: &str, metric: &MetricRow) -> impl Future<Output = Result<()>> + Send;
    fn metrics(&self, run_id: &str) -> impl Future<Output = Result<Vec<MetricRow>>> + Send;
    fn get_storage_by_name(&self, kind: Kind, user_id: &str, name: &str) -> impl Future<Output = Result<Option<StorageRow>>> + Send;
    fn get_agent_version_by_number(&self, agent_id: &str, number: i64) -> impl Future<Output = Result<Option<AgentVersionRow>>> + Send;
    /// pending → cancelled; false when the run was no longer pending.
    fn cancel_pending_run(&self, id: &str, end: &RunEnd) -> impl Future<Output = Result<bool>> + Send;
    /// The session's latest checkpoint.
    fn latest_checkpoint(&self, session_id: &str) -> impl Future<Output = Result<Option<String>>> + Send;

    /// Forgets a blob if nothing refers to it any more; true when its file may go.
    fn forget_blob(&self, hash: &str) -> impl Future<Output = Result<bool>> + Send;
}
