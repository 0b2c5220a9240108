//! The content-addressed blob store and its pre-signed URLs, on one of two backends.
//!
//! - **Local** (`blobs/ab/<sha256>` in the data directory): clients upload to this server's
//!   own signed URLs, and a blob is streamed into `tmp/`, hashed as it arrives, synced,
//!   and renamed into place only when its size and SHA-256 are the ones its URL was
//!   signed for: nothing half-written is ever at a blob's path, and no file is ever held
//!   in memory whole.
//! - **S3** (`<prefix>/blobs/<sha256>` in a bucket): clients upload to and download from
//!   the bucket's own pre-signed URLs (SigV4, path-style), so clients' file bytes never
//!   pass through an API instance. An upload lands at `<prefix>/uploads/<upload id>`;
//!   commit copies it to a key no URL names and reads that copy back to check its size
//!   and SHA-256 before it becomes the blob (`settle`), so a blob's key always holds its
//!   hash's bytes. Each deployment needs a bucket or prefix of its own: the collector
//!   removes what its database does not know.
//!
//! Placing a blob (the file or object and its row) and collecting garbage (the row's
//! removal and the file's) exclude each other through the database, on every instance: a
//! writer first reserves the blob (a pin the collector respects), which waits while a
//! collector that has forgotten the blob is still removing its bytes; so no collector
//! removes bytes that a writer, here or on another instance, has just put back.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use chrono::{DateTime, Utc};
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as Key;
use object_store::signer::Signer;
use object_store::{ObjectStore, ObjectStoreExt};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::secrets;
use crate::store::{FileRow, Pin, StorageStore, StoreError, UploadSession};

/// What went wrong in the blob store, independent of HTTP: the API layer decides the
/// status of each in one place (`From<BlobError> for ApiError`).
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// `--blob-store` is not an `s3://BUCKET[/PREFIX]` URL.
    #[error("{0} is not an s3://BUCKET[/PREFIX] URL")]
    NotS3Url(String),
    /// `--blob-store` names no bucket.
    #[error("{0} names no bucket")]
    NoBucket(String),
    /// One of this server's own URLs that it did not sign, or that has expired; `param`
    /// is its query parameter at fault.
    #[error("{message}")]
    BadUrl { param: &'static str, message: &'static str },
    /// An upload's body is not the file its URL was signed for.
    #[error("{0}")]
    BadUpload(String),
    /// A file uploaded to the bucket is not the one its commit says: its size or SHA-256.
    #[error("{0}")]
    Mismatch(String),
    /// A file of the blob store or of a run's working directory.
    #[error("file system: {0}")]
    Io(#[from] std::io::Error),
    /// The S3 bucket of the blob store.
    #[error("object store: {0}")]
    ObjectStore(#[from] object_store::Error),
    /// The database's list of blobs.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where blobs live, as the command line names it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Location {
    /// `blobs/` in the data directory.
    #[default]
    Local,
    /// A bucket of an S3-compatible object store, under `prefix` (empty for the bucket's
    /// root), at `endpoint` (AWS when not given). Credentials and region come from the
    /// standard `AWS_*` variables.
    S3 { bucket: String, prefix: String, endpoint: Option<String> },
}

impl Location {
    /// Reads `s3://BUCKET[/PREFIX]`, with the endpoint of `--s3-endpoint`.
    pub fn parse(url: &str, endpoint: Option<String>) -> Result<Location, BlobError> {
        let rest = url.strip_prefix("s3://").ok_or_else(|| BlobError::NotS3Url(url.to_string()))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(BlobError::NoBucket(url.to_string()));
        }
        Ok(Location::S3 {
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
            endpoint,
        })
    }
}

/// The blob store and the key its own URLs are signed with.
pub struct Blobs {
    backend: Backend,
    tmp: PathBuf,
    key: Vec<u8>,
    /// Where clients reach this server, such as `http://127.0.0.1:8080`.
    public_url: String,
    /// The largest file accepted, in bytes.
    pub max_file_size: u64,
    /// Wakes the collector of [`Blobs::collect_in_background`].
    collect: tokio::sync::Notify,
}

enum Backend {
    Local { root: PathBuf },
    S3 { bucket: Arc<AmazonS3>, prefix: Key },
}

/// What a pre-signed URL allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Put,
    Get,
}

impl Access {
    fn as_str(self) -> &'static str {
        match self {
            Access::Put => "PUT",
            Access::Get => "GET",
        }
    }
}

/// How long a staged S3 upload is kept when no commit settles it: past any upload URL's
/// lifetime.
const STAGED_LIFETIME: chrono::Duration = chrono::Duration::hours(2);

impl Blobs {
    /// The store at `location`, with `data_dir/tmp` for files on their way; partial files
    /// left there by a crash are removed.
    pub async fn open(
        data_dir: &Path,
        location: &Location,
        key: Vec<u8>,
        public_url: String,
        max_file_size: u64,
    ) -> Result<Self, BlobError> {
        let tmp = data_dir.join("tmp");
        if tokio::fs::try_exists(&tmp).await? {
            tokio::fs::remove_dir_all(&tmp).await?;
        }
        tokio::fs::create_dir_all(&tmp).await?;
        let backend = match location {
            Location::Local => {
                let root = data_dir.join("blobs");
                tokio::fs::create_dir_all(&root).await?;
                Backend::Local { root }
            }
            Location::S3 { bucket, prefix, endpoint } => {
                let mut builder = AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .with_virtual_hosted_style_request(false);
                if let Some(endpoint) = endpoint {
                    builder = builder
                        .with_endpoint(endpoint)
                        .with_allow_http(endpoint.starts_with("http://"));
                }
                let bucket = Arc::new(builder.build()?);
                let prefix = Key::from(prefix.as_str());
                // Fail at start, not at the first upload, when the bucket cannot be reached.
                bucket.list_with_delimiter(Some(&prefix)).await?;
                Backend::S3 { bucket, prefix }
            }
        };
        Ok(Blobs {
            backend,
            tmp,
            key,
            public_url: public_url.trim_end_matches('/').to_string(),
            max_file_size,
            collect: tokio::sync::Notify::new(),
        })
    }

    /// Collects garbage in the background whenever [`Blobs::collect_soon`] asks, one
    /// collection at a time, until the process ends.
    pub fn collect_in_background<S: StorageStore + Send + Sync + 'static>(
        self: &Arc<Self>,
        store: S,
    ) {
        let blobs = self.clone();
        tokio::spawn(async move {
            loop {
                blobs.collect.notified().await;
                blobs.collect_garbage(&store).await;
            }
        });
    }

    /// Asks the background collector for a collection, soon: a request that let go of
    /// blobs (a deleted volume) answers without scanning them. Asks made while one runs
    /// make one more.
    pub fn collect_soon(&self) {
        self.collect.notify_one();
    }

    /// Where the blob `hash` lives on disk, for the local backend's download route.
    pub fn local_path(&self, hash: &str) -> Option<PathBuf> {
        match &self.backend {
            Backend::Local { root } => Some(local_blob(root, hash)),
            Backend::S3 { .. } => None,
        }
    }

    /// Whether the store answers: its folder can be read, or the bucket answers a request
    /// for a key (that it has no such key is an answer).
    pub async fn reachable(&self) -> Result<(), BlobError> {
        match &self.backend {
            Backend::Local { root } => {
                tokio::fs::metadata(root).await?;
            }
            Backend::S3 { bucket, prefix } => {
                match bucket.head(&prefix.clone().join("readyz")).await {
                    Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(error) => return Err(error.into()),
                }
            }
        }
        Ok(())
    }

    /// Whether the blob `hash` is stored (its bytes, whether or not its row is).
    pub async fn contains(&self, hash: &str) -> Result<bool, BlobError> {
        match &self.backend {
            Backend::Local { .. } => {
                Ok(tokio::fs::try_exists(self.local_path(hash).expect("a local blob has a path"))
                    .await?)
            }
            Backend::S3 { bucket, prefix } => match bucket.head(&blob_key(prefix, hash)).await {
                Ok(_) => Ok(true),
                Err(object_store::Error::NotFound { .. }) => Ok(false),
                Err(error) => Err(error.into()),
            },
        }
    }

    /// Whether blobs live in an S3 bucket, where uploads go to the bucket and not through
    /// this server.
    pub fn is_s3(&self) -> bool {
        matches!(self.backend, Backend::S3 { .. })
    }

    fn message(access: Access, hash: &str, url: &UrlFor, expires: i64) -> String {
        let size = url.size.map(|s| s.to_string()).unwrap_or_default();
        let user = url.user.map(|u| format!("\n{u}")).unwrap_or_default();
        let token = url.token;
        format!("{}\n{hash}\n{size}\n{expires}\n{token}{user}", access.as_str())
    }

    /// This server's own URL allowing `access` to the blob `hash` until `expires`, as
    /// `url` says.
    fn local_url(
        &self,
        access: Access,
        hash: &str,
        url: &UrlFor,
        expires: DateTime<Utc>,
    ) -> String {
        let expires = expires.timestamp();
        let signature = secrets::sign(&self.key, &Self::message(access, hash, url, expires));
        let size = url.size.map(|s| format!("&size={s}")).unwrap_or_default();
        let user = url.user.map(|u| format!("&user={u}")).unwrap_or_default();
        format!(
            "{}/storage/blobs/{hash}?method={}{size}{user}&token={}&expires={expires}\
             &signature={signature}",
            self.public_url,
            access.as_str(),
            url.token
        )
    }

    /// The URL a client uploads the file `upload_id` of `user`, `size` bytes with SHA-256
    /// `hash`, to until `expires`.
    pub async fn upload_url(
        &self,
        hash: &str,
        size: u64,
        user: &str,
        token: &str,
        upload_id: &str,
        expires: DateTime<Utc>,
    ) -> Result<String, BlobError> {
        match &self.backend {
            Backend::Local { .. } => {
                let url = UrlFor { size: Some(size), user: Some(user), token };
                Ok(self.local_url(Access::Put, hash, &url, expires))
            }
            Backend::S3 { bucket, prefix } => {
                sign(bucket, object_store::signer::Method::PUT, &staged(prefix, upload_id), expires)
                    .await
            }
        }
    }

    /// The URL a client downloads the blob `hash` from until `expires`.
    pub async fn download_url(
        &self,
        hash: &str,
        token: &str,
        expires: DateTime<Utc>,
    ) -> Result<String, BlobError> {
        match &self.backend {
            Backend::Local { .. } => {
                let url = UrlFor { size: None, user: None, token };
                Ok(self.local_url(Access::Get, hash, &url, expires))
            }
            Backend::S3 { bucket, prefix } => {
                sign(bucket, object_store::signer::Method::GET, &blob_key(prefix, hash), expires)
                    .await
            }
        }
    }

    /// Checks one of this server's own URLs: its signature and expiry.
    pub fn verify(
        &self,
        access: Access,
        hash: &str,
        url: &UrlFor,
        expires: i64,
        signature: &str,
    ) -> Result<(), BlobError> {
        if !secrets::verify(&self.key, &Self::message(access, hash, url, expires), signature) {
            return Err(BlobError::BadUrl {
                param: "signature",
                message: "The URL's signature does not match: request a new URL",
            });
        }
        if Utc::now().timestamp() > expires {
            return Err(BlobError::BadUrl {
                param: "expires",
                message: "The URL has expired: request a new URL",
            });
        }
        Ok(())
    }

    /// Before a commit, on S3: each file of `session` that was uploaded to the bucket is
    /// read back, and becomes the blob its user (`owner`) holds when its size and SHA-256
    /// are the ones prepared. A file not uploaded is left to the commit, which refuses it
    /// unless `owner` holds its blob already. On the local backend, uploads were checked
    /// as they arrived, and there is nothing to do.
    pub async fn settle<S: StorageStore + Sync>(
        &self,
        session: &UploadSession,
        store: &S,
        owner: &str,
    ) -> Result<(), BlobError> {
        if !matches!(self.backend, Backend::S3 { .. }) {
            return Ok(());
        }
        // A few at a time: each is a read of the whole object.
        futures_util::stream::iter(session.files.iter().cloned())
            .map(|(file, upload_id)| self.settle_one(file, upload_id, store, owner))
            .buffer_unordered(4)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    /// `settle` for one file.
    async fn settle_one<S: StorageStore>(
        &self,
        file: FileRow,
        upload_id: String,
        store: &S,
        owner: &str,
    ) -> Result<(), BlobError> {
        let Backend::S3 { bucket, prefix } = &self.backend else { return Ok(()) };
        let key = staged(prefix, &upload_id);
        let meta = match bucket.head(&key).await {
            Ok(meta) => meta,
            Err(object_store::Error::NotFound { .. }) => return Ok(()),
            Err(error) => return Err(error.into()),
        };
        let path = file.path.as_str();
        if meta.size != file.size as u64 {
            return Err(BlobError::Mismatch(format!(
                "{path} was uploaded with {} bytes, not {}",
                meta.size, file.size
            )));
        }
        // The client may PUT to its URL again at any time: what is checked and kept is a
        // copy under a key no URL names, never the upload itself.
        let copy =
            prefix.clone().join("verifying").join(crate::ids::new(crate::ids::Prefix::Verifying));
        bucket.copy(&key, &copy).await?;
        let result = self.keep_if_verified(bucket, prefix, &copy, &file, store, owner).await;
        bucket.delete(&copy).await.ok();
        if result.is_ok() {
            bucket.delete(&key).await.ok();
        }
        result
    }

    /// Makes the private `copy` of an upload the blob of `file`, when it has the file's
    /// size and SHA-256.
    async fn keep_if_verified<S: StorageStore>(
        &self,
        bucket: &AmazonS3,
        prefix: &Key,
        copy: &Key,
        file: &FileRow,
        store: &S,
        owner: &str,
    ) -> Result<(), BlobError> {
        let path = file.path.as_str();
        let (mut hasher, mut size) = (Sha256::new(), 0u64);
        let mut stream = bucket.get(copy).await?.into_stream();
        while let Some(chunk) = stream.try_next().await? {
            size += chunk.len() as u64;
            // Replaced by a larger object since its size was checked: no need to read on.
            if size > file.size as u64 {
                break;
            }
            hasher.update(&chunk);
        }
        if size > file.size as u64 {
            return Err(BlobError::Mismatch(format!(
                "{path} was uploaded with more than {} bytes",
                file.size
            )));
        }
        if size != file.size as u64 {
            return Err(BlobError::Mismatch(format!(
                "{path} was uploaded with {size} bytes, not {}",
                file.size
            )));
        }
        if hex::encode(hasher.finalize()) != file.hash.as_str() {
            return Err(BlobError::Mismatch(format!(
                "{path} was uploaded with other bytes than the SHA-256 it was prepared with"
            )));
        }
        let hash = file.hash.as_str();
        let reserved = self.reserve(store, hash).await?;
        bucket.copy(copy, &blob_key(prefix, hash)).await?;
        Ok(store.record_blob(hash, file.size, crate::ids::now(), owner, None, &reserved).await?)
    }

    /// Streams `body` into the blob `hash`, which must be exactly `size` bytes with that
    /// SHA-256, and lists it in `store` as held by `owner`: the local backend's upload.
    pub async fn write<S: StorageStore>(
        &self,
        hash: &str,
        size: u64,
        body: Body,
        store: &S,
        owner: &str,
    ) -> Result<(), BlobError> {
        let temp = self.tmp.join(crate::ids::new(crate::ids::Prefix::Partial));
        let mut result = self.write_temp(&temp, hash, size, body).await;
        if result.is_ok() {
            result = self.place(&temp, hash, size, store, owner, None).await;
        }
        if result.is_err() {
            tokio::fs::remove_file(&temp).await.ok();
        }
        result
    }

    /// Reserves blob `hash` for a write (see `StorageStore::reserve_blob`), waiting while a
    /// collector removes it; the reservation's holder, for `record_blob`.
    async fn reserve<S: StorageStore>(&self, store: &S, hash: &str) -> Result<String, BlobError> {
        let holder = format!("write:{}", crate::ids::new(crate::ids::Prefix::Partial));
        loop {
            let until = Utc::now() + RESERVATION;
            if store.reserve_blob(hash, &holder, until, ABANDONED).await? {
                return Ok(holder);
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Moves a complete temporary file into the blob `hash` and lists it, reserved.
    async fn place<S: StorageStore>(
        &self,
        temp: &Path,
        hash: &str,
        size: u64,
        store: &S,
        owner: &str,
        pin: Option<&Pin>,
    ) -> Result<(), BlobError> {
        let reserved = self.reserve(store, hash).await?;
        match &self.backend {
            Backend::Local { .. } => {
                let path = self.local_path(hash).expect("a local blob has a path");
                let folder = path.parent().expect("blob paths have a folder").to_path_buf();
                tokio::fs::create_dir_all(&folder).await?;
                tokio::fs::rename(temp, &path).await?;
                // The rename is durable once the folder is synced.
                tokio::task::spawn_blocking(move || {
                    std::fs::File::open(folder).and_then(|f| f.sync_all())
                })
                .await
                .map_err(std::io::Error::other)??;
            }
            Backend::S3 { bucket, prefix } => {
                // In parts, so that a large file is never held in memory whole.
                let mut writer =
                    object_store::buffered::BufWriter::new(bucket.clone(), blob_key(prefix, hash));
                let mut file = tokio::fs::File::open(temp).await?;
                tokio::io::copy(&mut file, &mut writer).await?;
                writer.shutdown().await?;
                tokio::fs::remove_file(temp).await.ok();
            }
        }
        Ok(store.record_blob(hash, size as i64, crate::ids::now(), owner, pin, &reserved).await?)
    }

    async fn write_temp(
        &self,
        temp: &Path,
        hash: &str,
        size: u64,
        body: Body,
    ) -> Result<(), BlobError> {
        let mut file = tokio::fs::File::create(temp).await?;
        let (mut hasher, mut written) = (Sha256::new(), 0u64);
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk
                .map_err(|e| BlobError::BadUpload(format!("The upload was interrupted: {e}")))?;
            written += chunk.len() as u64;
            if written > size {
                return Err(BlobError::BadUpload(format!(
                    "The upload is larger than the {size} bytes it was prepared for"
                )));
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await?;
        }
        if written != size {
            return Err(BlobError::BadUpload(format!(
                "The upload has {written} bytes, not the {size} it was prepared for"
            )));
        }
        if hex::encode(hasher.finalize()) != hash {
            return Err(BlobError::BadUpload(
                "The upload's SHA-256 is not the hash it was prepared for".into(),
            ));
        }
        file.sync_all().await?;
        Ok(())
    }

    /// Copies a local file (one a run of `owner` wrote) into the store and lists it under
    /// `pin` (its version's commit comes later); its hash and size.
    pub async fn ingest<S: StorageStore>(
        &self,
        source: &Path,
        store: &S,
        owner: &str,
        pin: &Pin,
    ) -> Result<(vm0_types::Sha256, u64), BlobError> {
        let temp = self.tmp.join(crate::ids::new(crate::ids::Prefix::Partial));
        let result = async {
            let mut input = tokio::fs::File::open(source).await?;
            let mut output = tokio::fs::File::create(&temp).await?;
            let (mut hasher, mut size, mut buffer) = (Sha256::new(), 0u64, vec![0u8; 64 * 1024]);
            loop {
                let n = tokio::io::AsyncReadExt::read(&mut input, &mut buffer).await?;
                if n == 0 {
                    break;
                }
                hasher.update(&buffer[..n]);
                output.write_all(&buffer[..n]).await?;
                size += n as u64;
            }
            output.sync_all().await?;
            let hash = hex::encode(hasher.finalize());
            self.place(&temp, &hash, size, store, owner, Some(pin)).await?;
            Ok::<_, BlobError>((hash.parse().expect("a SHA-256 in hex"), size))
        }
        .await;
        if result.is_err() {
            tokio::fs::remove_file(&temp).await.ok();
        }
        result
    }

    /// Copies the blob `hash` to `target`, creating its folder.
    pub async fn copy_to(&self, hash: &str, target: &Path) -> Result<(), BlobError> {
        if let Some(folder) = target.parent() {
            tokio::fs::create_dir_all(folder).await?;
        }
        match &self.backend {
            Backend::Local { .. } => {
                tokio::fs::copy(self.local_path(hash).expect("a local blob has a path"), target)
                    .await?;
            }
            Backend::S3 { bucket, prefix } => {
                let mut file = tokio::fs::File::create(target).await?;
                let mut stream = bucket.get(&blob_key(prefix, hash)).await?.into_stream();
                while let Some(chunk) = stream.try_next().await? {
                    file.write_all(&chunk).await?;
                }
                file.flush().await?;
            }
        }
        Ok(())
    }

    /// Removes blobs that nothing refers to and nothing pins any more, and on S3 the
    /// uploads that no commit settled.
    pub async fn collect_garbage<S: StorageStore>(&self, store: &S) {
        let now = Utc::now();
        // Removals whose collector died between forgetting a blob and removing its bytes,
        // each taken over by one collector.
        match store.abandoned_removals(ABANDONED).await {
            Ok(hashes) => {
                for hash in hashes {
                    self.finish_removal(store, &hash).await;
                }
            }
            Err(error) => tracing::warn!(%error, "could not look for abandoned blob removals"),
        }
        let hashes = match store.unreferenced_blobs(now).await {
            Ok(hashes) => hashes,
            Err(error) => return tracing::warn!(%error, "blob collection failed"),
        };
        for hash in hashes {
            match store.forget_blob(&hash, now).await {
                Ok(true) => self.finish_removal(store, &hash).await,
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(%hash, %error, "could not forget an unreferenced blob")
                }
            }
        }
        if let Backend::S3 { bucket, prefix } = &self.backend {
            let uploads = prefix.clone().join("uploads");
            let stale = bucket
                .list(Some(&uploads))
                .try_filter(|meta| std::future::ready(meta.last_modified < now - STAGED_LIFETIME));
            let removed =
                stale.try_for_each(|meta| async move { bucket.delete(&meta.location).await }).await;
            if let Err(error) = removed {
                tracing::warn!(%error, "could not remove stale uploads");
            }
        }
    }

    /// Removes the bytes of a forgotten blob, then ends its removal, which lets its
    /// writers go on.
    async fn finish_removal<S: StorageStore>(&self, store: &S, hash: &str) {
        // Bounded well within `ABANDONED`, after which another may take the removal over
        // and a writer put the bytes back: a removal that takes longer is left to them.
        if tokio::time::timeout(REMOVE_WITHIN, self.remove(hash)).await.is_err() {
            return tracing::warn!(%hash, "a blob's removal took too long; left to be taken over");
        }
        if let Err(error) = store.removed_blob(hash).await {
            // Taken over as abandoned, ten minutes on.
            tracing::warn!(%hash, %error, "could not record the end of a blob's removal");
        }
    }

    /// Removes a blob's file or object; a missing one is already gone.
    async fn remove(&self, hash: &str) {
        let removed = match &self.backend {
            Backend::Local { .. } => match tokio::fs::remove_file(
                self.local_path(hash).expect("a local blob has a path"),
            )
            .await
            {
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
                other => other.map_err(BlobError::from),
            },
            Backend::S3 { bucket, prefix } => match bucket.delete(&blob_key(prefix, hash)).await {
                Err(object_store::Error::NotFound { .. }) => Ok(()),
                other => other.map_err(BlobError::from),
            },
        };
        if let Err(error) = removed {
            tracing::warn!(%hash, %error, "could not remove an unreferenced blob");
        }
    }
}

/// What one of this server's own URLs is for: an upload's `size` and `user` (who will
/// hold the blob), and the token that asked for it, whose revocation ends the URL.
pub struct UrlFor<'a> {
    pub size: Option<u64>,
    pub user: Option<&'a str>,
    pub token: &'a str,
}

/// How long a writer's reservation of a blob holds at most: longer than any write.
const RESERVATION: chrono::Duration = chrono::Duration::hours(1);
/// How old a blob's removal is, by the database's clock, when its collector is taken to
/// have died: far longer than `REMOVE_WITHIN`.
const ABANDONED: std::time::Duration = std::time::Duration::from_secs(600);
/// How long the removal of one blob's file or object may take before it is given up.
const REMOVE_WITHIN: std::time::Duration = std::time::Duration::from_secs(60);

/// The file of the blob `hash` under `root`, the data directory's `blobs/`: in a folder
/// named by the hash's first two characters.
pub(crate) fn local_blob(root: &Path, hash: &str) -> PathBuf {
    root.join(&hash[..2]).join(hash)
}

fn blob_key(prefix: &Key, hash: &str) -> Key {
    prefix.clone().join("blobs").join(hash)
}

fn staged(prefix: &Key, upload_id: &str) -> Key {
    prefix.clone().join("uploads").join(upload_id)
}

/// The bucket's own pre-signed URL for `method` on `key`, until `expires`.
async fn sign(
    bucket: &AmazonS3,
    method: object_store::signer::Method,
    key: &Key,
    expires: DateTime<Utc>,
) -> Result<String, BlobError> {
    let lifetime = (expires - Utc::now()).to_std().unwrap_or_default();
    Ok(bucket.signed_url(method, key, lifetime).await?.to_string())
}

/// Whether `hash` is a SHA-256 in lowercase hex, as blob paths require.
pub(crate) fn is_hash(hash: &str) -> bool {
    hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;
    use crate::store::{FileRow, Kind, NewVersion, SqlStore, UserStore};

    async fn open() -> (tempfile::TempDir, SqlStore, Blobs) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqlStore::open(&format!("sqlite://{}", dir.path().join("vm0.db").display()))
            .await
            .unwrap();
        let blobs = local(dir.path()).await;
        (dir, store, blobs)
    }

    /// A blob store in `dir`, as an instance over that data directory has.
    async fn local(dir: &Path) -> Blobs {
        Blobs::open(dir, &Location::Local, vec![7; 32], "http://127.0.0.1:1".into(), 1 << 20)
            .await
            .unwrap()
    }

    /// A run stores its artifact's files first and commits their version after: a
    /// collection in between (another user deleting a volume) must not take them.
    #[tokio::test]
    async fn a_blob_a_run_stored_survives_a_collection_before_its_commit() {
        let (dir, store, blobs) = open().await;
        let user = store.ensure_user("someone").await.unwrap();
        let source = dir.path().join("report.txt");
        std::fs::write(&source, b"what the run wrote").unwrap();
        let pin = Pin { holder: "run_1".into(), until: Utc::now() + Duration::hours(1) };
        let (hash, size) = blobs.ingest(&source, &store, &user.id, &pin).await.unwrap();
        blobs.collect_garbage(&store).await;
        assert!(blobs.local_path(&hash).unwrap().exists(), "the pinned blob's file was collected");

        let artifact =
            store.create_storage(Kind::Artifact, &user.id, "results", Utc::now()).await.unwrap();
        let file =
            FileRow { path: "report.txt".parse().unwrap(), size: size as i64, hash: hash.clone() };
        let version = NewVersion::of(vec![file], None, "run_1".into(), Utc::now());
        store
            .commit_version(&artifact.id, &user.id, "", &version, None)
            .await
            .expect("the version commits with its blob");
    }

    /// Two instances' blob stores over one database and one place for blobs: a collector
    /// on one has forgotten a blob and is removing its bytes when a writer on the other
    /// stores the same bytes again. The writer waits for the removal to end, so the blob
    /// it lists has its bytes. (A gate in each process kept them apart in one instance
    /// only: the writer put the bytes back, and the collector removed them after.)
    #[tokio::test]
    async fn a_blob_written_again_during_its_removal_elsewhere_keeps_its_bytes() {
        let (dir, store, collector) = open().await;
        let writer = local(dir.path()).await;
        let user = store.ensure_user("someone").await.unwrap();
        let source = dir.path().join("again.txt");
        std::fs::write(&source, b"written twice").unwrap();
        let gone = Pin { holder: "run_1".into(), until: Utc::now() - Duration::seconds(1) };
        let (hash, _) = writer.ingest(&source, &store, &user.id, &gone).await.unwrap();
        store.unreferenced_blobs(Utc::now()).await.unwrap();
        assert!(store.forget_blob(&hash, Utc::now()).await.unwrap(), "the collector forgets it");

        let pin = Pin { holder: "run_2".into(), until: Utc::now() + Duration::hours(1) };
        let again = {
            let (store, user, source) = (store.clone(), user.id.clone(), source.clone());
            tokio::spawn(async move { writer.ingest(&source, &store, &user, &pin).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(!again.is_finished(), "the writer waits while the blob is being removed");
        collector.finish_removal(&store, &hash).await;
        again.await.unwrap().unwrap();
        let listed: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM blobs WHERE hash = $1")
            .bind(hash.as_str())
            .fetch_one(store.sqlite().unwrap())
            .await
            .unwrap();
        assert_eq!(listed, 1, "the blob is listed again");
        assert!(collector.contains(&hash).await.unwrap(), "the blob listed has its bytes");
    }

    #[tokio::test]
    async fn an_unreferenced_blob_whose_pin_ran_out_is_collected() {
        let (dir, store, blobs) = open().await;
        let user = store.ensure_user("someone").await.unwrap();
        let source = dir.path().join("left.txt");
        std::fs::write(&source, b"nobody committed this").unwrap();
        let pin = Pin { holder: "run_1".into(), until: Utc::now() - Duration::seconds(1) };
        let (hash, _) = blobs.ingest(&source, &store, &user.id, &pin).await.unwrap();
        assert!(blobs.local_path(&hash).unwrap().exists());
        blobs.collect_garbage(&store).await;
        assert!(!blobs.local_path(&hash).unwrap().exists(), "an expired pin keeps nothing");
    }
}
