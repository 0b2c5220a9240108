//! The content-addressed blob store on disk (`blobs/ab/<sha256>`) and its pre-signed
//! URLs. A blob is streamed into `tmp/`, hashed as it arrives, synced, and renamed into
//! place only when its size and SHA-256 are the ones its URL was signed for: nothing
//! half-written is ever at a blob's path, and no file is ever held in memory whole.
//!
//! Placing a blob (the rename and its row) and collecting garbage (the row's removal and
//! the file's) are each done under a gate, shared by writers and exclusive to the
//! collector, so the collector never unlinks a file that a writer has just put back.

use std::path::PathBuf;

use axum::body::Body;
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::sync::RwLock;
use vm0_api::ApiError;

use crate::secrets;
use crate::store::{Pin, StorageStore, StoreError};

/// The blob store and the key its URLs are signed with.
pub struct Blobs {
    root: PathBuf,
    tmp: PathBuf,
    key: Vec<u8>,
    /// Where clients reach this server, such as `http://127.0.0.1:8080`.
    public_url: String,
    /// The largest file accepted, in bytes.
    pub max_file_size: u64,
    /// Read by writers placing a blob, written by the collector.
    gate: RwLock<()>,
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

impl Blobs {
    /// The store under `data_dir`; partial uploads left by a crash are removed.
    pub async fn open(data_dir: &std::path::Path, key: Vec<u8>, public_url: String, max_file_size: u64) -> std::io::Result<Self> {
        let (root, tmp) = (data_dir.join("blobs"), data_dir.join("tmp"));
        if tokio::fs::try_exists(&tmp).await? {
            tokio::fs::remove_dir_all(&tmp).await?;
        }
        tokio::fs::create_dir_all(&root).await?;
        tokio::fs::create_dir_all(&tmp).await?;
        Ok(Blobs { root, tmp, key, public_url: public_url.trim_end_matches('/').to_string(), max_file_size, gate: RwLock::new(()) })
    }

    /// Where the blob `hash` lives.
    pub fn path(&self, hash: &str) -> PathBuf {
        self.root.join(&hash[..2]).join(hash)
    }

    fn message(access: Access, hash: &str, size: Option<u64>, user: Option<&str>, expires: i64) -> String {
        let size = size.map(|s| s.to_string()).unwrap_or_default();
        let user = user.map(|u| format!("\n{u}")).unwrap_or_default();
        format!("{}\n{hash}\n{size}\n{expires}{user}", access.as_str())
    }

    /// A URL that allows `access` to the blob `hash` until `expires`; an upload URL is for
    /// `size` bytes by `user`, who will hold the blob.
    pub fn url(&self, access: Access, hash: &str, size: Option<u64>, user: Option<&str>, expires: DateTime<Utc>) -> String {
        let expires = expires.timestamp();
        let signature = secrets::sign(&self.key, &Self::message(access, hash, size, user, expires));
        let size = size.map(|s| format!("&size={s}")).unwrap_or_default();
        let user = user.map(|u| format!("&user={u}")).unwrap_or_default();
        format!("{}/storage/blobs/{hash}?method={}{size}{user}&expires={expires}&signature={signature}", self.public_url, access.as_str())
    }

    /// Checks a URL's signature and expiry.
    pub fn verify(&self, access: Access, hash: &str, size: Option<u64>, user: Option<&str>, expires: i64, signature: &str) -> Result<(), ApiError> {
        if !secrets::verify(&self.key, &Self::message(access, hash, size, user, expires), signature) {
            return Err(ApiError::invalid_parameter("signature", "The URL's signature does not match: request a new URL"));
        }
        if Utc::now().timestamp() > expires {
            return Err(ApiError::invalid_parameter("expires", "The URL has expired: request a new URL"));
        }
        Ok(())
    }

    /// Streams `body` into the blob `hash`, which must be exactly `size` bytes with that
    /// SHA-256, and lists it in `store` as held by `owner`.
    pub async fn write<S: StorageStore>(&self, hash: &str, size: u64, body: Body, store: &S, owner: &str) -> Result<(), ApiError> {
        let temp = self.tmp.join(crate::ids::new("part"));
        let mut result = self.write_temp(&temp, hash, size, body).await;
        if result.is_ok() {
            result = self.place(&temp, hash, size, store, owner, None).await.map_err(ApiError::from);
        }
        if result.is_err() {
            tokio::fs::remove_file(&temp).await.ok();
        }
        result
    }

    /// Renames a complete temporary file into the blob `hash` and lists it, under the gate.
    async fn place<S: StorageStore>(&self, temp: &std::path::Path, hash: &str, size: u64, store: &S, owner: &str, pin: Option<&Pin>) -> Result<(), StoreError> {
        let _gate = self.gate.read().await;
        let path = self.path(hash);
        let folder = path.parent().expect("blob paths have a folder").to_path_buf();
        tokio::fs::create_dir_all(&folder).await?;
        tokio::fs::rename(temp, &path).await?;
        // The rename is durable once the folder is synced.
        tokio::task::spawn_blocking(move || std::fs::File::open(folder).and_then(|f| f.sync_all())).await.map_err(std::io::Error::other)??;
        store.record_blob(hash, size as i64, crate::ids::now(), owner, pin).await
    }

    async fn write_temp(&self, temp: &std::path::Path, hash: &str, size: u64, body: Body) -> Result<(), ApiError> {
        let mut file = tokio::fs::File::create(temp).await.map_err(ApiError::internal)?;
        let (mut hasher, mut written) = (Sha256::new(), 0u64);
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| ApiError::invalid_request(format!("The upload was interrupted: {e}")))?;
            written += chunk.len() as u64;
            if written > size {
                return Err(ApiError::invalid_request(format!("The upload is larger than the {size} bytes it was prepared for")));
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(ApiError::internal)?;
        }
        if written != size {
            return Err(ApiError::invalid_request(format!("The upload has {written} bytes, not the {size} it was prepared for")));
        }
        if hex::encode(hasher.finalize()) != hash {
            return Err(ApiError::invalid_request("The upload's SHA-256 is not the hash it was prepared for"));
        }
        file.sync_all().await.map_err(ApiError::internal)?;
        Ok(())
    }

    /// Copies a local file (one a run of `owner` wrote) into the store and lists it under
    /// `pin` (its version's commit comes later); its hash and size.
    pub async fn ingest<S: StorageStore>(&self, source: &std::path::Path, store: &S, owner: &str, pin: &Pin) -> Result<(vm0_types::Sha256, u64), StoreError> {
        let temp = self.tmp.join(crate::ids::new("part"));
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
            Ok::<_, StoreError>((hash.parse().expect("a SHA-256 in hex"), size))
        }
        .await;
        if result.is_err() {
            tokio::fs::remove_file(&temp).await.ok();
        }
        result
    }

    /// Copies the blob `hash` to `target`, creating its folder.
    pub async fn copy_to(&self, hash: &str, target: &std::path::Path) -> std::io::Result<()> {
        if let Some(folder) = target.parent() {
            tokio::fs::create_dir_all(folder).await?;
        }
        tokio::fs::copy(self.path(hash), target).await.map(|_| ())
    }

    /// Removes blobs that nothing refers to and nothing pins any more.
    pub async fn collect_garbage<S: StorageStore>(&self, store: &S) {
        let now = Utc::now();
        let hashes = match store.unreferenced_blobs(now).await {
            Ok(hashes) => hashes,
            Err(error) => return tracing::warn!(%error, "blob collection failed"),
        };
        for hash in hashes {
            // Per blob, so that writers wait for one removal at most.
            let _gate = self.gate.write().await;
            match store.forget_blob(&hash, now).await {
                Ok(true) => self.remove(&hash).await,
                Ok(false) => {}
                Err(error) => tracing::warn!(%hash, %error, "could not forget an unreferenced blob"),
            }
        }
    }

    /// Removes a blob's file; a missing one is already gone.
    async fn remove(&self, hash: &str) {
        if let Err(error) = tokio::fs::remove_file(self.path(hash)).await {
            if error.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(%hash, %error, "could not remove an unreferenced blob");
            }
        }
    }
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
        let store = SqlStore::open(&format!("sqlite://{}", dir.path().join("vm0.db").display())).await.unwrap();
        let blobs = Blobs::open(dir.path(), vec![7; 32], "http://127.0.0.1:1".into(), 1 << 20).await.unwrap();
        (dir, store, blobs)
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
        assert!(blobs.path(&hash).exists(), "the pinned blob's file was collected");

        let artifact = store.create_storage(Kind::Artifact, &user.id, "results", Utc::now()).await.unwrap();
        let file = FileRow { path: "report.txt".parse().unwrap(), size: size as i64, hash: hash.clone() };
        let version = NewVersion::of(vec![file], None, "run_1".into(), Utc::now());
        store.commit_version(&artifact.id, &user.id, "", &version).await.expect("the version commits with its blob");
    }

    #[tokio::test]
    async fn an_unreferenced_blob_whose_pin_ran_out_is_collected() {
        let (dir, store, blobs) = open().await;
        let user = store.ensure_user("someone").await.unwrap();
        let source = dir.path().join("left.txt");
        std::fs::write(&source, b"nobody committed this").unwrap();
        let pin = Pin { holder: "run_1".into(), until: Utc::now() - Duration::seconds(1) };
        let (hash, _) = blobs.ingest(&source, &store, &user.id, &pin).await.unwrap();
        assert!(blobs.path(&hash).exists());
        blobs.collect_garbage(&store).await;
        assert!(!blobs.path(&hash).exists(), "an expired pin keeps nothing");
    }
}
