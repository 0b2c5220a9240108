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

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::Utc;

use super::config;
use super::local::Job;
use super::sandbox::Limits;
use crate::blobs::{BlobError, Blobs};
use crate::ids;
use crate::store::{
    AgentStore, CheckpointRow, FileRow, Kind, NewCheckpoint, NewVersion, Pin, RunRow, RunStore,
    StorageStore, StoreError,
};

/// How much an agent may print when its configuration does not say.
const DEFAULT_MAX_OUTPUT: u64 = 64 * 1024 * 1024;
/// How long an agent may run when its configuration does not say.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);
/// How long the blobs a run stores stay pinned at most: its end releases them, and this
/// only frees the pins of a server that died before.
const PIN: chrono::Duration = chrono::Duration::hours(24);

/// The directories of runs, over the store and blobs they are made from.
pub(super) struct Workdir<'a, S> {
    pub store: &'a S,
    pub blobs: &'a Blobs,
    pub dir: &'a Path,
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
    #[error("The checkpoint '{0}' no longer exists")]
    CheckpointGone(String),
    #[error("The {kind} '{name}' no longer has version '{version}'")]
    VersionGone { kind: &'static str, name: String, version: String },
    #[error("The artifact '{0}' was deleted during the run")]
    ArtifactDeleted(String),
    #[error("{what}: {source}")]
    Blob { what: String, source: BlobError },
    #[error("committing the artifact: {0}")]
    Commit(StoreError),
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
        config::check(&version.config.0).map_err(|e| WorkdirError::InvalidConfig(e.to_string()))
    }

    /// The working directory of the run, ready, and the job that runs the agent in it.
    pub(super) async fn prepare(&self, run: &RunRow, sample_every: Duration) -> Result<Job> {
        let config = self.agent_config(run).await?;
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
                tokio::fs::remove_dir_all(&path)
                    .await
                    .map_err(io("clearing the working directory"))?;
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
            timeout: config.timeout_seconds.map(Duration::from_secs).unwrap_or(DEFAULT_TIMEOUT),
            max_output: config.max_output_bytes.unwrap_or(DEFAULT_MAX_OUTPUT),
            network: config.network,
            limits: Limits {
                memory_bytes: config.max_memory_mib.unwrap_or(2048) << 20,
                tasks: config.max_processes.unwrap_or(512),
                cpu_seconds: config.max_cpu_seconds.unwrap_or(3600),
                file_size_bytes: config.max_file_size_mib.unwrap_or(1024) << 20,
                disk_bytes: config.max_disk_mib.unwrap_or(8192) << 20,
                files: config.max_files.unwrap_or(100_000),
            },
            sample_every,
        })
    }

    /// The checkpoint the run starts from: the one it names, or its session's latest;
    /// none for a session that has none.
    async fn start_point(&self, run: &RunRow) -> Result<Option<String>> {
        match &run.from_checkpoint {
            Some(id) => match self.store.get_checkpoint(&run.user_id, id).await? {
                Some(checkpoint) => Ok(Some(checkpoint.id)),
                None => Err(WorkdirError::CheckpointGone(id.clone())),
            },
            None => Ok(self.store.head_checkpoint(&run.session_id).await?),
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
            tokio::fs::remove_dir_all(&partial).await.map_err(io("clearing a partial restore"))?;
        }
        tokio::fs::create_dir_all(&partial).await.map_err(io("creating the working directory"))?;
        if let Some(checkpoint) = checkpoint {
            // A checkpoint recorded before manifests is a copy of the directory.
            let legacy = self.dir.join("checkpoints").join(checkpoint);
            if tokio::fs::try_exists(&legacy).await.unwrap_or(false) {
                copy_dir(legacy, partial.clone()).await.map_err(io("restoring the checkpoint"))?;
            }
            for file in self.store.checkpoint_files(checkpoint).await? {
                let path = file.path.as_str();
                self.blobs
                    .copy_to(&file.hash, &partial.join(path))
                    .await
                    .map_err(blob(format!("restoring {path} of checkpoint {checkpoint}")))?;
            }
        }
        if tokio::fs::try_exists(workdir).await.unwrap_or(false) {
            tokio::fs::remove_dir_all(workdir)
                .await
                .map_err(io("clearing the working directory"))?;
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

    /// After a successful run: the checkpoint of the session's state, and the artifact's
    /// new version.
    pub(super) async fn complete(&self, run: &RunRow) -> Result<(NewCheckpoint, Option<String>)> {
        let workdir = session_dir(self.dir, &run.session_id);
        let row = CheckpointRow {
            id: ids::new(ids::Prefix::Checkpoint),
            session_id: run.session_id.clone(),
            agent_id: run.agent_id.clone(),
        };
        let pin = Pin { holder: run.id.clone(), until: Utc::now() + PIN };
        let checkpoint = NewCheckpoint {
            row,
            files: self.store_files(&workdir, &NOT_CHECKPOINTED, "", &run.user_id, &pin).await?,
        };
        let Some(name) = &run.artifact_name else { return Ok((checkpoint, None)) };
        let artifact = self.store.get_storage_by_name(Kind::Artifact, &run.user_id, name).await?;
        let artifact = artifact.ok_or_else(|| WorkdirError::ArtifactDeleted(name.clone()))?;
        let files = self
            .store_files(&workdir.join("artifact"), &[], "artifact/", &run.user_id, &pin)
            .await?;
        let version = NewVersion::of(
            files,
            Some(format!("Written by run {}", run.id)),
            run.id.clone(),
            ids::now(),
        );
        let committed = self
            .store
            .commit_version(&artifact.id, &run.user_id, "", &version)
            .await
            .map_err(WorkdirError::Commit)?;
        Ok((checkpoint, Some(committed.id)))
    }
}

impl<S: AgentStore + StorageStore + RunStore + Sync> Workdir<'_, S> {
    /// Stores every regular file under `root` (but the top-level folders `skip`) as a
    /// blob, pinned until its version or checkpoint commits; their manifest. `shown` is
    /// `root` as a run's messages name it.
    async fn store_files(
        &self,
        root: &Path,
        skip: &'static [&'static str],
        shown: &str,
        owner: &str,
        pin: &Pin,
    ) -> Result<Vec<FileRow>> {
        // The run may have replaced the folder with a link to anywhere on the host.
        if std::fs::symlink_metadata(root).is_ok_and(|m| !m.is_dir()) {
            return Err(WorkdirError::Replaced(shown.to_string()));
        }
        let listed = {
            let root = root.to_path_buf();
            tokio::task::spawn_blocking(move || list_files(&root, skip)).await?
        };
        let listed =
            listed.map_err(|source| WorkdirError::Reading { shown: shown.to_string(), source });
        let mut files = Vec::new();
        for path in listed? {
            let relative = path
                .strip_prefix(root)
                .expect("listed under the root")
                .to_string_lossy()
                .into_owned();
            let file_path = relative.parse().map_err(|e: vm0_types::error::ConversionError| {
                WorkdirError::Unstorable {
                    path: format!("{shown}{relative}"),
                    reason: e.to_string(),
                }
            })?;
            let (hash, size) = self
                .blobs
                .ingest(&path, self.store, owner, pin)
                .await
                .map_err(blob(format!("storing {shown}{relative}")))?;
            files.push(FileRow { path: file_path, size: size as i64, hash });
        }
        crate::paths::check(files.iter().map(|f| f.path.as_str()))
            .map_err(|e| WorkdirError::Paths(format!("{shown}{}", e.message)))?;
        Ok(files)
    }
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

/// Every regular file under `dir` but its top-level folders `skip`, depth first. Links
/// are not followed.
fn list_files(dir: &Path, skip: &[&str]) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() && !skip.iter().any(|s| entry.file_name() == *s) {
            out.extend(list_files(&entry.path(), &[])?);
        } else if kind.is_file() {
            out.push(entry.path());
        }
    }
    Ok(out)
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
