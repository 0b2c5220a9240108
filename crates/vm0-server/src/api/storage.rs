//! The storage operations, shared by volumes and artifacts: the two differ only in their
//! name and their generated types, which `mod.rs` picks.

use std::collections::HashSet;

use chrono::{Duration, Utc};
use vm0_api::{ApiError, IfMatch};
use vm0_types as types;

use super::{storage_tag, App, Principal};
use crate::ids;
use crate::store::{
    FileRow, Kind, NewVersion, StorageRow, Store, StoreError, UploadSession, VersionRow,
};

/// How long pre-signed URLs and upload sessions last.
const URL_LIFETIME: Duration = Duration::hours(1);

/// A volume or artifact with its current version.
pub(super) struct StorageDetail(pub StorageRow, pub Option<VersionRow>);

impl<S: Store> App<S> {
    async fn storage(&self, kind: Kind, p: &Principal, id: &str) -> Result<StorageRow, ApiError> {
        self.store
            .get_storage(kind, &p.user_id, id)
            .await?
            .ok_or_else(|| ApiError::not_found(kind.as_str(), id))
    }

    pub(super) async fn list_storages<T: From<StorageRow>>(
        &self,
        kind: Kind,
        p: &Principal,
        limit: i64,
        cursor: Option<&str>,
    ) -> Result<(Vec<T>, types::Pagination), ApiError> {
        let listing = self.listing(&format!("{}s", kind.as_str()), &[&p.user_id], limit);
        let rows = self.store.list_storages(kind, &p.user_id, &listing.page(cursor)?).await?;
        Ok(listing.finish(rows, |r| r.id.clone()))
    }

    pub(super) async fn create_storage(
        &self,
        kind: Kind,
        p: &Principal,
        name: &str,
    ) -> Result<StorageRow, ApiError> {
        match self.store.create_storage(kind, &p.user_id, name, ids::now()).await {
            Ok(row) => Ok(row),
            Err(StoreError::Conflict) => Err(ApiError::already_exists(kind.as_str(), name)),
            Err(other) => Err(other.into()),
        }
    }

    pub(super) async fn get_storage(
        &self,
        kind: Kind,
        p: &Principal,
        id: &str,
    ) -> Result<StorageDetail, ApiError> {
        let row = self.storage(kind, p, id).await?;
        let current = match &row.current_version_id {
            Some(version) => self.store.get_version(&row.id, version).await?,
            None => None,
        };
        Ok(StorageDetail(row, current))
    }

    pub(super) async fn delete_storage(
        &self,
        kind: Kind,
        p: &Principal,
        id: &str,
        if_match: Option<&IfMatch>,
    ) -> Result<(), ApiError> {
        let holds = super::holding(if_match, storage_tag);
        let deleted = self.store.delete_storage(kind, &p.user_id, id, holds.as_deref()).await;
        if !deleted.map_err(|e| super::changed(kind.as_str(), e))? {
            return Err(ApiError::not_found(kind.as_str(), id));
        }
        self.blobs.collect_soon();
        Ok(())
    }

    pub(super) async fn list_versions<T: From<VersionRow>>(
        &self,
        kind: Kind,
        p: &Principal,
        id: &str,
        limit: i64,
        cursor: Option<&str>,
    ) -> Result<(Vec<T>, types::Pagination), ApiError> {
        let row = self.storage(kind, p, id).await?;
        let listing = self.listing(&format!("{}-versions", kind.as_str()), &[&row.id], limit);
        let rows = self.store.list_versions(&row.id, &listing.page(cursor)?).await?;
        Ok(listing.finish(rows, |r| r.seq.to_string()))
    }

    pub(super) async fn prepare_upload(
        &self,
        kind: Kind,
        p: &Principal,
        id: &str,
        body: types::PrepareUploadRequest,
    ) -> Result<types::PrepareUploadResponse, ApiError> {
        let row = self.storage(kind, p, id).await?;
        let mut seen = HashSet::new();
        let mut files = Vec::with_capacity(body.files.len());
        for (index, file) in body.files.into_iter().enumerate() {
            if !seen.insert(file.path.to_string()) {
                return Err(ApiError::invalid_parameter(
                    format!("files[{index}].path"),
                    format!("{} is listed more than once", file.path.as_str()),
                ));
            }
            if file.size as u64 > self.blobs.max_file_size {
                let message = format!(
                    "{} is larger than this server's limit of {} bytes",
                    file.path.as_str(),
                    self.blobs.max_file_size
                );
                return Err(ApiError::invalid_parameter(format!("files[{index}].size"), message));
            }
            files.push((
                FileRow { path: file.path, size: file.size, hash: file.hash },
                ids::new(ids::Prefix::UploadFile),
            ));
        }
        crate::paths::check(files.iter().map(|(f, _)| f.path.as_str())).map_err(|e| {
            ApiError::invalid_parameter(format!("files[{}].path", e.index), e.message)
        })?;
        let expires_at = ids::now() + URL_LIFETIME;
        let session = UploadSession {
            id: ids::new(ids::Prefix::Upload),
            storage_id: row.id,
            message: body.message.map(String::from),
            created_by: p.token_id.clone(),
            expires_at,
            files,
        };
        self.store.create_upload_session(&session, ids::now()).await?;
        let mut files = Vec::with_capacity(session.files.len());
        for (file, upload_id) in session.files {
            let upload_url = self
                .blobs
                .upload_url(
                    file.hash.as_str(),
                    file.size as u64,
                    &p.user_id,
                    &p.token_id,
                    &upload_id,
                    expires_at,
                )
                .await?;
            files.push(types::UploadTarget { upload_url, path: file.path, upload_id });
        }
        Ok(types::PrepareUploadResponse { upload_session_id: session.id, files, expires_at })
    }

    pub(super) async fn commit_upload(
        &self,
        kind: Kind,
        p: &Principal,
        id: &str,
        if_match: Option<&IfMatch>,
        body: types::CommitUploadRequest,
    ) -> Result<VersionRow, ApiError> {
        let row = self.storage(kind, p, id).await?;
        let session_id = body.upload_session_id.to_string();
        let Some(session) = self.store.upload_session(&row.id, &session_id).await? else {
            // A commit replayed after its answer was lost answers the version it made.
            if let Some(made) = self.store.committed_upload(&row.id, &session_id).await? {
                return Ok(made);
            }
            return Err(ApiError::invalid_parameter(
                "uploadSessionId",
                format!("No such upload session for this {}: '{session_id}'", kind.as_str()),
            ));
        };
        if session.expires_at < Utc::now() {
            return Err(ApiError::invalid_state(format!(
                "Upload session '{session_id}' has expired: prepare the upload again"
            )));
        }
        self.blobs.settle(&session, &self.store, &p.user_id).await?;
        let files = session.files.into_iter().map(|(file, _)| file).collect();
        let version = NewVersion::of(
            files,
            body.message.map(String::from).or(session.message),
            session.created_by,
            ids::now(),
        );
        // Checked where the version is committed, with the row locked: the commit of
        // another session may have come first.
        let holds = super::holding(if_match, storage_tag);
        let committed =
            self.store.commit_version(&row.id, &p.user_id, &session_id, &version, holds.as_deref());
        committed.await.map_err(|e| super::changed(kind.as_str(), e))
    }

    pub(super) async fn download(
        &self,
        kind: Kind,
        p: &Principal,
        id: &str,
        version_id: Option<String>,
    ) -> Result<types::DownloadResponse, ApiError> {
        let row = self.storage(kind, p, id).await?;
        let Some(version_id) = version_id.or(row.current_version_id) else {
            return Err(ApiError::invalid_state(format!(
                "{} '{id}' has no version yet",
                kind.as_str()
            )));
        };
        let version = self.store.get_version(&row.id, &version_id).await?.ok_or_else(|| {
            ApiError::not_found(&format!("{} version", kind.as_str()), &version_id)
                .with_param("versionId")
        })?;
        let expires_at = ids::now() + URL_LIFETIME;
        let stored = self.store.version_files(version.seq).await?;
        let mut files = Vec::with_capacity(stored.len());
        for f in stored {
            let download_url =
                self.blobs.download_url(f.hash.as_str(), &p.token_id, expires_at).await?;
            files.push(types::DownloadFile {
                download_url,
                path: f.path,
                size: f.size,
                hash: f.hash,
            });
        }
        Ok(types::DownloadResponse { version_id: version.id, files, expires_at })
    }
}
