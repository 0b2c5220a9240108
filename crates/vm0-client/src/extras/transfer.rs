//! File transfers: a directory pushed as a new version of a volume or artifact, and a
//! version pulled into a directory. Files are hashed while streaming, sent to and fetched
//! from their pre-signed URLs a few at a time, never held in memory whole, and every
//! downloaded file is checked against its size and SHA-256 before it takes its name.

use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use futures_util::{StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{error, Client, Error};
use crate::types;

/// How a transfer is going: bytes and files done so far, out of the total.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes sent or received so far.
    pub bytes: u64,
    /// Bytes in all.
    pub total_bytes: u64,
    /// Files finished so far.
    pub files: usize,
    /// Files in all.
    pub total_files: usize,
}

/// How to transfer: how many files at once, and whom to tell about progress.
#[derive(Clone)]
pub struct Transfer {
    concurrency: usize,
    progress: Option<Arc<dyn Fn(Progress) + Send + Sync>>,
}

impl Default for Transfer {
    fn default() -> Self {
        Transfer { concurrency: 4, progress: None }
    }
}

impl std::fmt::Debug for Transfer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transfer")
            .field("concurrency", &self.concurrency)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

impl Transfer {
    /// How many files move at once (default 4, at least 1).
    pub fn concurrency(mut self, files: usize) -> Self {
        self.concurrency = files.max(1);
        self
    }

    /// Called after every chunk with the byte and file counts.
    pub fn on_progress(mut self, progress: impl Fn(Progress) + Send + Sync + 'static) -> Self {
        self.progress = Some(Arc::new(progress));
        self
    }
}

/// Counters shared by the files of one transfer.
struct Meter {
    bytes: AtomicU64,
    files: AtomicUsize,
    total_bytes: u64,
    total_files: usize,
    report: Option<Arc<dyn Fn(Progress) + Send + Sync>>,
}

impl Meter {
    fn new(total_bytes: u64, total_files: usize, options: &Transfer) -> Meter {
        Meter {
            bytes: AtomicU64::new(0),
            files: AtomicUsize::new(0),
            total_bytes,
            total_files,
            report: options.progress.clone(),
        }
    }

    fn add(&self, bytes: u64, files: usize) {
        let done = self.bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        let files = self.files.fetch_add(files, Ordering::Relaxed) + files;
        if let Some(report) = &self.report {
            report(Progress {
                bytes: done,
                total_bytes: self.total_bytes,
                files,
                total_files: self.total_files,
            });
        }
    }
}

/// Volumes or artifacts: the same transfers, other paths.
#[derive(Clone, Copy)]
enum Kind {
    Volume,
    Artifact,
}

/// A local file to push.
#[derive(Clone)]
struct Local {
    path: PathBuf,
    relative: String,
    size: u64,
    hash: String,
}

/// Every regular file under `dir`, with its path relative to it (`/`-separated).
fn walk(dir: &Path, prefix: &str, out: &mut Vec<(PathBuf, String)>) -> Result<(), Error> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name().into_string().map_err(|n| {
            Error::Invalid(format!("{}: file names must be UTF-8", Path::new(&n).display()))
        })?;
        let relative = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
        let kind = entry.file_type().map_err(|e| Error::io(&entry.path(), e))?;
        if kind.is_dir() {
            walk(&entry.path(), &relative, out)?;
        } else if kind.is_file() {
            out.push((entry.path(), relative));
        }
    }
    Ok(())
}

async fn hash_file(path: &Path) -> Result<(String, u64), Error> {
    let mut file = tokio::fs::File::open(path).await.map_err(|e| Error::io(path, e))?;
    let (mut hasher, mut size, mut buffer) = (Sha256::new(), 0u64, vec![0u8; 256 * 1024]);
    loop {
        let n = file.read(&mut buffer).await.map_err(|e| Error::io(path, e))?;
        if n == 0 {
            return Ok((hex::encode(hasher.finalize()), size));
        }
        hasher.update(&buffer[..n]);
        size += n as u64;
    }
}

/// `relative` joined to `dir`, if it stays inside it: only plain path segments.
fn inside(dir: &Path, relative: &str) -> Result<PathBuf, Error> {
    let path = Path::new(relative);
    let plain =
        !relative.is_empty() && path.components().all(|c| matches!(c, Component::Normal(_)));
    if !plain || relative.contains('\\') {
        return Err(Error::Invalid(format!(
            "refusing to write {relative:?}: it would leave the target directory"
        )));
    }
    Ok(dir.join(path))
}

impl Client {
    /// Hashes the files under `dir`, prepares the upload and sends every file to its
    /// pre-signed URL; the upload session to commit.
    async fn upload(
        &self,
        kind: Kind,
        id: &str,
        dir: &Path,
        message: Option<&str>,
        options: &Transfer,
    ) -> Result<String, Error> {
        let mut found = Vec::new();
        walk(dir, "", &mut found)?;
        found.sort_by(|a, b| a.1.cmp(&b.1));
        let locals: Vec<Local> = futures_util::stream::iter(found)
            .map(|(path, relative)| async move {
                let (hash, size) = hash_file(&path).await?;
                Ok::<_, Error>(Local { path, relative, size, hash })
            })
            .buffered(options.concurrency)
            .try_collect()
            .await?;

        let mut files = Vec::with_capacity(locals.len());
        for local in &locals {
            let path = local
                .relative
                .parse()
                .map_err(|e| Error::Invalid(format!("{}: {e}", local.relative)))?;
            let hash = local
                .hash
                .parse()
                .map_err(|e| Error::Invalid(format!("{}: {e}", local.relative)))?;
            files.push(types::UploadFile { path, size: local.size as i64, hash });
        }
        let message = message
            .map(|m| m.parse())
            .transpose()
            .map_err(|e| Error::Invalid(format!("message: {e}")))?;
        let request = types::PrepareUploadRequest { files, message };
        let prepared = match kind {
            Kind::Volume => self.prepare_volume_upload().id(id).body(request).send().await?,
            Kind::Artifact => self.prepare_artifact_upload().id(id).body(request).send().await?,
        }
        .into_inner();

        let meter =
            Arc::new(Meter::new(locals.iter().map(|l| l.size).sum(), locals.len(), options));
        // Owned, not borrowed from `locals`: a future holding borrows through the stream's
        // closure is not `Send` (rust-lang/rust#102211), and an MCP server's tasks must be.
        let jobs: Vec<(String, Local)> = prepared
            .files
            .iter()
            .map(|target| {
                let local = locals.iter().find(|l| l.relative == target.path.as_str());
                local.map(|l| (target.upload_url.clone(), l.clone())).ok_or_else(|| {
                    Error::Invalid(format!(
                        "the server asked for {}, which was not offered",
                        target.path.as_str()
                    ))
                })
            })
            .collect::<Result<_, _>>()?;
        futures_util::stream::iter(jobs)
            .map(|(url, local)| {
                let meter = meter.clone();
                async move {
                    let file = tokio::fs::File::open(&local.path)
                        .await
                        .map_err(|e| Error::io(&local.path, e))?;
                    let counter = meter.clone();
                    let chunks = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024)
                        .inspect(move |chunk| {
                            if let Ok(chunk) = chunk {
                                counter.add(chunk.len() as u64, 0);
                            }
                        });
                    let request = self
                        .http()
                        .put(&url)
                        .header(reqwest::header::CONTENT_LENGTH, local.size)
                        .body(reqwest::Body::wrap_stream(chunks));
                    let response = request.send().await?;
                    if !response.status().is_success() {
                        return Err(error::from_response(response).await);
                    }
                    meter.add(0, 1);
                    Ok(())
                }
            })
            .buffer_unordered(options.concurrency)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(prepared.upload_session_id)
    }

    /// Downloads every file of `download` into `dir`, checking each one's size and hash.
    async fn fetch(
        &self,
        download: types::DownloadResponse,
        dir: &Path,
        options: &Transfer,
    ) -> Result<types::DownloadResponse, Error> {
        let targets = download
            .files
            .iter()
            .map(|f| inside(dir, f.path.as_str()).map(|t| (f.clone(), t)))
            .collect::<Result<Vec<_>, _>>()?;
        // The directory exists afterwards even when the version has no files.
        tokio::fs::create_dir_all(dir).await.map_err(|e| Error::io(dir, e))?;
        let meter = Arc::new(Meter::new(
            download.files.iter().map(|f| f.size as u64).sum(),
            download.files.len(),
            options,
        ));
        futures_util::stream::iter(targets)
            .map(|(file, target)| {
                let meter = meter.clone();
                async move {
                    let folder = make_folders(dir, &target).await?;
                    let partial = folder.join(format!(
                        ".{}.vm0-partial",
                        target.file_name().expect("a file name").to_string_lossy()
                    ));
                    let result = download_one(self, &file, &partial, &meter).await;
                    match result {
                        Ok(()) => tokio::fs::rename(&partial, &target)
                            .await
                            .map_err(|e| Error::io(&target, e)),
                        Err(error) => {
                            tokio::fs::remove_file(&partial).await.ok();
                            Err(error)
                        }
                    }
                }
            })
            .buffer_unordered(options.concurrency)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(download)
    }

    /// Pushes the files under `dir` as the volume's new version.
    pub async fn push_volume(
        &self,
        volume_id: &str,
        dir: &Path,
        message: Option<&str>,
        options: &Transfer,
    ) -> Result<types::VolumeVersion, Error> {
        let session = self.upload(Kind::Volume, volume_id, dir, message, options).await?;
        let body = types::CommitUploadRequest {
            upload_session_id: session.parse().map_err(|e| Error::Invalid(format!("{e}")))?,
            message: None,
        };
        Ok(self.commit_volume_upload().id(volume_id).body(body).send().await?.into_inner())
    }

    /// Pushes the files under `dir` as the artifact's new version.
    pub async fn push_artifact(
        &self,
        artifact_id: &str,
        dir: &Path,
        message: Option<&str>,
        options: &Transfer,
    ) -> Result<types::ArtifactVersion, Error> {
        let session = self.upload(Kind::Artifact, artifact_id, dir, message, options).await?;
        let body = types::CommitUploadRequest {
            upload_session_id: session.parse().map_err(|e| Error::Invalid(format!("{e}")))?,
            message: None,
        };
        Ok(self.commit_artifact_upload().id(artifact_id).body(body).send().await?.into_inner())
    }

    /// Pulls a version of the volume (the current one when `version` is none) into `dir`;
    /// every file is checked against its size and SHA-256 before it takes its name.
    pub async fn pull_volume(
        &self,
        volume_id: &str,
        version: Option<&str>,
        dir: &Path,
        options: &Transfer,
    ) -> Result<types::DownloadResponse, Error> {
        let mut request = self.download_volume().id(volume_id);
        if let Some(version) = version {
            request = request.version_id(version);
        }
        self.fetch(request.send().await?.into_inner(), dir, options).await
    }

    /// Pulls a version of the artifact into `dir`, like [`Client::pull_volume`].
    pub async fn pull_artifact(
        &self,
        artifact_id: &str,
        version: Option<&str>,
        dir: &Path,
        options: &Transfer,
    ) -> Result<types::DownloadResponse, Error> {
        let mut request = self.download_artifact().id(artifact_id);
        if let Some(version) = version {
            request = request.version_id(version);
        }
        self.fetch(request.send().await?.into_inner(), dir, options).await
    }
}

/// Makes the folders from `dir` down to `target`'s, refusing any that is a symbolic link
/// or a file: a pull never writes outside `dir` through a link planted inside it, with or
/// without `--force`. `target`'s folder.
async fn make_folders(dir: &Path, target: &Path) -> Result<PathBuf, Error> {
    let folder = target.parent().expect("a joined path has a folder");
    let mut current = dir.to_path_buf();
    for component in folder.strip_prefix(dir).expect("targets are inside dir").components() {
        current.push(component);
        loop {
            match tokio::fs::symlink_metadata(&current).await {
                Ok(meta) if meta.file_type().is_symlink() => {
                    return Err(Error::Invalid(format!(
                        "refusing to write through {}: it is a symbolic link",
                        current.display()
                    )));
                }
                Ok(meta) if meta.is_dir() => break,
                Ok(_) => {
                    return Err(Error::Invalid(format!(
                        "refusing to replace {}: it is a file, and the version has a folder there",
                        current.display()
                    )))
                }
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                    match tokio::fs::create_dir(&current).await {
                        // Another download of the same pull may make it first: look again.
                        Ok(()) => break,
                        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => continue,
                        Err(error) => return Err(Error::io(&current, error)),
                    }
                }
                Err(error) => return Err(Error::io(&current, error)),
            }
        }
    }
    Ok(folder.to_path_buf())
}

async fn download_one(
    client: &Client,
    file: &types::DownloadFile,
    partial: &Path,
    meter: &Meter,
) -> Result<(), Error> {
    let response = client.http().get(&file.download_url).send().await?;
    if !response.status().is_success() {
        return Err(error::from_response(response).await);
    }
    // A stale partial file, or a link planted in its place, is removed rather than
    // followed; the new one is created only if nothing is there (O_EXCL follows no link).
    tokio::fs::remove_file(partial).await.ok();
    let mut output = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(partial)
        .await
        .map_err(|e| Error::io(partial, e))?;
    let (mut hasher, mut size) = (Sha256::new(), 0u64);
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        size += chunk.len() as u64;
        if size > file.size as u64 {
            return Err(Error::Integrity {
                path: file.path.to_string(),
                message: format!("more than the {} bytes announced", file.size),
            });
        }
        hasher.update(&chunk);
        output.write_all(&chunk).await.map_err(|e| Error::io(partial, e))?;
        meter.add(chunk.len() as u64, 0);
    }
    output.flush().await.map_err(|e| Error::io(partial, e))?;
    if size != file.size as u64 {
        return Err(Error::Integrity {
            path: file.path.to_string(),
            message: format!("{size} bytes received, {} announced", file.size),
        });
    }
    let hash = hex::encode(hasher.finalize());
    if hash != file.hash.as_str() {
        return Err(Error::Integrity {
            path: file.path.to_string(),
            message: format!("SHA-256 {hash} does not match the announced {}", file.hash.as_str()),
        });
    }
    meter.add(0, 1);
    Ok(())
}
