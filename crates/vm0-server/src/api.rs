//! The reference implementation of `Vm0Api`: every operation over a `Store` and the blob
//! store. The router has already authenticated and validated everything that reaches
//! these methods; what is left is ownership, existence and state.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{Duration, Utc};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use vm0_api::*;
use vm0_types as types;

use crate::blobs::{Access, Blobs};
use crate::cursor::Scope;
use crate::store::{self, FileRow, Kind, NewVersion, Page, Store, StoreError, UploadSession};
use crate::{ids, secrets};

/// How long pre-signed URLs and upload sessions last.
const URL_LIFETIME: Duration = Duration::hours(1);

/// Who a request acts for.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user_id: String,
    pub token_id: String,
}

/// The server's state: the store, the blobs, the signing key of cursors, and the runs
/// engine.
pub struct App<S> {
    pub store: S,
    pub blobs: Blobs,
    pub key: Vec<u8>,
    pub engine: crate::runs::engine::Engine,
}

/// `App` behind an `Arc`, as the router and the storage routes share it.
pub struct Api<S>(pub Arc<App<S>>);

impl<S> Clone for Api<S> {
    fn clone(&self) -> Self {
        Api(self.0.clone())
    }
}

fn internal(error: StoreError) -> ApiError {
    match error {
        StoreError::InvalidState(message) => ApiError::invalid_state(message),
        StoreError::Conflict => ApiError::internal("an unexpected conflict"),
        StoreError::Internal(detail) => ApiError::internal(detail),
    }
}

/// A row, written as the spec's JSON, read as its generated type.
fn typed<T: DeserializeOwned>(value: Value) -> Result<T, ApiError> {
    serde_json::from_value(value).map_err(ApiError::internal)
}

impl<S: Store> App<S> {
    pub(crate) fn scope(&self, list: String) -> Scope<'_> {
        Scope { key: &self.key, list }
    }

    /// The store's page for `limit` and `cursor`: one item more than asked, to know
    /// whether there are more.
    pub(crate) fn page(&self, scope: &Scope<'_>, limit: i64, cursor: Option<&str>) -> Result<Page, ApiError> {
        Ok(Page { limit: limit + 1, after: cursor.map(|c| scope.decode(c)).transpose()? })
    }

    /// Cuts `rows` to `limit` and builds the pagination object, with a cursor after the
    /// last row kept.
    pub(crate) fn paginate<R>(&self, scope: &Scope<'_>, mut rows: Vec<R>, limit: i64, key: impl Fn(&R) -> String) -> (Vec<R>, Value) {
        let has_more = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        let next = if has_more { rows.last().map(|r| scope.encode(&key(r))) } else { None };
        (rows, json!({ "hasMore": has_more, "nextCursor": next }))
    }

    pub(crate) async fn agent(&self, p: &Principal, id: &str) -> Result<store::AgentRow, ApiError> {
        self.store.get_agent(&p.user_id, id).await.map_err(internal)?.ok_or_else(|| ApiError::not_found("agent", id))
    }

    async fn storage(&self, kind: Kind, p: &Principal, id: &str) -> Result<store::StorageRow, ApiError> {
        self.store.get_storage(kind, &p.user_id, id).await.map_err(internal)?.ok_or_else(|| ApiError::not_found(kind.as_str(), id))
    }

    /// Removes blobs that nothing refers to any more.
    pub async fn collect_garbage(&self) {
        let hashes = match self.store.unreferenced_blobs(Utc::now()).await {
            Ok(hashes) => hashes,
            Err(error) => return tracing::warn!(?error, "blob collection failed"),
        };
        for hash in hashes {
            if let Ok(true) = self.store.forget_blob(&hash).await {
                self.blobs.remove(&hash).await;
            }
        }
    }
}

fn agent_json(row: &store::AgentRow) -> Value {
    json!({
        "id": row.id, "name": row.name, "currentVersionId": row.current_version_id,
        "createdAt": row.created_at, "updatedAt": row.updated_at,
    })
}

fn agent_version_json(row: &store::AgentVersionRow) -> Value {
    json!({ "id": row.id, "agentId": row.agent_id, "versionNumber": row.version_number, "createdAt": row.created_at })
}

fn token_json(row: &store::TokenRow) -> Value {
    json!({
        "id": row.id, "name": row.name, "tokenPrefix": row.token_prefix, "lastUsedAt": row.last_used_at,
        "expiresAt": row.expires_at, "createdAt": row.created_at,
    })
}

fn storage_json(row: &store::StorageRow) -> Value {
    json!({
        "id": row.id, "name": row.name, "currentVersionId": row.current_version_id, "size": row.size,
        "fileCount": row.file_count, "createdAt": row.created_at, "updatedAt": row.updated_at,
    })
}

fn version_json(kind: Kind, row: &store::VersionRow) -> Value {
    let parent = if kind == Kind::Volume { "volumeId" } else { "artifactId" };
    json!({
        "id": row.id, parent: row.storage_id, "size": row.size, "fileCount": row.file_count,
        "message": row.message, "createdBy": row.created_by, "createdAt": row.created_at,
    })
}

/// The id of a version: the SHA-256 of its manifest, the files sorted by path, each as
/// `path NUL size NUL hash NUL` (paths cannot hold NUL).
pub fn manifest_id(files: &[FileRow]) -> String {
    let mut files: Vec<&FileRow> = files.iter().collect();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let mut hasher = Sha256::new();
    for file in files {
        hasher.update(format!("{}\0{}\0{}\0", file.path, file.size, file.hash));
    }
    hex::encode(hasher.finalize())
}

/// The storage operations, shared by volumes and artifacts.
impl<S: Store> App<S> {
    async fn list_storages(&self, kind: Kind, p: &Principal, limit: i64, cursor: Option<&str>) -> Result<Value, ApiError> {
        let scope = self.scope(format!("{}s:{}", kind.as_str(), p.user_id));
        let page = self.page(&scope, limit, cursor)?;
        let rows = self.store.list_storages(kind, &p.user_id, &page).await.map_err(internal)?;
        let (rows, pagination) = self.paginate(&scope, rows, limit, |r| r.id.clone());
        Ok(json!({ "data": rows.iter().map(storage_json).collect::<Vec<_>>(), "pagination": pagination }))
    }

    async fn create_storage(&self, kind: Kind, p: &Principal, name: &str) -> Result<Value, ApiError> {
        match self.store.create_storage(kind, &p.user_id, name, ids::now()).await {
            Ok(row) => Ok(storage_json(&row)),
            Err(StoreError::Conflict) => Err(ApiError::already_exists(kind.as_str(), name)),
            Err(other) => Err(internal(other)),
        }
    }

    async fn get_storage(&self, kind: Kind, p: &Principal, id: &str) -> Result<Value, ApiError> {
        let row = self.storage(kind, p, id).await?;
        let current = match &row.current_version_id {
            Some(version) => self.store.get_version(&row.id, version).await.map_err(internal)?.map(|v| version_json(kind, &v)),
            None => None,
        };
        let mut out = storage_json(&row);
        out["currentVersion"] = current.unwrap_or(Value::Null);
        Ok(out)
    }

    async fn delete_storage(&self, kind: Kind, p: &Principal, id: &str) -> Result<(), ApiError> {
        if !self.store.delete_storage(kind, &p.user_id, id).await.map_err(internal)? {
            return Err(ApiError::not_found(kind.as_str(), id));
        }
        self.collect_garbage().await;
        Ok(())
    }

    async fn list_versions(&self, kind: Kind, p: &Principal, id: &str, limit: i64, cursor: Option<&str>) -> Result<Value, ApiError> {
        let row = self.storage(kind, p, id).await?;
        let scope = self.scope(format!("{}-versions:{}", kind.as_str(), row.id));
        let page = self.page(&scope, limit, cursor)?;
        let rows = self.store.list_versions(&row.id, &page).await.map_err(internal)?;
        let (rows, pagination) = self.paginate(&scope, rows, limit, |r| r.seq.to_string());
        Ok(json!({ "data": rows.iter().map(|v| version_json(kind, v)).collect::<Vec<_>>(), "pagination": pagination }))
    }

    async fn prepare_upload(&self, kind: Kind, p: &Principal, id: &str, body: types::PrepareUploadRequest) -> Result<Value, ApiError> {
        let row = self.storage(kind, p, id).await?;
        let mut seen = HashSet::new();
        let mut files = Vec::with_capacity(body.files.len());
        for (index, file) in body.files.iter().enumerate() {
            let path = file.path.to_string();
            if !seen.insert(path.clone()) {
                return Err(ApiError::invalid_parameter(format!("files[{index}].path"), format!("{path} is listed more than once")));
            }
            if file.size as u64 > self.blobs.max_file_size {
                let message = format!("{path} is larger than this server's limit of {} bytes", self.blobs.max_file_size);
                return Err(ApiError::invalid_parameter(format!("files[{index}].size"), message));
            }
            files.push((FileRow { path, size: file.size, hash: file.hash.to_string() }, ids::new("upf")));
        }
        let expires_at = ids::now() + URL_LIFETIME;
        let session = UploadSession {
            id: ids::new("upl"),
            storage_id: row.id,
            message: body.message.map(|m| m.to_string()),
            created_by: p.token_id.clone(),
            expires_at,
            files,
        };
        self.store.create_upload_session(&session, ids::now()).await.map_err(internal)?;
        let targets: Vec<Value> = session
            .files
            .iter()
            .map(|(file, upload_id)| {
                let url = self.blobs.url(Access::Put, &file.hash, Some(file.size as u64), expires_at);
                json!({ "path": file.path, "uploadUrl": url, "uploadId": upload_id })
            })
            .collect();
        Ok(json!({ "uploadSessionId": session.id, "files": targets, "expiresAt": expires_at }))
    }

    async fn commit_upload(&self, kind: Kind, p: &Principal, id: &str, body: types::CommitUploadRequest) -> Result<Value, ApiError> {
        let row = self.storage(kind, p, id).await?;
        let session_id = body.upload_session_id.to_string();
        let session = self
            .store
            .upload_session(&row.id, &session_id)
            .await
            .map_err(internal)?
            .ok_or_else(|| ApiError::invalid_parameter("uploadSessionId", format!("No such upload session for this {}: '{session_id}'", kind.as_str())))?;
        if session.expires_at < Utc::now() {
            return Err(ApiError::invalid_state(format!("Upload session '{session_id}' has expired: prepare the upload again")));
        }
        let files: Vec<FileRow> = session.files.into_iter().map(|(file, _)| file).collect();
        let version = NewVersion {
            id: manifest_id(&files),
            message: body.message.map(|m| m.to_string()).or(session.message),
            created_by: session.created_by,
            created_at: ids::now(),
            files,
        };
        let committed = self.store.commit_version(&row.id, &session_id, &version).await.map_err(internal)?;
        Ok(version_json(kind, &committed))
    }

    async fn download(&self, kind: Kind, p: &Principal, id: &str, version_id: Option<String>) -> Result<Value, ApiError> {
        let row = self.storage(kind, p, id).await?;
        let Some(version_id) = version_id.or(row.current_version_id) else {
            return Err(ApiError::invalid_state(format!("{} '{id}' has no version yet", kind.as_str())));
        };
        let version = self
            .store
            .get_version(&row.id, &version_id)
            .await
            .map_err(internal)?
            .ok_or_else(|| ApiError::not_found(&format!("{} version", kind.as_str()), &version_id).with_param("versionId"))?;
        let expires_at = ids::now() + URL_LIFETIME;
        let files: Vec<Value> = self
            .store
            .version_files(version.seq)
            .await
            .map_err(internal)?
            .iter()
            .map(|f| {
                let url = self.blobs.url(Access::Get, &f.hash, None, expires_at);
                json!({ "path": f.path, "size": f.size, "hash": f.hash, "downloadUrl": url })
            })
            .collect();
        Ok(json!({ "versionId": version.id, "files": files, "expiresAt": expires_at }))
    }
}

impl<S: Store> Vm0Api for Api<S> {
    type Principal = Principal;

    async fn authenticate(&self, token: &str) -> Result<Principal, ApiError> {
        let hash = secrets::token_hash(token);
        let row = self.0.store.token_by_hash(&hash).await.map_err(internal)?;
        let Some(row) = row.filter(|r| secrets::same(&r.token_hash, &hash)) else {
            return Err(ApiError::unauthorized("Invalid API key"));
        };
        let now = Utc::now();
        if row.revoked_at.is_some() {
            return Err(ApiError::unauthorized("This API key has been revoked"));
        }
        if row.expires_at <= now {
            return Err(ApiError::unauthorized("This API key has expired"));
        }
        // One write a second at most per token: lastUsedAt is to the second anyway.
        if row.last_used_at.is_none_or(|last| now - last >= Duration::seconds(1)) {
            self.0.store.touch_token(&row.id, ids::now()).await.map_err(internal)?;
        }
        Ok(Principal { user_id: row.user_id, token_id: row.id })
    }

    async fn list_agents(&self, p: &Principal, params: ListAgentsParams) -> Result<types::AgentList, ApiError> {
        let app = &self.0;
        let name = params.name.as_ref().map(|n| n.to_string());
        let scope = app.scope(format!("agents:{}:{}", p.user_id, name.as_deref().unwrap_or("")));
        let page = app.page(&scope, params.limit, params.cursor.as_deref())?;
        let rows = app.store.list_agents(&p.user_id, name.as_deref(), &page).await.map_err(internal)?;
        let (rows, pagination) = app.paginate(&scope, rows, params.limit, |r| r.id.clone());
        typed(json!({ "data": rows.iter().map(agent_json).collect::<Vec<_>>(), "pagination": pagination }))
    }

    async fn create_agent(&self, p: &Principal, body: types::CreateAgentRequest) -> Result<types::Agent, ApiError> {
        let config = Value::Object(body.config.0);
        crate::runs::config::check(&config)?;
        match self.0.store.create_agent(&p.user_id, &body.name, &config, ids::now()).await {
            Ok(row) => typed(agent_json(&row)),
            Err(StoreError::Conflict) => Err(ApiError::already_exists("agent", &body.name)),
            Err(other) => Err(internal(other)),
        }
    }

    async fn get_agent(&self, p: &Principal, id: String) -> Result<types::Agent, ApiError> {
        typed(agent_json(&self.0.agent(p, &id).await?))
    }

    async fn update_agent(&self, p: &Principal, id: String, body: types::UpdateAgentRequest) -> Result<types::Agent, ApiError> {
        let config = Value::Object(body.config.0);
        crate::runs::config::check(&config)?;
        let row = self.0.store.update_agent(&p.user_id, &id, &config, ids::now()).await.map_err(internal)?;
        typed(agent_json(&row.ok_or_else(|| ApiError::not_found("agent", &id))?))
    }

    async fn delete_agent(&self, p: &Principal, id: String) -> Result<(), ApiError> {
        match self.0.store.delete_agent(&p.user_id, &id).await.map_err(internal)? {
            true => Ok(()),
            false => Err(ApiError::not_found("agent", &id)),
        }
    }

    async fn list_agent_versions(&self, p: &Principal, id: String, params: ListAgentVersionsParams) -> Result<types::AgentVersionList, ApiError> {
        let app = &self.0;
        let agent = app.agent(p, &id).await?;
        let scope = app.scope(format!("agent-versions:{}", agent.id));
        let page = app.page(&scope, params.limit, params.cursor.as_deref())?;
        let rows = app.store.list_agent_versions(&agent.id, &page).await.map_err(internal)?;
        let (rows, pagination) = app.paginate(&scope, rows, params.limit, |r| r.version_number.to_string());
        typed(json!({ "data": rows.iter().map(agent_version_json).collect::<Vec<_>>(), "pagination": pagination }))
    }

    async fn get_agent_version(&self, p: &Principal, id: String, version_id: String) -> Result<types::AgentVersionDetail, ApiError> {
        let agent = self.0.agent(p, &id).await?;
        let row = self.0.store.get_agent_version(&agent.id, &version_id).await.map_err(internal)?;
        let row = row.ok_or_else(|| ApiError::not_found("agent version", &version_id))?;
        let mut out = agent_version_json(&row);
        out["config"] = row.config;
        typed(out)
    }

    async fn list_runs(&self, p: &Principal, params: ListRunsParams) -> Result<types::RunList, ApiError> {
        crate::runs::list(&self.0, p, params).await
    }

    async fn create_run(&self, p: &Principal, body: types::CreateRunRequest) -> Result<types::RunDetail, ApiError> {
        crate::runs::create(&self.0, p, body).await
    }

    async fn get_run(&self, p: &Principal, id: String) -> Result<types::RunDetail, ApiError> {
        crate::runs::get(&self.0, p, &id).await
    }

    async fn cancel_run(&self, p: &Principal, id: String) -> Result<types::RunDetail, ApiError> {
        crate::runs::cancel(&self.0, p, &id).await
    }

    async fn stream_run_events(&self, p: &Principal, id: String, params: StreamRunEventsParams) -> Result<EventStream, ApiError> {
        crate::runs::events(&self.0, p, &id, params).await
    }

    async fn list_run_logs(&self, p: &Principal, id: String, params: ListRunLogsParams) -> Result<types::RunLogList, ApiError> {
        crate::runs::logs(&self.0, p, &id, params).await
    }

    async fn get_run_metrics(&self, p: &Principal, id: String) -> Result<types::RunMetrics, ApiError> {
        crate::runs::metrics(&self.0, p, &id).await
    }

    async fn list_volumes(&self, p: &Principal, params: ListVolumesParams) -> Result<types::VolumeList, ApiError> {
        typed(self.0.list_storages(Kind::Volume, p, params.limit, params.cursor.as_deref()).await?)
    }

    async fn create_volume(&self, p: &Principal, body: types::CreateVolumeRequest) -> Result<types::Volume, ApiError> {
        typed(self.0.create_storage(Kind::Volume, p, &body.name).await?)
    }

    async fn get_volume(&self, p: &Principal, id: String) -> Result<types::VolumeDetail, ApiError> {
        typed(self.0.get_storage(Kind::Volume, p, &id).await?)
    }

    async fn delete_volume(&self, p: &Principal, id: String) -> Result<(), ApiError> {
        self.0.delete_storage(Kind::Volume, p, &id).await
    }

    async fn list_volume_versions(&self, p: &Principal, id: String, params: ListVolumeVersionsParams) -> Result<types::VolumeVersionList, ApiError> {
        typed(self.0.list_versions(Kind::Volume, p, &id, params.limit, params.cursor.as_deref()).await?)
    }

    async fn prepare_volume_upload(&self, p: &Principal, id: String, body: types::PrepareUploadRequest) -> Result<types::PrepareUploadResponse, ApiError> {
        typed(self.0.prepare_upload(Kind::Volume, p, &id, body).await?)
    }

    async fn commit_volume_upload(&self, p: &Principal, id: String, body: types::CommitUploadRequest) -> Result<types::VolumeVersion, ApiError> {
        typed(self.0.commit_upload(Kind::Volume, p, &id, body).await?)
    }

    async fn download_volume(&self, p: &Principal, id: String, params: DownloadVolumeParams) -> Result<types::DownloadResponse, ApiError> {
        typed(self.0.download(Kind::Volume, p, &id, params.version_id).await?)
    }

    async fn list_artifacts(&self, p: &Principal, params: ListArtifactsParams) -> Result<types::ArtifactList, ApiError> {
        typed(self.0.list_storages(Kind::Artifact, p, params.limit, params.cursor.as_deref()).await?)
    }

    async fn create_artifact(&self, p: &Principal, body: types::CreateArtifactRequest) -> Result<types::Artifact, ApiError> {
        typed(self.0.create_storage(Kind::Artifact, p, &body.name).await?)
    }

    async fn get_artifact(&self, p: &Principal, id: String) -> Result<types::ArtifactDetail, ApiError> {
        typed(self.0.get_storage(Kind::Artifact, p, &id).await?)
    }

    async fn delete_artifact(&self, p: &Principal, id: String) -> Result<(), ApiError> {
        self.0.delete_storage(Kind::Artifact, p, &id).await
    }

    async fn list_artifact_versions(&self, p: &Principal, id: String, params: ListArtifactVersionsParams) -> Result<types::ArtifactVersionList, ApiError> {
        typed(self.0.list_versions(Kind::Artifact, p, &id, params.limit, params.cursor.as_deref()).await?)
    }

    async fn prepare_artifact_upload(&self, p: &Principal, id: String, body: types::PrepareUploadRequest) -> Result<types::PrepareUploadResponse, ApiError> {
        typed(self.0.prepare_upload(Kind::Artifact, p, &id, body).await?)
    }

    async fn commit_artifact_upload(&self, p: &Principal, id: String, body: types::CommitUploadRequest) -> Result<types::ArtifactVersion, ApiError> {
        typed(self.0.commit_upload(Kind::Artifact, p, &id, body).await?)
    }

    async fn download_artifact(&self, p: &Principal, id: String, params: DownloadArtifactParams) -> Result<types::DownloadResponse, ApiError> {
        typed(self.0.download(Kind::Artifact, p, &id, params.version_id).await?)
    }

    async fn list_tokens(&self, p: &Principal, params: ListTokensParams) -> Result<types::TokenList, ApiError> {
        let app = &self.0;
        let scope = app.scope(format!("tokens:{}", p.user_id));
        let page = app.page(&scope, params.limit, params.cursor.as_deref())?;
        let rows = app.store.list_tokens(&p.user_id, &page).await.map_err(internal)?;
        let (rows, pagination) = app.paginate(&scope, rows, params.limit, |r| r.id.clone());
        typed(json!({ "data": rows.iter().map(token_json).collect::<Vec<_>>(), "pagination": pagination }))
    }

    async fn create_token(&self, p: &Principal, body: types::CreateTokenRequest) -> Result<types::CreatedToken, ApiError> {
        let (row, value) = issue_token(&self.0.store, &p.user_id, &body.name, body.expires_in_days.get() as i64).await.map_err(internal)?;
        let mut out = token_json(&row);
        out["token"] = json!(value);
        typed(out)
    }

    async fn get_token(&self, p: &Principal, id: String) -> Result<types::Token, ApiError> {
        let row = self.0.store.get_token(&p.user_id, &id).await.map_err(internal)?;
        typed(token_json(&row.ok_or_else(|| ApiError::not_found("token", &id))?))
    }

    async fn revoke_token(&self, p: &Principal, id: String) -> Result<(), ApiError> {
        match self.0.store.revoke_token(&p.user_id, &id, ids::now()).await.map_err(internal)? {
            true => Ok(()),
            false => Err(ApiError::not_found("token", &id)),
        }
    }
}

/// Creates a token for `user_id`; its value is returned this once and stored only hashed.
pub async fn issue_token<S: Store>(store: &S, user_id: &str, name: &str, days: i64) -> store::Result<(store::TokenRow, String)> {
    let value = secrets::new_token();
    let now = ids::now();
    let row = store::TokenRow {
        id: ids::new("tok"),
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
