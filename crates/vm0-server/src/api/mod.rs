//! The reference implementation of `Vm0Api`: every operation over a `Store`, the blob
//! store and the runs engine. The router has already authenticated and validated
//! everything that reaches these methods; what is left is ownership, existence and state.
//! `storage.rs` serves volumes and artifacts alike, `runs.rs` the runs, `convert.rs`
//! turns rows into the generated types.

mod convert;
mod keys;
mod limits;
mod runs;
mod storage;
mod tokens_held;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use chrono::{Duration, Utc};
use vm0_api::*;
use vm0_types as types;

use crate::blobs::{BlobError, Blobs};
use crate::cursor::Scope;
use crate::metrics::Metrics;
use crate::runs::config::ConfigError;
use crate::runs::{Engine, RunError};
use crate::store::{
    self, AgentRow, Kind, Page, StorageRow, Store, StoreError, TokenRow, UserStore,
};
use crate::{ids, secrets};

/// Who a request acts for.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user_id: String,
    pub token_id: String,
}

/// The server's state: the store, the blobs, the signing key of cursors, and the runs
/// engine.
pub struct App<S: Store> {
    pub store: S,
    pub blobs: Arc<Blobs>,
    pub key: Vec<u8>,
    pub engine: Arc<Engine<S>>,
    pub metrics: Arc<Metrics>,
    /// The tokens whose `lastUsedAt` this process wrote in the current second, so that a
    /// busy token costs one write a second, not one for every request that read the old
    /// value meanwhile; cleared as the second turns, so it holds one second's tokens.
    touched: Mutex<(i64, HashSet<String>)>,
    /// The Idempotency-Keys this instance holds, and the writer of their answers.
    keys: keys::Keys,
    /// Each token's rate limit; none when requests are not limited.
    limiter: Option<limits::RateLimiter<S>>,
    /// The tokens that hold event streams open, looked up until revoked or expired.
    tokens_held: Arc<tokens_held::TokensHeld<S>>,
}

impl<S: Store> App<S> {
    /// The state over its parts; `alone` when this instance is the only one on its
    /// database, which lets it take Idempotency-Keys and count rate limits in memory (see
    /// `keys.rs`, `limits.rs`); `rate_limit` the requests a token may make a minute (0
    /// for no limit).
    pub fn new(
        store: S,
        blobs: Arc<Blobs>,
        key: Vec<u8>,
        engine: Arc<Engine<S>>,
        metrics: Arc<Metrics>,
        (alone, rate_limit): (bool, u32),
    ) -> App<S> {
        let lifetime = engine.key_lifetime().as_millis() as i64;
        let keys = keys::Keys::new(store.clone(), alone, lifetime);
        let touched = Mutex::new((0, HashSet::new()));
        let shared = (!alone).then(|| store.clone());
        let limiter = (rate_limit > 0).then(|| limits::RateLimiter::new(rate_limit, shared));
        let tokens_held = tokens_held::TokensHeld::new(store.clone());
        App { store, blobs, key, engine, metrics, touched, keys, limiter, tokens_held }
    }

    /// Whether `lastUsedAt` of `token_id` is due a write at `now` (to the second), marking
    /// it written if so.
    fn touch_due(&self, token_id: &str, now: i64) -> bool {
        let mut touched = self.touched.lock().expect("not poisoned");
        let (second, tokens) = &mut *touched;
        if *second != now {
            *second = now;
            tokens.clear();
        }
        tokens.insert(token_id.to_string())
    }
}

/// `App` behind an `Arc`, as the router and the storage routes share it.
pub struct Api<S: Store>(pub Arc<App<S>>);

impl<S: Store> Clone for Api<S> {
    fn clone(&self) -> Self {
        Api(self.0.clone())
    }
}

/// An agent's tag: its current version, which every update that changes it replaces with
/// a new one (and nothing else of it changes).
fn agent_tag(row: &AgentRow) -> ETag {
    ETag::of_revision(&row.current_version_id)
}

/// A volume's or artifact's tag. Its current version alone would not do: versions are
/// named by their content, so committing A, then B, then A again would give the first
/// tag back with another `updatedAt`.
pub(super) fn storage_tag(row: &StorageRow) -> ETag {
    ETag::of_body(&(&row.id, &row.current_version_id, row.updated_at))
}

/// A token's tag: its id. What a write acts on never changes (`lastUsedAt` does, as the
/// token is used, and a revocation by the token itself must not fail for it).
fn token_tag(row: &TokenRow) -> ETag {
    ETag::of_revision(&row.id)
}

/// What the store checks, for a conditional write: that the row's tag (by `tag`) meets
/// `if_match`. None without one; `.as_deref()` is the store's [`store::Condition`].
fn holding<'a, R: 'a>(if_match: Option<&'a IfMatch>, tag: fn(&R) -> ETag) -> Option<Holds<'a, R>> {
    if_match
        .map(move |condition| Box::new(move |row: &R| condition.matches(&tag(row))) as Holds<'a, R>)
}

/// A condition on a row, owned: see [`holding`].
type Holds<'a, R> = Box<dyn Fn(&R) -> bool + Send + Sync + 'a>;

/// A store error of a conditional write on a `what` ("agent"): its precondition failed,
/// or the error as every other.
fn changed(what: &str, error: StoreError) -> ApiError {
    match error {
        StoreError::Changed => ApiError::precondition_failed(what),
        other => other.into(),
    }
}

/// Every status a store error can have, decided here and nowhere else.
impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::InvalidState(message) => ApiError::invalid_state(message),
            StoreError::Changed => ApiError::precondition_failed("resource"),
            other => ApiError::internal(other),
        }
    }
}

/// Every status a blob store error can have, decided here and nowhere else.
impl From<BlobError> for ApiError {
    fn from(error: BlobError) -> Self {
        match error {
            BlobError::BadUrl { param, message } => ApiError::invalid_parameter(param, message),
            BlobError::BadUpload(message) => ApiError::invalid_request(message),
            BlobError::Mismatch(message) => ApiError::invalid_state(message),
            BlobError::Store(error) => error.into(),
            other => ApiError::internal(other),
        }
    }
}

/// Every status an agent configuration's error can have, decided here and nowhere else.
impl From<ConfigError> for ApiError {
    fn from(error: ConfigError) -> Self {
        match error {
            ConfigError::Schema(answer) => answer,
            ConfigError::Invalid { param, message } => ApiError::invalid_parameter(param, message),
        }
    }
}

/// The seconds a user with too many runs waiting is told to wait: about what a short run
/// takes, since any run of theirs that starts makes room.
const PENDING_RETRY_AFTER_SECS: u64 = 10;

/// Every status an error of the engine's front door can have, decided here and nowhere
/// else.
impl From<RunError> for ApiError {
    fn from(error: RunError) -> Self {
        // The field at fault, where the engine knew it.
        let at = |error: ApiError, param: Option<String>| match param {
            Some(param) => error.with_param(param),
            None => error,
        };
        match error {
            RunError::NotFound { resource, id, param } => {
                at(ApiError::not_found(resource, &id), param)
            }
            RunError::MissingParameter { param } => ApiError::missing_parameter(param),
            RunError::InvalidParameter { param, message } => {
                ApiError::invalid_parameter(param, message)
            }
            RunError::InvalidState { message, param } => {
                at(ApiError::invalid_state(message), param)
            }
            RunError::TooManyPending { cap } => {
                ApiError::too_many_pending_runs(cap, PENDING_RETRY_AFTER_SECS)
            }
            RunError::Store(error) => error.into(),
        }
    }
}

/// One list being paged: the cursor's scope and the page size asked for.
struct Listing<'a> {
    scope: Scope<'a>,
    limit: i64,
}

impl Listing<'_> {
    /// The store's page: one item more than asked, to know whether there are more.
    fn page(&self, cursor: Option<&str>) -> Result<Page, ApiError> {
        Ok(Page { limit: self.limit + 1, after: cursor.map(|c| self.scope.decode(c)).transpose()? })
    }

    /// Cuts `rows` to the limit, converts them, and builds the pagination object with a
    /// cursor after the last row kept.
    fn finish<R, T: From<R>>(
        &self,
        mut rows: Vec<R>,
        key: impl Fn(&R) -> String,
    ) -> (Vec<T>, types::Pagination) {
        let has_more = rows.len() as i64 > self.limit;
        rows.truncate(self.limit as usize);
        let next_cursor =
            if has_more { rows.last().map(|r| self.scope.encode(&key(r))) } else { None };
        (rows.into_iter().map(T::from).collect(), types::Pagination { has_more, next_cursor })
    }
}

impl<S: Store> App<S> {
    /// The list `name` of `parts` (see `Scope::new`), paged by `limit`.
    fn listing(&self, name: &str, parts: &[&str], limit: i64) -> Listing<'_> {
        Listing { scope: Scope::new(&self.key, name, parts), limit }
    }

    /// Returns once every Idempotency-Key answer given so far is kept: for a drain.
    pub async fn flush_keys(&self) {
        self.keys.flush().await;
    }

    async fn agent(&self, p: &Principal, id: &str) -> Result<store::AgentRow, ApiError> {
        self.store.get_agent(&p.user_id, id).await?.ok_or_else(|| ApiError::not_found("agent", id))
    }
}

impl<S: Store> Vm0Api for Api<S> {
    type Principal = Principal;

    async fn authenticate(&self, token: &str) -> Result<Principal, ApiError> {
        // The lookup by the token's SHA-256 is the comparison: an index search on the hash
        // of a 256-bit random value tells a guesser nothing about any stored token.
        let now = Utc::now();
        let Some(row) = self.0.store.token_by_hash(&secrets::token_hash(token), now).await? else {
            return Err(ApiError::unauthorized("Invalid API key"));
        };
        if row.revoked {
            return Err(ApiError::unauthorized("This API key has been revoked"));
        }
        if row.expired {
            return Err(ApiError::unauthorized("This API key has expired"));
        }
        // One write a second at most per token: lastUsedAt is to the second anyway.
        if self.0.touch_due(&row.id, now.timestamp()) {
            self.0.store.touch_token(&row.id, ids::now()).await?;
        }
        Ok(Principal { user_id: row.user_id, token_id: row.id })
    }

    fn user_id(principal: &Principal) -> Option<String> {
        Some(principal.user_id.clone())
    }

    fn keys(&self) -> Option<&dyn vm0_api::idempotency::KeyStore> {
        Some(&*self.0)
    }

    fn limiter(&self) -> Option<&dyn vm0_api::limits::Limiter> {
        self.0.limiter.as_ref().map(|limiter| limiter as &dyn vm0_api::limits::Limiter)
    }

    async fn list_agents(
        &self,
        p: &Principal,
        params: ListAgentsParams,
    ) -> Result<types::AgentList, ApiError> {
        let app = &self.0;
        let name = params.name.as_ref().map(|n| n.as_str());
        let listing = app.listing("agents", &[&p.user_id, name.unwrap_or("")], params.limit);
        let rows = app
            .store
            .list_agents(&p.user_id, name, &listing.page(params.cursor.as_deref())?)
            .await?;
        let (data, pagination) = listing.finish(rows, |r| r.id.clone());
        Ok(types::AgentList { data, pagination })
    }

    async fn create_agent(
        &self,
        p: &Principal,
        body: types::CreateAgentRequest,
    ) -> Result<types::Agent, ApiError> {
        crate::runs::config::check(&body.config.0, self.0.engine.caps())?;
        match self.0.store.create_agent(&p.user_id, &body.name, &body.config.0, ids::now()).await {
            Ok(row) => Ok(row.into()),
            Err(StoreError::Conflict) => Err(ApiError::already_exists("agent", &body.name)),
            Err(other) => Err(other.into()),
        }
    }

    async fn get_agent(&self, p: &Principal, id: String) -> Result<Tagged<types::Agent>, ApiError> {
        let row = self.0.agent(p, &id).await?;
        Ok(Tagged { etag: agent_tag(&row), body: row.into() })
    }

    async fn update_agent(
        &self,
        p: &Principal,
        id: String,
        params: UpdateAgentParams,
        body: types::UpdateAgentRequest,
    ) -> Result<Tagged<types::Agent>, ApiError> {
        crate::runs::config::check(&body.config.0, self.0.engine.caps())?;
        let holds = holding(params.if_match.as_ref(), agent_tag);
        let row = self
            .0
            .store
            .update_agent(&p.user_id, &id, &body.config.0, ids::now(), holds.as_deref())
            .await
            .map_err(|e| changed("agent", e))?
            .ok_or_else(|| ApiError::not_found("agent", &id))?;
        Ok(Tagged { etag: agent_tag(&row), body: row.into() })
    }

    async fn delete_agent(
        &self,
        p: &Principal,
        id: String,
        params: DeleteAgentParams,
    ) -> Result<(), ApiError> {
        let holds = holding(params.if_match.as_ref(), agent_tag);
        match self.0.store.delete_agent(&p.user_id, &id, holds.as_deref()).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(ApiError::not_found("agent", &id)),
            Err(e) => Err(changed("agent", e)),
        }
    }

    async fn list_agent_versions(
        &self,
        p: &Principal,
        id: String,
        params: ListAgentVersionsParams,
    ) -> Result<types::AgentVersionList, ApiError> {
        let app = &self.0;
        let agent = app.agent(p, &id).await?;
        let listing = app.listing("agent-versions", &[&agent.id], params.limit);
        let rows = app
            .store
            .list_agent_versions(&agent.id, &listing.page(params.cursor.as_deref())?)
            .await?;
        let (data, pagination) = listing.finish(rows, |r| r.version_number.to_string());
        Ok(types::AgentVersionList { data, pagination })
    }

    async fn get_agent_version(
        &self,
        p: &Principal,
        id: String,
        version_id: String,
    ) -> Result<Tagged<types::AgentVersionDetail>, ApiError> {
        let agent = self.0.agent(p, &id).await?;
        let row = self.0.store.get_agent_version(&agent.id, &version_id).await?;
        let row = row.ok_or_else(|| ApiError::not_found("agent version", &version_id))?;
        // A version never changes.
        Ok(Tagged { etag: ETag::of_revision(&row.id), body: row.into() })
    }

    async fn list_runs(
        &self,
        p: &Principal,
        params: ListRunsParams,
    ) -> Result<types::RunList, ApiError> {
        self.0.list_runs(p, params).await
    }

    async fn create_run(
        &self,
        p: &Principal,
        body: types::CreateRunRequest,
    ) -> Result<types::RunDetail, ApiError> {
        self.0.create_run(p, body).await
    }

    async fn get_run(
        &self,
        p: &Principal,
        id: String,
    ) -> Result<Tagged<types::RunDetail>, ApiError> {
        // A run changes in many ways as it goes (its status, times, output), and no write
        // of the API is conditional on it: its tag is its whole representation's.
        let body: types::RunDetail = (&self.0.run_row(p, &id).await?).into();
        Ok(Tagged { etag: ETag::of_body(&body), body })
    }

    async fn cancel_run(&self, p: &Principal, id: String) -> Result<types::RunDetail, ApiError> {
        self.0.cancel_run(p, &id).await
    }

    async fn stream_run_events(
        &self,
        p: &Principal,
        id: String,
        params: StreamRunEventsParams,
    ) -> Result<EventStream, ApiError> {
        self.0.run_events(p, &id, params).await
    }

    async fn list_run_logs(
        &self,
        p: &Principal,
        id: String,
        params: ListRunLogsParams,
    ) -> Result<types::RunLogList, ApiError> {
        self.0.run_logs(p, &id, params).await
    }

    async fn get_run_metrics(
        &self,
        p: &Principal,
        id: String,
    ) -> Result<types::RunMetrics, ApiError> {
        self.0.run_metrics(p, &id).await
    }

    async fn list_volumes(
        &self,
        p: &Principal,
        params: ListVolumesParams,
    ) -> Result<types::VolumeList, ApiError> {
        let (data, pagination) =
            self.0.list_storages(Kind::Volume, p, params.limit, params.cursor.as_deref()).await?;
        Ok(types::VolumeList { data, pagination })
    }

    async fn create_volume(
        &self,
        p: &Principal,
        body: types::CreateVolumeRequest,
    ) -> Result<types::Volume, ApiError> {
        Ok(self.0.create_storage(Kind::Volume, p, &body.name).await?.into())
    }

    async fn get_volume(
        &self,
        p: &Principal,
        id: String,
    ) -> Result<Tagged<types::VolumeDetail>, ApiError> {
        let detail = self.0.get_storage(Kind::Volume, p, &id).await?;
        Ok(Tagged { etag: storage_tag(&detail.0), body: detail.into() })
    }

    async fn delete_volume(
        &self,
        p: &Principal,
        id: String,
        params: DeleteVolumeParams,
    ) -> Result<(), ApiError> {
        self.0.delete_storage(Kind::Volume, p, &id, params.if_match.as_ref()).await
    }

    async fn list_volume_versions(
        &self,
        p: &Principal,
        id: String,
        params: ListVolumeVersionsParams,
    ) -> Result<types::VolumeVersionList, ApiError> {
        let (data, pagination) = self
            .0
            .list_versions(Kind::Volume, p, &id, params.limit, params.cursor.as_deref())
            .await?;
        Ok(types::VolumeVersionList { data, pagination })
    }

    async fn prepare_volume_upload(
        &self,
        p: &Principal,
        id: String,
        body: types::PrepareUploadRequest,
    ) -> Result<types::PrepareUploadResponse, ApiError> {
        self.0.prepare_upload(Kind::Volume, p, &id, body).await
    }

    async fn commit_volume_upload(
        &self,
        p: &Principal,
        id: String,
        params: CommitVolumeUploadParams,
        body: types::CommitUploadRequest,
    ) -> Result<types::VolumeVersion, ApiError> {
        let if_match = params.if_match.as_ref();
        Ok(self.0.commit_upload(Kind::Volume, p, &id, if_match, body).await?.into())
    }

    async fn download_volume(
        &self,
        p: &Principal,
        id: String,
        params: DownloadVolumeParams,
    ) -> Result<types::DownloadResponse, ApiError> {
        self.0.download(Kind::Volume, p, &id, params.version_id).await
    }

    async fn list_artifacts(
        &self,
        p: &Principal,
        params: ListArtifactsParams,
    ) -> Result<types::ArtifactList, ApiError> {
        let (data, pagination) =
            self.0.list_storages(Kind::Artifact, p, params.limit, params.cursor.as_deref()).await?;
        Ok(types::ArtifactList { data, pagination })
    }

    async fn create_artifact(
        &self,
        p: &Principal,
        body: types::CreateArtifactRequest,
    ) -> Result<types::Artifact, ApiError> {
        Ok(self.0.create_storage(Kind::Artifact, p, &body.name).await?.into())
    }

    async fn get_artifact(
        &self,
        p: &Principal,
        id: String,
    ) -> Result<Tagged<types::ArtifactDetail>, ApiError> {
        let detail = self.0.get_storage(Kind::Artifact, p, &id).await?;
        Ok(Tagged { etag: storage_tag(&detail.0), body: detail.into() })
    }

    async fn delete_artifact(
        &self,
        p: &Principal,
        id: String,
        params: DeleteArtifactParams,
    ) -> Result<(), ApiError> {
        self.0.delete_storage(Kind::Artifact, p, &id, params.if_match.as_ref()).await
    }

    async fn list_artifact_versions(
        &self,
        p: &Principal,
        id: String,
        params: ListArtifactVersionsParams,
    ) -> Result<types::ArtifactVersionList, ApiError> {
        let (data, pagination) = self
            .0
            .list_versions(Kind::Artifact, p, &id, params.limit, params.cursor.as_deref())
            .await?;
        Ok(types::ArtifactVersionList { data, pagination })
    }

    async fn prepare_artifact_upload(
        &self,
        p: &Principal,
        id: String,
        body: types::PrepareUploadRequest,
    ) -> Result<types::PrepareUploadResponse, ApiError> {
        self.0.prepare_upload(Kind::Artifact, p, &id, body).await
    }

    async fn commit_artifact_upload(
        &self,
        p: &Principal,
        id: String,
        params: CommitArtifactUploadParams,
        body: types::CommitUploadRequest,
    ) -> Result<types::ArtifactVersion, ApiError> {
        let if_match = params.if_match.as_ref();
        Ok(self.0.commit_upload(Kind::Artifact, p, &id, if_match, body).await?.into())
    }

    async fn download_artifact(
        &self,
        p: &Principal,
        id: String,
        params: DownloadArtifactParams,
    ) -> Result<types::DownloadResponse, ApiError> {
        self.0.download(Kind::Artifact, p, &id, params.version_id).await
    }

    async fn list_tokens(
        &self,
        p: &Principal,
        params: ListTokensParams,
    ) -> Result<types::TokenList, ApiError> {
        let app = &self.0;
        let listing = app.listing("tokens", &[&p.user_id], params.limit);
        let rows =
            app.store.list_tokens(&p.user_id, &listing.page(params.cursor.as_deref())?).await?;
        let (data, pagination) = listing.finish(rows, |r| r.id.clone());
        Ok(types::TokenList { data, pagination })
    }

    async fn create_token(
        &self,
        p: &Principal,
        body: types::CreateTokenRequest,
    ) -> Result<types::CreatedToken, ApiError> {
        let (row, value) =
            issue_token(&self.0.store, &p.user_id, &body.name, body.expires_in_days.get() as i64)
                .await?;
        Ok(convert::created_token(row, value))
    }

    async fn get_token(&self, p: &Principal, id: String) -> Result<Tagged<types::Token>, ApiError> {
        let row = self.0.store.get_token(&p.user_id, &id).await?;
        let row = row.ok_or_else(|| ApiError::not_found("token", &id))?;
        Ok(Tagged { etag: token_tag(&row), body: row.into() })
    }

    async fn revoke_token(
        &self,
        p: &Principal,
        id: String,
        params: RevokeTokenParams,
    ) -> Result<(), ApiError> {
        let holds = holding(params.if_match.as_ref(), token_tag);
        match self.0.store.revoke_token(&p.user_id, &id, ids::now(), holds.as_deref()).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(ApiError::not_found("token", &id)),
            Err(e) => Err(changed("token", e)),
        }
    }
}

/// Creates a token for `user_id`; its value is returned this once and stored only hashed.
pub async fn issue_token<S: UserStore>(
    store: &S,
    user_id: &str,
    name: &str,
    days: i64,
) -> store::Result<(store::TokenRow, String)> {
    let value = secrets::new_token();
    let now = ids::now();
    let row = store::TokenRow {
        id: ids::new(crate::ids::Prefix::Token),
        user_id: user_id.to_string(),
        name: name.to_string(),
        token_prefix: secrets::token_prefix(&value),
        token_hash: secrets::token_hash(&value),
        created_at: now,
        expires_at: now + Duration::days(days),
        last_used_at: None,
        revoked_at: None,
    };
    store.insert_token(&row).await?;
    Ok((row, value))
}
