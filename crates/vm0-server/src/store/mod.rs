//! The storage interface: everything the server keeps, behind one trait per resource
//! (`UserStore`, `AgentStore`, `StorageStore`, `RunStore`), so that a second backend
//! could implement the same four without touching the layers above. Rows are
//! plain structs that sqlx maps by column name; enum and name columns are read straight
//! into the generated types, so a value the spec forbids is a decode error here, not a
//! surprise in a response. `sql/` is the one implementation, on SQLite or PostgreSQL.

mod sql;

use std::collections::HashMap;
use std::future::Future;

use crate::metrics::DatabaseReading;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sha2::Digest;
use sqlx::types::Json;
use vm0_types::{
    self as types, AgentName, FilePath, LogLevel, LogType, RunEvent, RunStatus, Sha256, StorageName,
};

pub use sql::{redacted, InstanceHold, SqlStore};

/// What went wrong in the store, independent of HTTP: the API layer decides the status
/// of each in one place (`From<StoreError> for ApiError`).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique name is taken.
    #[error("the name is taken")]
    Conflict,
    /// A conditional write's condition no longer held when the write took its row.
    #[error("the resource changed")]
    Changed,
    /// The request cannot be done in the resource's present state; the message says why.
    #[error("{0}")]
    InvalidState(String),
    /// The user has as many of what the write would add as allowed (runs waiting).
    #[error("too many")]
    TooMany,
    /// The database failed, or holds something it should not.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A JSON column could not be written or read.
    #[error("a JSON column: {0}")]
    Json(#[from] serde_json::Error),
    /// A file of the blob store or of a run's working directory.
    #[error("file system: {0}")]
    Io(#[from] std::io::Error),
    /// The S3 bucket of the blob store.
    #[error("object store: {0}")]
    ObjectStore(#[from] object_store::Error),
    /// The database could not be opened or migrated.
    #[error("migrating the database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl StoreError {
    /// Whether a unique key refused a row: one that is stored already.
    pub fn is_duplicate(&self) -> bool {
        matches!(self, StoreError::Database(sqlx::Error::Database(e)) if e.is_unique_violation())
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// What a conditional write asks of its row (an `If-Match`, answered from the row): the
/// store checks it after it has locked the row and before it writes, and fails with
/// [`StoreError::Changed`] if it does not hold, so the check and the write are one step.
/// `None` writes unconditionally.
pub type Condition<'a, R> = Option<&'a (dyn Fn(&R) -> bool + Send + Sync)>;

/// A page request: at most `limit` items after the sort key `after`.
#[derive(Debug, Clone)]
pub struct Page {
    pub limit: i64,
    pub after: Option<String>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct User {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone, sqlx::FromRow)]
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

/// A token as authentication reads it, judged at the time the lookup was given.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TokenAuth {
    pub id: String,
    pub user_id: String,
    pub expired: bool,
    pub revoked: bool,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AgentRow {
    pub id: String,
    #[sqlx(try_from = "String")]
    pub name: AgentName,
    pub current_version_id: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AgentVersionRow {
    pub id: String,
    pub agent_id: String,
    pub version_number: i64,
    pub config: Json<Map<String, Value>>,
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

    /// The prefix of this kind's ids.
    pub(crate) fn prefix(self) -> crate::ids::Prefix {
        match self {
            Kind::Volume => crate::ids::Prefix::Volume,
            Kind::Artifact => crate::ids::Prefix::Artifact,
        }
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StorageRow {
    pub id: String,
    #[sqlx(try_from = "String")]
    pub name: StorageName,
    pub current_version_id: Option<String>,
    pub size: i64,
    pub file_count: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
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

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct FileRow {
    #[sqlx(try_from = "String")]
    pub path: FilePath,
    pub size: i64,
    #[sqlx(try_from = "String")]
    pub hash: Sha256,
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

impl NewVersion {
    /// The version of `files`, whose id is the SHA-256 of its manifest: the files sorted
    /// by path, each as `path NUL size NUL hash NUL` (paths cannot hold NUL).
    pub fn of(
        mut files: Vec<FileRow>,
        message: Option<String>,
        created_by: String,
        created_at: DateTime<Utc>,
    ) -> NewVersion {
        files.sort_by(|a, b| a.path.as_str().cmp(b.path.as_str()));
        let mut hasher = sha2::Sha256::new();
        for file in &files {
            hasher.update(format!(
                "{}\0{}\0{}\0",
                file.path.as_str(),
                file.size,
                file.hash.as_str()
            ));
        }
        NewVersion { id: hex::encode(hasher.finalize()), message, created_by, created_at, files }
    }
}

/// A run as stored; `secrets` never leaves the server.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RunRow {
    pub id: String,
    pub user_id: String,
    pub agent_id: String,
    pub agent_name: String,
    pub agent_version_id: String,
    pub session_id: String,
    pub from_checkpoint: Option<String>,
    #[sqlx(try_from = "String")]
    pub status: RunStatus,
    pub prompt: String,
    pub variables: Json<HashMap<String, String>>,
    pub secrets: Json<HashMap<String, String>>,
    /// Each volume's name and the version the run mounts.
    pub volumes: Json<HashMap<String, String>>,
    pub artifact_name: Option<String>,
    pub artifact_base: Option<String>,
    pub artifact_version: Option<String>,
    pub checkpoint_id: Option<String>,
    pub error: Option<String>,
    pub execution_time_ms: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    /// How many times the run was claimed: the epoch its executor holds it under, which
    /// every write of the executor's must match (see `Ending` and `Batch::fences`).
    pub epoch: i64,
    /// The checkpoint the run started from, set by its claim.
    pub base_checkpoint_id: Option<String>,
    /// When the retention deleted the run's logs, events and metrics, after it ended.
    pub logs_expired_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionRow {
    pub id: String,
    pub user_id: String,
    pub agent_id: String,
    /// Set once the session is past its retention.
    #[sqlx(default)]
    pub expired_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CheckpointRow {
    pub id: String,
    pub session_id: String,
    pub agent_id: String,
}

/// A checkpoint about to be recorded: its row and its manifest.
#[derive(Debug, Clone)]
pub struct NewCheckpoint {
    pub row: CheckpointRow,
    pub manifest: Manifest,
}

/// What a checkpoint holds: the working directory's files, with their modes, and its
/// folders and symbolic links.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    pub files: Vec<CheckpointFile>,
    pub entries: Vec<CheckpointEntry>,
}

/// A file of a checkpoint: its content's blob and its mode (the permission bits).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct CheckpointFile {
    #[sqlx(flatten)]
    pub file: FileRow,
    pub mode: i64,
}

/// A folder (with its mode) or a symbolic link (with its target, inside the working
/// directory) of a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct CheckpointEntry {
    #[sqlx(try_from = "String")]
    pub path: FilePath,
    pub mode: Option<i64>,
    pub target: Option<String>,
}

/// A hold on a blob by `holder` (a run id) until `until`.
#[derive(Debug, Clone)]
pub struct Pin {
    pub holder: String,
    pub until: DateTime<Utc>,
}

/// What a retention sweep removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expired {
    pub checkpoints: u64,
    /// The ended runs whose logs, events and metrics were deleted.
    pub logs: u64,
    /// The sessions now expired, whose working directories may go.
    pub sessions: Vec<String>,
}

/// How a run ended, and what its end records with it, in one transaction: its checkpoint,
/// its artifact's new version, and its last events and log entry.
#[derive(Debug, Clone)]
pub struct RunEnd {
    pub status: RunStatus,
    pub error: Option<String>,
    pub execution_time_ms: Option<i64>,
    pub completed_at: DateTime<Utc>,
    pub checkpoint: Option<NewCheckpoint>,
    pub artifact: Option<NewArtifact>,
}

/// The version a run made of its artifact, committed with its end.
#[derive(Debug, Clone)]
pub struct NewArtifact {
    pub storage_id: String,
    pub user_id: String,
    pub version: NewVersion,
}

impl RunEnd {
    /// What the run says last, after everything else it recorded: its error, its final
    /// status, a system log entry saying how it ended, and `complete`.
    pub fn last_words(&self) -> (Vec<EventData>, LogRow) {
        let mut events = Vec::new();
        if let Some(message) = &self.error {
            events.push(EventData::Error(types::RunErrorData { message: message.clone() }));
        }
        events.push(EventData::Status(types::RunStatusData { status: self.status }));
        events.push(EventData::Complete(types::RunCompleteData {
            status: self.status,
            execution_time_ms: self.execution_time_ms,
        }));
        let (level, message) = match &self.error {
            Some(error) => (LogLevel::Error, format!("Run {}: {error}", self.status)),
            None => (LogLevel::Info, format!("Run {}", self.status)),
        };
        let metadata = [("status".to_string(), Value::String(self.status.to_string()))];
        let log = LogRow {
            seq: 0,
            timestamp: self.completed_at,
            kind: LogType::System,
            level,
            message,
            metadata: Json(metadata.into_iter().collect()),
        };
        (events, log)
    }
}

/// The condition, checked in the transaction of a run's end, that makes the end the
/// run's one end: anything else (another end first, a new claim) refuses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// A run still pending: cancelled, or failed to start.
    Pending,
    /// A run running under this epoch: its executor's end, or a cancel's.
    Held(i64),
    /// A run running under this epoch whose lease ran out by the database's clock.
    Lapsed(i64),
}

/// A number the store assigns (a version number, an event id, a log sequence), as the
/// API's positive integer: they start at 1, so 0 never comes back.
pub fn positive(number: i64) -> std::num::NonZeroU64 {
    std::num::NonZeroU64::new(number.max(1) as u64).expect("at least 1")
}

/// One stored event of a run: its id, its `event` name and the JSON of its `data`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventRow {
    pub id: i64,
    pub event: String,
    pub data: String,
}

impl TryFrom<EventRow> for RunEvent {
    type Error = serde_json::Error;

    /// The stored data is read as the shape its event names, never by guessing.
    fn try_from(r: EventRow) -> std::result::Result<Self, serde_json::Error> {
        let mut data: Value = serde_json::from_str(&r.data)?;
        // Output events name their stream since API 1.1.0. Those stored before, or by an
        // older instance during a rolling upgrade, did not: they were the agent's standard
        // output as far as any client could tell, and read so.
        if let ("output", Some(fields)) = (r.event.as_str(), data.as_object_mut()) {
            fields.entry("stream").or_insert_with(|| Value::from("stdout"));
        }
        serde_json::from_value(serde_json::json!({ "id": r.id, "event": r.event, "data": data }))
    }
}

/// A run event before the recorder numbers it: what a `RunEvent` holds but its id.
#[derive(Debug, Clone, PartialEq)]
pub enum EventData {
    Status(types::RunStatusData),
    Output(types::RunOutputData),
    Error(types::RunErrorData),
    Complete(types::RunCompleteData),
}

impl EventData {
    /// The event with its id.
    pub fn numbered(self, id: i64) -> RunEvent {
        let id = positive(id);
        match self {
            EventData::Status(data) => RunEvent::Status { id, data },
            EventData::Output(data) => RunEvent::Output { id, data },
            EventData::Error(data) => RunEvent::Error { id, data },
            EventData::Complete(data) => RunEvent::Complete { id, data },
        }
    }
}

/// An event's id.
pub fn event_id(event: &RunEvent) -> i64 {
    match event {
        RunEvent::Status { id, .. }
        | RunEvent::Output { id, .. }
        | RunEvent::Error { id, .. }
        | RunEvent::Complete { id, .. }
        | RunEvent::Heartbeat { id, .. } => id.get() as i64,
    }
}

/// An event as a store row: its id, name and data, as its SSE lines say them.
pub fn event_row(event: &RunEvent) -> EventRow {
    let lines = vm0_api::EventLines::of(event);
    EventRow { id: lines.id as i64, event: lines.event, data: lines.data }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LogRow {
    pub seq: i64,
    pub timestamp: DateTime<Utc>,
    #[sqlx(rename = "type", try_from = "String")]
    pub kind: LogType,
    #[sqlx(try_from = "String")]
    pub level: LogLevel,
    pub message: String,
    pub metadata: Json<Map<String, Value>>,
}

impl LogRow {
    /// The metadata key of an agent entry that names its output stream.
    pub const STREAM: &'static str = "stream";

    /// The stream an agent entry's line was written to; `None` for other entries.
    pub fn stream(&self) -> Option<types::OutputStream> {
        let stream = self.metadata.get(Self::STREAM).and_then(Value::as_str);
        stream.filter(|_| self.kind == LogType::Agent).and_then(|s| s.parse().ok())
    }
}

#[derive(Debug, Clone)]
pub struct LogQuery {
    pub kind: Option<LogType>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// Only entries with a greater sequence number.
    pub after_sequence: i64,
    pub descending: bool,
}

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
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
    pub status: Option<RunStatus>,
    pub since: Option<DateTime<Utc>>,
}

/// What a run recorded since the last write, numbered already: written in one
/// transaction, so a run of many lines costs a few commits rather than one a line.
#[derive(Debug, Default)]
pub struct Batch {
    /// Run id and event.
    pub events: Vec<(String, EventRow)>,
    /// Run id and entry.
    pub logs: Vec<(String, LogRow)>,
    /// Run id, sequence number and sample.
    pub metrics: Vec<(String, i64, MetricRow)>,
    /// Each run the batch writes for, with the epoch its executor holds it under: the
    /// rows of a run that is no longer running under that epoch are refused.
    pub fences: Vec<(String, i64)>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.events.len() + self.logs.len() + self.metrics.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The batch without the rows of the runs `refused`.
    pub fn without(&self, refused: &[String]) -> Batch {
        let kept = |run: &String| !refused.contains(run);
        Batch {
            events: self.events.iter().filter(|(run, _)| kept(run)).cloned().collect(),
            logs: self.logs.iter().filter(|(run, _)| kept(run)).cloned().collect(),
            metrics: self.metrics.iter().filter(|(run, ..)| kept(run)).cloned().collect(),
            fences: self.fences.iter().filter(|(run, _)| kept(run)).cloned().collect(),
        }
    }
}

/// An instance's hold on the runs it executes: they are its own for `length` after each
/// claim or renewal, by the database's clock, and then any instance may end them as lost.
#[derive(Debug, Clone)]
pub struct Lease {
    pub executor: String,
    pub length: std::time::Duration,
}

/// The last event id, log sequence number and metric sequence number of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub event: i64,
    pub log: i64,
    pub metric: i64,
}

/// What a token's rate window holds, after a reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reserved {
    /// The requests counted in it, on every instance, this reservation's among them.
    pub used: i64,
    /// When it began, in milliseconds of the database's clock.
    pub window_start_ms: i64,
    /// The database's clock at the reservation, in milliseconds.
    pub now_ms: i64,
}

/// Users, their tokens, and the server's settings.
pub trait UserStore {
    /// The server's setting `key`, set to `initial` when it has none yet; of instances
    /// setting it at once, the first wins and all read its value.
    fn setting(&self, key: &str, initial: &[u8]) -> impl Future<Output = Result<Vec<u8>>> + Send;
    /// Creates the user `name` only when there is no user at all; `None` when there is
    /// one. Instances starting together on an empty database create one between them.
    fn create_first_user(&self, name: &str) -> impl Future<Output = Result<Option<User>>> + Send;
    /// The user called `name`, created if new.
    fn ensure_user(&self, name: &str) -> impl Future<Output = Result<User>> + Send;
    fn insert_token(&self, token: &TokenRow) -> impl Future<Output = Result<()>> + Send;
    /// What authentication needs of the token with this hash at `now`, and no more: it is
    /// read on every request.
    fn token_by_hash(
        &self,
        hash: &[u8],
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<TokenAuth>>> + Send;
    fn touch_token(&self, id: &str, at: DateTime<Utc>) -> impl Future<Output = Result<()>> + Send;
    /// Whether token `id` is live at `now`: not revoked, not expired.
    fn token_live(&self, id: &str, now: DateTime<Utc>)
        -> impl Future<Output = Result<bool>> + Send;
    /// Live (unrevoked) tokens only, as `get_token`.
    fn list_tokens(
        &self,
        user_id: &str,
        page: &Page,
    ) -> impl Future<Output = Result<Vec<TokenRow>>> + Send;
    fn get_token(
        &self,
        user_id: &str,
        id: &str,
    ) -> impl Future<Output = Result<Option<TokenRow>>> + Send;
    /// Adds `count` requests to the token with this hash (hex) in its rate window of
    /// `window_ms` that holds the database's clock now: what the window holds with them.
    fn reserve_requests(
        &self,
        token_hash: &str,
        window_ms: i64,
        count: u32,
    ) -> impl Future<Output = Result<Reserved>> + Send;
    /// Deletes the rate windows that began before `before_ms`.
    fn forget_rate_windows(&self, before_ms: i64) -> impl Future<Output = Result<u64>> + Send;
    /// Revokes a live token; false when there is no such live token.
    fn revoke_token(
        &self,
        user_id: &str,
        id: &str,
        at: DateTime<Utc>,
        condition: Condition<'_, TokenRow>,
    ) -> impl Future<Output = Result<bool>> + Send;
}

/// Agents and their versions.
pub trait AgentStore {
    fn create_agent(
        &self,
        user_id: &str,
        name: &str,
        config: &Map<String, Value>,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<AgentRow>> + Send;
    fn list_agents(
        &self,
        user_id: &str,
        name: Option<&str>,
        page: &Page,
    ) -> impl Future<Output = Result<Vec<AgentRow>>> + Send;
    fn get_agent(
        &self,
        user_id: &str,
        id: &str,
    ) -> impl Future<Output = Result<Option<AgentRow>>> + Send;
    fn get_agent_by_name(
        &self,
        user_id: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<AgentRow>>> + Send;
    /// Makes `config` the agent's configuration, with a new version only when it differs.
    fn update_agent(
        &self,
        user_id: &str,
        id: &str,
        config: &Map<String, Value>,
        at: DateTime<Utc>,
        condition: Condition<'_, AgentRow>,
    ) -> impl Future<Output = Result<Option<AgentRow>>> + Send;
    fn delete_agent(
        &self,
        user_id: &str,
        id: &str,
        condition: Condition<'_, AgentRow>,
    ) -> impl Future<Output = Result<bool>> + Send;
    /// Newest first; `page.after` is a version number.
    fn list_agent_versions(
        &self,
        agent_id: &str,
        page: &Page,
    ) -> impl Future<Output = Result<Vec<AgentVersionRow>>> + Send;
    fn get_agent_version(
        &self,
        agent_id: &str,
        version_id: &str,
    ) -> impl Future<Output = Result<Option<AgentVersionRow>>> + Send;
    fn get_agent_version_by_number(
        &self,
        agent_id: &str,
        number: i64,
    ) -> impl Future<Output = Result<Option<AgentVersionRow>>> + Send;
}

/// Volumes and artifacts, their versions and files, upload sessions and blobs.
pub trait StorageStore {
    fn create_storage(
        &self,
        kind: Kind,
        user_id: &str,
        name: &str,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<StorageRow>> + Send;
    fn list_storages(
        &self,
        kind: Kind,
        user_id: &str,
        page: &Page,
    ) -> impl Future<Output = Result<Vec<StorageRow>>> + Send;
    fn get_storage(
        &self,
        kind: Kind,
        user_id: &str,
        id: &str,
    ) -> impl Future<Output = Result<Option<StorageRow>>> + Send;
    fn get_storage_by_name(
        &self,
        kind: Kind,
        user_id: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<StorageRow>>> + Send;
    fn delete_storage(
        &self,
        kind: Kind,
        user_id: &str,
        id: &str,
        condition: Condition<'_, StorageRow>,
    ) -> impl Future<Output = Result<bool>> + Send;
    /// Newest first; `page.after` is a version's sequence number.
    fn list_versions(
        &self,
        storage_id: &str,
        page: &Page,
    ) -> impl Future<Output = Result<Vec<VersionRow>>> + Send;
    fn get_version(
        &self,
        storage_id: &str,
        version_id: &str,
    ) -> impl Future<Output = Result<Option<VersionRow>>> + Send;
    fn version_files(&self, version_seq: i64) -> impl Future<Output = Result<Vec<FileRow>>> + Send;
    fn create_upload_session(
        &self,
        session: &UploadSession,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<()>> + Send;
    fn upload_session(
        &self,
        storage_id: &str,
        id: &str,
    ) -> impl Future<Output = Result<Option<UploadSession>>> + Send;
    /// The version that the upload session `id` of the storage made when it committed,
    /// for a day after.
    fn committed_upload(
        &self,
        storage_id: &str,
        id: &str,
    ) -> impl Future<Output = Result<Option<VersionRow>>> + Send;
    /// Lists a complete blob, pinned by `pin`'s holder when given: a pinned blob is left
    /// alone by the collector, referenced or not, until its holder ends (a run's files,
    /// between their storing and their version's or checkpoint's commit) or the pin's
    /// time runs out.
    /// `owner` holds the blob from then on.
    /// Ends the writer's reservation `reserved` (see `reserve_blob`).
    fn record_blob(
        &self,
        hash: &str,
        size: i64,
        at: DateTime<Utc>,
        owner: &str,
        pin: Option<&Pin>,
        reserved: &str,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Reserves blob `hash` for a writer about to put its bytes, by a pin of `holder`
    /// until `until`, so that no collector forgets it meanwhile; false while a collector
    /// is removing it (a removal that began before `stale` was abandoned, and is taken
    /// over; the age is judged by the database's clock). Reservations and forgets of one
    /// blob are serialized, on every instance.
    fn reserve_blob(
        &self,
        hash: &str,
        holder: &str,
        until: DateTime<Utc>,
        stale: std::time::Duration,
    ) -> impl Future<Output = Result<bool>> + Send;
    /// Takes over the removals that began longer than `stale` ago by the database's clock
    /// and never ended (their collector died), each for one caller only: their hashes.
    fn abandoned_removals(
        &self,
        stale: std::time::Duration,
    ) -> impl Future<Output = Result<Vec<String>>> + Send;
    /// Ends the removal of blob `hash`: its writers may go on.
    fn removed_blob(&self, hash: &str) -> impl Future<Output = Result<()>> + Send;
    /// In one transaction: checks that `user_id` holds every file's blob, complete with
    /// its size (`InvalidState` naming the first that is not, in the same words for a blob
    /// that does not exist and one another user holds), then the version (or the existing
    /// one with the same id), its files, the storage's current version, and the end of the
    /// upload session, which is kept as having made the version. A commit of a session that
    /// already committed answers the version it made.
    fn commit_version(
        &self,
        storage_id: &str,
        user_id: &str,
        session_id: &str,
        version: &NewVersion,
        condition: Condition<'_, StorageRow>,
    ) -> impl Future<Output = Result<VersionRow>> + Send;
    /// Ends the upload sessions and pins expired at `now`, then lists the blobs that no
    /// version, no checkpoint, no open upload session and no pin refers to.
    fn unreferenced_blobs(
        &self,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<String>>> + Send;
    /// Forgets a blob if nothing refers to it or pins it at `now`, and records its removal
    /// as begun; true when its file may go, after which `removed_blob` ends the removal.
    fn forget_blob(
        &self,
        hash: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool>> + Send;
}

/// Runs, their sessions and checkpoints, and what they record.
pub trait RunStore {
    /// Stores a new run, with its new session and its new artifact when it makes them, in
    /// one transaction: a run that cannot be stored leaves nothing behind. A run that
    /// continues an expired session is `InvalidState`.
    /// `first` holds the run's first records, stored with it so that they come before
    /// anything its executor (which may be another instance) records. With a
    /// `pending_cap` (not 0), a user who has that many runs pending already gets
    /// `TooMany`, counted under a lock on the user's row so that requests at once on
    /// several instances cannot pass it together.
    fn create_run(
        &self,
        run: &RunRow,
        new_session: Option<&SessionRow>,
        new_artifact: Option<&StorageRow>,
        first: &Batch,
        pending_cap: u32,
    ) -> impl Future<Output = Result<()>> + Send;
    fn get_run(
        &self,
        user_id: &str,
        id: &str,
    ) -> impl Future<Output = Result<Option<RunRow>>> + Send;
    /// Newest first, by id.
    fn list_runs(
        &self,
        user_id: &str,
        filter: &RunFilter,
        page: &Page,
    ) -> impl Future<Output = Result<Vec<RunRow>>> + Send;
    fn get_session(
        &self,
        user_id: &str,
        id: &str,
    ) -> impl Future<Output = Result<Option<SessionRow>>> + Send;
    fn get_checkpoint(
        &self,
        user_id: &str,
        id: &str,
    ) -> impl Future<Output = Result<Option<CheckpointRow>>> + Send;
    /// The run to start next, for the scheduler: of the users with a pending run whose
    /// session has no run executing (and, with `running_cap`, fewer runs executing than
    /// it), the one with the fewest runs executing on every instance, then the oldest
    /// such run; that user's oldest such run. So a user who floods the queue waits behind
    /// the others, not they behind them.
    fn next_pending_run(
        &self,
        running_cap: Option<i64>,
    ) -> impl Future<Output = Result<Option<RunRow>>> + Send;
    /// pending → running under `lease`, with a new epoch and the checkpoint it starts from
    /// (the one it names, or its session's head): the claim of one instance, which wins
    /// over any other's; the run as claimed, or `None` when it was no longer pending,
    /// another run of its session started meanwhile, or (with `running_cap`) its user has
    /// that many runs executing, on every instance: the cap is checked in the claim.
    fn start_run(
        &self,
        id: &str,
        at: DateTime<Utc>,
        lease: &Lease,
        running_cap: Option<i64>,
    ) -> impl Future<Output = Result<Option<RunRow>>> + Send;
    /// Extends the lease of the runs `held` (id and epoch) that `lease.executor` is
    /// running by `lease.length` from the database's now; the ids it extended.
    fn renew_leases(
        &self,
        lease: &Lease,
        held: &[(String, i64)],
    ) -> impl Future<Output = Result<Vec<String>>> + Send;
    /// Of the runs `held` (id and epoch), those their executor must stop: cancelled from
    /// another instance, ended by another, or claimed again.
    fn runs_to_stop(
        &self,
        held: &[(String, i64)],
    ) -> impl Future<Output = Result<Vec<String>>> + Send;
    /// Asks the executor of a running run to cancel it; false when it is not running.
    fn request_cancel(&self, id: &str) -> impl Future<Output = Result<bool>> + Send;
    /// The running runs (id and epoch) left by `executor` (a previous process of this
    /// instance) or, when `None`, those whose lease ran out by the database's clock.
    fn lost_runs(
        &self,
        executor: Option<&str>,
    ) -> impl Future<Output = Result<Vec<(String, i64)>>> + Send;
    /// Ends run `id` if `ending` holds, in one transaction with its checkpoint (the head of
    /// its session now), its artifact's version, its last words (`RunEnd::last_words`),
    /// numbered after what it recorded, and the release of its blob pins: the events
    /// stored, or `None` when `ending` did not hold. An artifact deleted meanwhile is
    /// `InvalidState`, and nothing is stored.
    fn end_run(
        &self,
        id: &str,
        ending: Ending,
        end: &RunEnd,
    ) -> impl Future<Output = Result<Option<Vec<RunEvent>>>> + Send;
    /// A checkpoint's manifest, its paths in order.
    fn checkpoint_manifest(
        &self,
        checkpoint_id: &str,
    ) -> impl Future<Output = Result<Manifest>> + Send;
    /// Expires the sessions with no run created or ended since `before` and none still
    /// pending or running, then deletes the checkpoints recorded before `before` but the
    /// heads of live sessions, then the logs, events and metrics of the runs that ended
    /// before `before` (the runs stay, marked with `now`).
    fn expire(
        &self,
        before: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Expired>> + Send;
    /// Where a run's numbering of events, logs and metrics stands.
    fn counters(&self, run_id: &str) -> impl Future<Output = Result<Counters>> + Send;
    /// Writes a batch of events, logs and metrics in one transaction, but the rows of the
    /// runs its fences refuse: the ids of those.
    fn append(&self, batch: &Batch) -> impl Future<Output = Result<Vec<String>>> + Send;
    /// Events after `after`, oldest first, at most `limit`.
    fn events_after(
        &self,
        run_id: &str,
        after: i64,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<EventRow>>> + Send;
    /// `page.after` is a log's sequence number, in the query's order.
    fn list_logs(
        &self,
        run_id: &str,
        query: &LogQuery,
        page: &Page,
    ) -> impl Future<Output = Result<Vec<LogRow>>> + Send;
    fn metrics(&self, run_id: &str) -> impl Future<Output = Result<Vec<MetricRow>>> + Send;
}

/// A user's Idempotency-Key as the store holds it: the fingerprint of the request that took
/// it, and its answer once it has one (its status, kept headers as JSON, sealed body).
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct KeyRow {
    pub fingerprint: String,
    pub status: Option<i64>,
    pub headers: Option<String>,
    pub body: Option<String>,
}

/// The answer of a key's request, to keep.
#[derive(Debug, Clone, PartialEq)]
pub struct KeptAnswer {
    pub user_id: String,
    pub key: String,
    pub fingerprint: String,
    pub status: i64,
    /// The kept headers, as JSON.
    pub headers: String,
    /// The body, sealed.
    pub body: String,
}

/// Idempotency-Keys, per user, shared by every instance on the database.
pub trait KeyStore {
    /// Takes `key` for a request of `fingerprint`, held for `lock_ms` while it executes,
    /// unless another request holds it (the row of that request, then). A key older than
    /// `lifetime_ms`, or whose lock has passed without an answer, is free again.
    fn take_key(
        &self,
        user_id: &str,
        key: &str,
        fingerprint: &str,
        lock_ms: i64,
        lifetime_ms: i64,
    ) -> impl Future<Output = Result<Option<KeyRow>>> + Send;
    /// The answer kept for `key`, unless older than `lifetime_ms`: for an instance alone on
    /// its database, which takes keys in its memory.
    fn answered_key(
        &self,
        user_id: &str,
        key: &str,
        lifetime_ms: i64,
    ) -> impl Future<Output = Result<Option<KeyRow>>> + Send;
    /// Keeps each of `answers` in one transaction: over the row its request took, or a new
    /// one (an instance alone takes keys in memory), or one older than `lifetime_ms`.
    fn keep_answers(
        &self,
        answers: &[KeptAnswer],
        lifetime_ms: i64,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Frees the key of a request of `fingerprint` that keeps no answer.
    fn free_key(
        &self,
        user_id: &str,
        key: &str,
        fingerprint: &str,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Deletes the keys older than `lifetime_ms`, and says how many.
    fn expire_keys(&self, lifetime_ms: i64) -> impl Future<Output = Result<u64>> + Send;
}

/// What operating the database needs, beside the resources.
pub trait DatabaseStore {
    /// Whether the database can serve requests within `within` (for readiness).
    fn ping(&self, within: std::time::Duration) -> impl Future<Output = Result<()>> + Send;
    /// Runs by status, the oldest pending run's age and the pool's use (for metrics).
    fn reading(&self) -> impl Future<Output = Result<DatabaseReading>> + Send;
    /// What the instances sharing the database tell each other as they commit (see
    /// [`Signal`]), on a connection of its own; `None` where no other instance can share
    /// it (SQLite).
    fn listen(&self) -> impl Future<Output = Result<Option<Listener>>> + Send;
}

/// What one instance tells the others through the database, each sent in the transaction
/// that makes it true, so that it arrives once that commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// Run `0` has new events.
    Events(String),
    /// Run `0` was asked to stop (cancelled), or ended: its executor should look.
    Stop(String),
    /// The connection was lost and made again: signals sent meanwhile are lost, and every
    /// waiter should look for itself.
    Missed,
}

/// The channels of the signals, and their payload: the run's id.
pub(crate) const EVENTS_CHANNEL: &str = "vm0_run_events";
pub(crate) const STOP_CHANNEL: &str = "vm0_run_stop";

/// The signals as they arrive, from PostgreSQL's LISTEN.
pub struct Listener(sqlx::postgres::PgListener);

impl Listener {
    pub(crate) async fn start(pool: &sqlx::PgPool) -> Result<Listener> {
        let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
        listener.listen_all([EVENTS_CHANNEL, STOP_CHANNEL]).await?;
        Ok(Listener(listener))
    }

    /// The next signal; [`Signal::Missed`] after the connection was lost (it is made
    /// again at the next call), an error when it cannot be made.
    pub async fn next(&mut self) -> Result<Signal> {
        let Some(notification) = self.0.try_recv().await? else { return Ok(Signal::Missed) };
        let run = notification.payload().to_string();
        Ok(match notification.channel() {
            EVENTS_CHANNEL => Signal::Events(run),
            _ => Signal::Stop(run),
        })
    }
}

/// Everything the server keeps. Methods that take a `user_id` only ever see that user's
/// resources: another user's id reads as missing.
pub trait Store:
    UserStore
    + AgentStore
    + StorageStore
    + RunStore
    + KeyStore
    + DatabaseStore
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<
        T: UserStore
            + AgentStore
            + StorageStore
            + RunStore
            + KeyStore
            + DatabaseStore
            + Clone
            + Send
            + Sync
            + 'static,
    > Store for T
{
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_output_event_stored_without_its_stream_reads_as_standard_output() {
        let row = EventRow { id: 3, event: "output".into(), data: r#"{"content":"hi"}"#.into() };
        let RunEvent::Output { data, .. } = RunEvent::try_from(row).unwrap() else {
            panic!("an output event")
        };
        assert_eq!((data.content.as_str(), data.stream), ("hi", types::OutputStream::Stdout));
        // A stored stream is kept, and no other event gains one.
        let row = EventRow {
            id: 4,
            event: "output".into(),
            data: r#"{"content":"oops","stream":"stderr"}"#.into(),
        };
        let RunEvent::Output { data, .. } = RunEvent::try_from(row).unwrap() else {
            panic!("an output event")
        };
        assert_eq!(data.stream, types::OutputStream::Stderr);
        let row =
            EventRow { id: 5, event: "status".into(), data: r#"{"status":"running"}"#.into() };
        assert!(matches!(RunEvent::try_from(row).unwrap(), RunEvent::Status { .. }));
    }
}
