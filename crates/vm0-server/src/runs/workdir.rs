//! A run's working directory (`sessions/<id>/`): prepared before the run from the
//! session's state, the agent's files, the volumes and the artifact's base version; and
//! collected after a successful run into a checkpoint and the artifact's new version.
//!
//! A checkpoint is a manifest of blobs: every file of the directory except `volumes/`
//! and `artifact/` (which have versions of their own), stored by content, so a file no
//! run changed costs no new bytes. The directory itself is a cache of the checkpoint a run
//! starts from (`sessions/<id>.checkpoint` names the checkpoint the directory holds): a
//! run whose session's directory is gone, or holds another state (a failed run's, or an
//! older one when the session went on on another instance), starts from the checkpoint
//! itself. So a session continues the same on every instance.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::Utc;
use vm0_types::FilePath;

use super::config;
use super::local::Job;
use super::sandbox::Limits;
use crate::blobs::{BlobError, Blobs};
use crate::ids;
use crate::store::{
    AgentStore, CheckpointEntry, CheckpointFile, CheckpointRow, FileRow, Kind, Manifest,
    NewArtifact, NewCheckpoint, NewVersion, Pin, RunRow, RunStore, StorageStore, StoreError,
};

/// How long the blobs a run stores stay pinned at most: its end releases them, and this
/// only frees the pins of a server that died before.
const PIN: chrono::Duration = chrono::Duration::hours(24);

/// The directories of runs, over the store and blobs they are made from.
pub(super) struct Workdir<'a, S> {
    pub store: &'a S,
    pub blobs: &'a Blobs,
    pub dir: &'a Path,
    /// The operator's caps on a run's limits.
    pub caps: &'a config::RunCaps,
}

/// Why a run's working directory could not be prepared or collected: the run fails
/// with this as its error.
#[derive(Debug, thiserror::Error)]
pub(super) enum WorkdirError {
    #[error("{what}: {source}")]
    Io { what: &'static str, source: std::io::Error },
    /// The folder a volume or the artifact is copied into could not be made.
    #[error(transparent)]
    Mount(std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("The agent version of this run no longer exists")]
    AgentVersionGone,
    #[error("The agent's configuration is invalid: {0}")]
    InvalidConfig(String),
    #[error("The database gives the run's {what} as '{id}', which is not one: nothing was read")]
    NotAnId { what: &'static str, id: String },
    #[error("The checkpoint '{0}' no longer exists")]
    CheckpointGone(String),
    #[error("The {kind} '{name}' no longer has version '{version}'")]
    VersionGone { kind: &'static str, name: String, version: String },
    #[error("The artifact '{0}' was deleted during the run")]
    ArtifactDeleted(String),
    #[error("{what}: {source}")]
    Blob { what: String, source: BlobError },
    #[error("{0} is not a folder any more: the run replaced it")]
    Replaced(String),
    #[error("reading {shown}: {source}")]
    Reading { shown: String, source: std::io::Error },
    #[error("{path} cannot be stored: {reason}")]
    Unstorable { path: String, reason: String },
    #[error("{0}")]
    Paths(String),
    #[error(transparent)]
    Join(#[from] tokio::task::JoinError),
}

type Result<T> = std::result::Result<T, WorkdirError>;

/// The error of an I/O step named `what`.
fn io(what: &'static str) -> impl Fn(std::io::Error) -> WorkdirError {
    move |source| WorkdirError::Io { what, source }
}

/// The error of a blob store step named `what`.
fn blob(what: String) -> impl FnOnce(BlobError) -> WorkdirError {
    move |source| WorkdirError::Blob { what, source }
}

/// The directories of a working directory that a checkpoint leaves out.
const NOT_CHECKPOINTED: [&str; 2] = ["volumes", "artifact"];

/// The working directory of session `id` under the data directory `dir`.
pub(super) fn session_dir(dir: &Path, id: &str) -> PathBuf {
    dir.join("sessions").join(id)
}

/// The file naming the checkpoint that the working directory of session `id` holds.
fn held_checkpoint(dir: &Path, id: &str) -> PathBuf {
    dir.join("sessions").join(format!("{id}.checkpoint"))
}

/// Forgets which checkpoint the working directory of session `id` holds.
pub(super) async fn forget(dir: &Path, id: &str) {
    tokio::fs::remove_file(held_checkpoint(dir, id)).await.ok();
}

impl<S: AgentStore + StorageStore + RunStore + Sync> Workdir<'_, S> {
    async fn agent_config(&self, run: &RunRow) -> Result<config::LocalConfig> {
        let version = self.store.get_agent_version(&run.agent_id, &run.agent_version_id).await?;
        let version = version.ok_or(WorkdirError::AgentVersionGone)?;
        config::check(&version.config.0, self.caps)
            .map_err(|e| WorkdirError::InvalidConfig(e.to_string()))
    }

    /// The working directory of the run, ready, and the job that runs the agent in it.
    pub(super) async fn prepare(&self, run: &RunRow, sample_every: Duration) -> Result<Job> {
        check_ids(run)?;
        let config = self.agent_config(run).await?;
        let limits =
            config.limits(self.caps).map_err(|e| WorkdirError::InvalidConfig(e.to_string()))?;
        let workdir = session_dir(self.dir, &run.session_id);
        let start = self.start_point(run).await?;
        let held = tokio::fs::read_to_string(held_checkpoint(self.dir, &run.session_id)).await.ok();
        // From here on the directory holds no checkpoint's state, until the run's own.
        forget(self.dir, &run.session_id).await;
        if start.is_none()
            || held != start
            || !tokio::fs::try_exists(&workdir)
                .await
                .map_err(io("reading the working directory"))?
        {
            self.restore(start.as_deref(), &workdir).await?;
        }
        for (path, content) in &config.files {
            unlink_on_the_way(&workdir, path).map_err(io("writing the agent's files"))?;
            let target = workdir.join(path);
            if let Some(folder) = target.parent() {
                tokio::fs::create_dir_all(folder).await.map_err(io("writing the agent's files"))?;
            }
            tokio::fs::write(&target, content).await.map_err(io("writing the agent's files"))?;
        }
        for folder in NOT_CHECKPOINTED {
            let path = workdir.join(folder);
            if tokio::fs::try_exists(&path).await.unwrap_or(false) {
                remove_tree(&path).await.map_err(io("clearing the working directory"))?;
            }
            tokio::fs::create_dir_all(&path)
                .await
                .map_err(io("preparing the working directory"))?;
        }
        for (name, version) in &run.volumes.0 {
            self.materialize(
                Kind::Volume,
                &run.user_id,
                name,
                version,
                &workdir.join("volumes").join(name),
            )
            .await?;
        }
        if let (Some(name), Some(base)) = (&run.artifact_name, &run.artifact_base) {
            self.materialize(Kind::Artifact, &run.user_id, name, base, &workdir.join("artifact"))
                .await?;
        }
        let mut env = vec![
            ("PATH".to_string(), "/usr/local/bin:/usr/bin:/bin".to_string()),
            ("HOME".to_string(), workdir.display().to_string()),
            ("VM0_PROMPT".to_string(), run.prompt.clone()),
            ("VM0_RUN_ID".to_string(), run.id.clone()),
            ("VM0_SESSION_ID".to_string(), run.session_id.clone()),
        ];
        for map in [&run.variables.0, &run.secrets.0] {
            env.extend(map.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        Ok(Job {
            workdir,
            command: config.command,
            env,
            prompt: run.prompt.clone(),
            timeout: Duration::from_secs(limits.timeout_seconds),
            max_output: limits.max_output_bytes,
            network: config.network,
            limits: Limits {
                memory_bytes: limits.max_memory_mib << 20,
                tasks: limits.max_processes,
                cpu_seconds: limits.max_cpu_seconds,
                file_size_bytes: limits.max_file_size_mib << 20,
                disk_bytes: limits.max_disk_mib << 20,
                files: limits.max_files,
            },
            sample_every,
        })
    }

    /// The checkpoint the run starts from, which its claim read (the one it names, or its
    /// session's head); none for a session that has none.
    async fn start_point(&self, run: &RunRow) -> Result<Option<String>> {
        match &run.base_checkpoint_id {
            Some(id) => match self.store.get_checkpoint(&run.user_id, id).await? {
                Some(checkpoint) => Ok(Some(checkpoint.id)),
                None => Err(WorkdirError::CheckpointGone(id.clone())),
            },
            None => Ok(None),
        }
    }

    /// Records that the session's directory holds `checkpoint`, which its run just made.
    pub(super) async fn mark(&self, session_id: &str, checkpoint: &str) {
        if let Err(error) =
            tokio::fs::write(held_checkpoint(self.dir, session_id), checkpoint).await
        {
            // The next run of the session restores the checkpoint instead.
            tracing::warn!(
                session = %session_id,
                %error,
                "could not record the checkpoint a working directory holds"
            );
        }
    }

    /// Makes the session's directory from `checkpoint`, or empty. It is filled under a
    /// temporary name and then takes the place of the old directory, so a restore that
    /// fails leaves no half-made directory behind.
    async fn restore(&self, checkpoint: Option<&str>, workdir: &Path) -> Result<()> {
        let partial = workdir.with_extension("partial");
        if tokio::fs::try_exists(&partial).await.unwrap_or(false) {
            remove_tree(&partial).await.map_err(io("clearing a partial restore"))?;
        }
        tokio::fs::create_dir_all(&partial).await.map_err(io("creating the working directory"))?;
        if let Some(checkpoint) = checkpoint {
            // A checkpoint recorded before manifests is a copy of the directory.
            let legacy = self.dir.join("checkpoints").join(checkpoint);
            if tokio::fs::try_exists(&legacy).await.unwrap_or(false) {
                copy_dir(legacy, partial.clone()).await.map_err(io("restoring the checkpoint"))?;
            }
            let manifest = self.store.checkpoint_manifest(checkpoint).await?;
            self.lay_out(&manifest, &partial, checkpoint).await?;
        }
        if tokio::fs::try_exists(workdir).await.unwrap_or(false) {
            remove_tree(workdir).await.map_err(io("clearing the working directory"))?;
        }
        tokio::fs::rename(&partial, workdir).await.map_err(io("placing the working directory"))
    }

    /// Copies the files of a version of a volume or artifact into `target`.
    async fn materialize(
        &self,
        kind: Kind,
        user_id: &str,
        name: &str,
        version_id: &str,
        target: &Path,
    ) -> Result<()> {
        let missing = || WorkdirError::VersionGone {
            kind: kind.as_str(),
            name: name.to_string(),
            version: version_id.to_string(),
        };
        let storage = self.store.get_storage_by_name(kind, user_id, name).await?;
        let storage = storage.ok_or_else(missing)?;
        let version = self.store.get_version(&storage.id, version_id).await?.ok_or_else(missing)?;
        tokio::fs::create_dir_all(target).await.map_err(WorkdirError::Mount)?;
        for file in self.store.version_files(version.seq).await? {
            let path = file.path.as_str();
            self.blobs
                .copy_to(&file.hash, &target.join(path))
                .await
                .map_err(blob(format!("copying {name}/{path}")))?;
        }
        Ok(())
    }

    /// Makes in `root` (new and empty) the folders, files and symbolic links of a
    /// checkpoint's `manifest`, with their modes. Links come after the files, so that no
    /// file is written through one, and only those that lead inside `root` (the database
    /// is not trusted with paths); folders take their modes last, deepest first, so that
    /// one without write permission is filled first.
    async fn lay_out(&self, manifest: &Manifest, root: &Path, checkpoint: &str) -> Result<()> {
        for folder in &manifest.entries {
            if folder.target.is_none() {
                let path = root.join(folder.path.as_str());
                tokio::fs::create_dir_all(&path).await.map_err(io("restoring a folder"))?;
            }
        }
        for file in &manifest.files {
            let path = file.file.path.as_str();
            self.blobs
                .copy_to(&file.file.hash, &root.join(path))
                .await
                .map_err(blob(format!("restoring {path} of checkpoint {checkpoint}")))?;
            set_mode(&root.join(path), file.mode).await?;
        }
        for link in &manifest.entries {
            let Some(target) = &link.target else { continue };
            let path = root.join(link.path.as_str());
            // A link made earlier on its way would take it, and the folders made for it,
            // wherever that link leads.
            if !leads_inside(root, &path, Path::new(target))
                || !no_link_on_the_way(root, link.path.as_str())
            {
                tracing::warn!(%checkpoint, path = %link.path.as_str(), %target,
                    "a checkpoint's link leads outside the working directory: left out");
                continue;
            }
            if let Some(folder) = path.parent() {
                tokio::fs::create_dir_all(folder).await.map_err(io("restoring a link"))?;
            }
            tokio::fs::symlink(target, &path).await.map_err(io("restoring a link"))?;
        }
        let mut folders: Vec<_> = manifest.entries.iter().filter(|e| e.target.is_none()).collect();
        folders.sort_by_key(|f| std::cmp::Reverse(f.path.as_str().matches('/').count()));
        for folder in folders {
            set_mode(&root.join(folder.path.as_str()), folder.mode.unwrap_or(0o755)).await?;
        }
        Ok(())
    }

    /// After a successful run: the checkpoint of the session's state, and the artifact's
    /// new version, their blobs stored and pinned, to be recorded with the run's end.
    pub(super) async fn complete(&self, run: &RunRow) -> Result<Collected> {
        check_ids(run)?;
        let workdir = session_dir(self.dir, &run.session_id);
        let row = CheckpointRow {
            id: ids::new(ids::Prefix::Checkpoint),
            session_id: run.session_id.clone(),
            agent_id: run.agent_id.clone(),
        };
        let pin = Pin { holder: run.id.clone(), until: Utc::now() + PIN };
        let listing = self.list(&workdir, &NOT_CHECKPOINTED, "").await?;
        let files = self.store_files(&workdir, &listing.files, "", &run.user_id, &pin).await?;
        let mut manifest = Manifest::default();
        for (file, (_, mode)) in files.into_iter().zip(&listing.files) {
            manifest.files.push(CheckpointFile { file, mode: i64::from(*mode) });
        }
        for (path, mode) in &listing.folders {
            let path = relative(&workdir, path, "")?;
            manifest.entries.push(CheckpointEntry {
                path,
                mode: Some(i64::from(*mode)),
                target: None,
            });
        }
        for (path, target) in &listing.links {
            let path = relative(&workdir, path, "")?;
            manifest.entries.push(CheckpointEntry {
                path,
                mode: None,
                target: Some(target.clone()),
            });
        }
        let left_out = listing
            .outside
            .iter()
            .map(|(path, target)| {
                let shown = path.strip_prefix(&workdir).unwrap_or(path).display();
                format!(
                    "The symbolic link {shown} leads outside the working directory ({target}): \
                     the checkpoint leaves it out"
                )
            })
            .collect();
        let checkpoint = NewCheckpoint { row, manifest };
        let artifact = match &run.artifact_name {
            Some(name) => Some(self.artifact(run, name, &workdir, &pin).await?),
            None => None,
        };
        Ok(Collected { checkpoint, artifact, left_out })
    }

    /// The artifact's new version: the files of the working directory's `artifact/`.
    async fn artifact(
        &self,
        run: &RunRow,
        name: &str,
        workdir: &Path,
        pin: &Pin,
    ) -> Result<NewArtifact> {
        let artifact = self.store.get_storage_by_name(Kind::Artifact, &run.user_id, name).await?;
        let artifact = artifact.ok_or_else(|| WorkdirError::ArtifactDeleted(name.to_string()))?;
        let root = workdir.join("artifact");
        let listing = self.list(&root, &[], "artifact/").await?;
        let files = self.store_files(&root, &listing.files, "artifact/", &run.user_id, pin).await?;
        let version = NewVersion::of(
            files,
            Some(format!("Written by run {}", run.id)),
            run.id.clone(),
            ids::now(),
        );
        Ok(NewArtifact { storage_id: artifact.id, user_id: run.user_id.clone(), version })
    }
}

/// What a successful run leaves: its checkpoint, its artifact's version, and what the
/// checkpoint left out, in sentences for the run's log.
pub(super) struct Collected {
    pub checkpoint: NewCheckpoint,
    pub artifact: Option<NewArtifact>,
    pub left_out: Vec<String>,
}

impl<S: AgentStore + StorageStore + RunStore + Sync> Workdir<'_, S> {
    /// What is under `root` but its top-level folders `skip`; `shown` is `root` as a
    /// run's messages name it.
    async fn list(
        &self,
        root: &Path,
        skip: &'static [&'static str],
        shown: &str,
    ) -> Result<Listing> {
        // The run may have replaced the folder with a link to anywhere on the host.
        if std::fs::symlink_metadata(root).is_ok_and(|m| !m.is_dir()) {
            return Err(WorkdirError::Replaced(shown.to_string()));
        }
        let listed = {
            let root = root.to_path_buf();
            tokio::task::spawn_blocking(move || {
                let mut listing = Listing::default();
                list(&root, &root, skip, &mut listing).map(|()| listing)
            })
            .await?
        };
        listed.map_err(|source| WorkdirError::Reading { shown: shown.to_string(), source })
    }

    /// Stores each of `files` (found under `root`) as a blob, pinned until its version or
    /// checkpoint commits; their manifest, in the same order.
    async fn store_files(
        &self,
        root: &Path,
        files: &[(PathBuf, u32)],
        shown: &str,
        owner: &str,
        pin: &Pin,
    ) -> Result<Vec<FileRow>> {
        let mut rows = Vec::new();
        for (path, _) in files {
            let file_path = relative(root, path, shown)?;
            // What a client could not upload, a run cannot leave either.
            let size = tokio::fs::metadata(path).await.map(|m| m.len()).unwrap_or(0);
            if size > self.blobs.max_file_size {
                return Err(WorkdirError::Unstorable {
                    path: format!("{shown}{}", file_path.as_str()),
                    reason: format!(
                        "it holds {size} bytes, more than this server's --max-file-size of {} \
                         bytes",
                        self.blobs.max_file_size
                    ),
                });
            }
            let (hash, size) = self
                .blobs
                .ingest(path, self.store, owner, pin)
                .await
                .map_err(blob(format!("storing {shown}{}", file_path.as_str())))?;
            rows.push(FileRow { path: file_path, size: size as i64, hash });
        }
        crate::paths::check(rows.iter().map(|f| f.path.as_str()))
            .map_err(|e| WorkdirError::Paths(format!("{shown}{}", e.message)))?;
        Ok(rows)
    }
}

/// `path`, under `root`, as the relative path a manifest holds; `shown` is `root` as a
/// run's messages name it.
fn relative(root: &Path, path: &Path, shown: &str) -> Result<FilePath> {
    let relative =
        path.strip_prefix(root).expect("listed under the root").to_string_lossy().into_owned();
    relative.parse().map_err(|e: vm0_types::error::ConversionError| WorkdirError::Unstorable {
        path: format!("{shown}{relative}"),
        reason: e.to_string(),
    })
}

/// Gives `path` the permission bits of `mode`.
async fn set_mode(path: &Path, mode: i64) -> Result<()> {
    let permissions = std::fs::Permissions::from_mode(mode as u32 & PERMISSIONS);
    tokio::fs::set_permissions(path, permissions).await.map_err(io("restoring a mode"))
}

/// The bits of a mode a checkpoint keeps: the permissions, not set-user-id, set-group-id
/// or sticky.
const PERMISSIONS: u32 = 0o777;

/// What a walk of a folder found: its regular files and folders with their modes, its
/// symbolic links that lead inside it with their targets, and those that lead outside.
#[derive(Default)]
struct Listing {
    files: Vec<(PathBuf, u32)>,
    folders: Vec<(PathBuf, u32)>,
    links: Vec<(PathBuf, String)>,
    outside: Vec<(PathBuf, String)>,
}

/// Walks `dir` under `root`, but the top-level folders `skip`, depth first, into
/// `listing`. Links are not followed; anything else (a socket, a pipe, a device) is
/// left out.
fn list(root: &Path, dir: &Path, skip: &[&str], listing: &mut Listing) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        // Of the entry itself, not of what a link leads to.
        let meta = entry.metadata()?;
        let (path, mode) = (entry.path(), meta.permissions().mode() & PERMISSIONS);
        if meta.is_dir() {
            if dir == root && skip.iter().any(|s| entry.file_name() == *s) {
                continue;
            }
            listing.folders.push((path.clone(), mode));
            list(root, &path, &[], listing)?;
        } else if meta.is_file() {
            listing.files.push((path, mode));
        } else if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&path)?;
            match target.to_str() {
                Some(text) if leads_inside(root, &path, &target) => {
                    listing.links.push((path, text.to_string()))
                }
                _ => listing.outside.push((path, target.display().to_string())),
            }
        }
    }
    Ok(())
}

/// Whether the symbolic link at `link` (under `root`) to `target` leads inside `root`,
/// by its path alone: a relative target that never climbs above `root`. An absolute one
/// never does, since the working directory is somewhere else on every instance.
fn leads_inside(root: &Path, link: &Path, target: &Path) -> bool {
    use std::path::Component;
    let Some(folder) = link.parent().and_then(|p| p.strip_prefix(root).ok()) else {
        return false;
    };
    let mut depth = folder.components().count();
    for component in target.components() {
        match component {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir if depth > 0 => depth -= 1,
            _ => return false,
        }
    }
    true
}

/// Checks that the ids of `run` that name files (its session's folder, the checkpoint it
/// starts from) are ids of their kinds.
fn check_ids(run: &RunRow) -> Result<()> {
    let not = |what, id: &str| WorkdirError::NotAnId { what, id: id.to_string() };
    if !ids::is(ids::Prefix::Session, &run.session_id) {
        return Err(not("session id", &run.session_id));
    }
    match &run.base_checkpoint_id {
        Some(id) if !ids::is(ids::Prefix::Checkpoint, id) => Err(not("checkpoint id", id)),
        _ => Ok(()),
    }
}

/// Whether no folder on the way from `root` to `root/relative` (that exists) is a link.
fn no_link_on_the_way(root: &Path, relative: &str) -> bool {
    let mut path = root.to_path_buf();
    let mut segments: Vec<&str> = relative.split('/').collect();
    segments.pop();
    for segment in segments {
        path.push(segment);
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_symlink() => return false,
            Ok(_) => continue,
            Err(_) => break,
        }
    }
    true
}

/// Removes the folder `path` and everything in it, its read-only folders too (a run may
/// leave folders of mode 0555, which a server that is not root could not empty), without
/// following links.
pub(super) async fn remove_tree(path: &Path) -> std::io::Result<()> {
    fn writable(dir: &Path) -> std::io::Result<()> {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                writable(&entry.path())?;
            }
        }
        Ok(())
    }
    let dir = path.to_path_buf();
    let meta = tokio::fs::symlink_metadata(&dir).await?;
    if meta.is_dir() {
        tokio::task::spawn_blocking(move || writable(&dir))
            .await
            .map_err(std::io::Error::other)?
            .ok();
    }
    tokio::fs::remove_dir_all(path).await
}

/// Removes the links on the way from `root` to `root/relative`, the last step's too, so
/// that what is written there lands inside `root`: a run may leave links in its working
/// directory, to anywhere on the host, for the next run's preparation to write through.
fn unlink_on_the_way(root: &Path, relative: &str) -> std::io::Result<()> {
    let mut path = root.to_path_buf();
    for segment in relative.split('/') {
        path.push(segment);
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_symlink() => std::fs::remove_file(&path)?,
            Ok(meta) if meta.is_dir() => continue,
            _ => break,
        }
    }
    Ok(())
}

/// Copies a directory tree (regular files and folders) into `to`.
async fn copy_dir(from: PathBuf, to: PathBuf) -> std::io::Result<()> {
    fn copy(from: &Path, to: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(to)?;
        for entry in std::fs::read_dir(from)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                copy(&entry.path(), &to.join(entry.file_name()))?;
            } else if kind.is_file() {
                std::fs::copy(entry.path(), to.join(entry.file_name()))?;
            }
        }
        Ok(())
    }
    tokio::task::spawn_blocking(move || copy(&from, &to)).await.map_err(std::io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqlStore;

    /// A crafted manifest whose links, made one after another, would lead a later entry
    /// out of the working directory: `0/d` to `..` (the root), `a` to `0/d/..` (lexically
    /// inside, yet the root's parent through `0/d`), then `a/sub/l`, whose folder would be
    /// made outside. The entry whose way passes through a link is left out.
    #[tokio::test]
    async fn a_restored_link_never_leads_a_later_entry_outside() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqlStore::open(&format!("sqlite://{}", dir.path().join("vm0.db").display()))
            .await
            .unwrap();
        let location = crate::blobs::Location::Local;
        let blobs = Blobs::open(dir.path(), &location, vec![7; 32], "http://x".into(), 1 << 20)
            .await
            .unwrap();
        let caps = config::RunCaps::default();
        let workdir = Workdir { store: &store, blobs: &blobs, dir: dir.path(), caps: &caps };
        let link = |path: &str, target: &str| CheckpointEntry {
            path: path.parse().unwrap(),
            mode: None,
            target: Some(target.to_string()),
        };
        let folder = |path: &str| CheckpointEntry {
            path: path.parse().unwrap(),
            mode: Some(0o755),
            target: None,
        };
        let manifest = Manifest {
            files: Vec::new(),
            // In the order of their paths, as the store gives them.
            entries: vec![
                folder("0"),
                link("0/d", ".."),
                link("a", "0/d/.."),
                link("a/sub/l", "y"),
            ],
        };
        let root = dir.path().join("sessions").join("crafted");
        std::fs::create_dir_all(&root).unwrap();
        workdir.lay_out(&manifest, &root, "chk_crafted").await.unwrap();
        assert!(std::fs::symlink_metadata(root.join("0/d")).unwrap().file_type().is_symlink());
        assert!(std::fs::symlink_metadata(root.join("a")).unwrap().file_type().is_symlink());
        assert!(!dir.path().join("sessions").join("sub").exists(), "nothing made outside");
        assert!(std::fs::symlink_metadata(root.join("a/sub/l")).is_err());
    }
}
