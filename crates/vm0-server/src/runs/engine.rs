//! The runs engine: a FIFO scheduler with a concurrency limit, and the life of one run.
//! A run executes in its session's working directory (`sessions/<id>/`), with its volumes
//! under `volumes/<name>/` and its artifact under `artifact/`; a completed run records a
//! checkpoint (a copy of the directory under `checkpoints/<id>/`) and the artifact's new
//! version. Everything the run says goes through `record` and `log`, which replace its
//! secrets' values with `***`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::{mpsc, watch, Notify, Semaphore};

use super::config;
use super::local::{Executor, Job, Outcome, Output};
use crate::api::{manifest_id, App};
use crate::ids;
use crate::store::{CheckpointRow, FileRow, Kind, LogRow, NewVersion, RunEnd, RunRow, Store};

/// The engine's state, shared by the scheduler, the runs and the API.
pub struct Engine {
    executor: Arc<dyn Executor>,
    wake: Notify,
    slots: Arc<Semaphore>,
    /// Cancel switches of the runs executing now.
    cancels: Mutex<HashMap<String, watch::Sender<bool>>>,
    /// The last event id of each run that may still get events.
    feeds: Mutex<HashMap<String, watch::Sender<i64>>>,
    dir: PathBuf,
    sample_every: Duration,
}

/// How many runs execute at once, and how often they are sampled.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub concurrency: usize,
    pub sample_every: Duration,
}

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);

impl Engine {
    pub fn new(data_dir: &Path, executor: Arc<dyn Executor>, limits: Limits) -> Engine {
        Engine {
            executor,
            wake: Notify::new(),
            slots: Arc::new(Semaphore::new(limits.concurrency.max(1))),
            cancels: Mutex::default(),
            feeds: Mutex::default(),
            dir: data_dir.to_path_buf(),
            sample_every: limits.sample_every,
        }
    }

    /// Tells the scheduler a run is waiting.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Asks an executing run to stop; false when it is not executing here.
    pub fn cancel(&self, run_id: &str) -> bool {
        self.cancels.lock().expect("not poisoned").get(run_id).map(|switch| switch.send(true).is_ok()).unwrap_or(false)
    }

    /// Notifications of a run's new events, while it may still get some.
    pub fn subscribe(&self, run_id: &str) -> Option<watch::Receiver<i64>> {
        self.feeds.lock().expect("not poisoned").get(run_id).map(watch::Sender::subscribe)
    }

    fn session_dir(&self, id: &str) -> PathBuf {
        self.dir.join("sessions").join(id)
    }

    fn checkpoint_dir(&self, id: &str) -> PathBuf {
        self.dir.join("checkpoints").join(id)
    }
}

/// `text` with the value of every secret replaced by `***`.
pub fn redact(text: &str, secrets: &[String]) -> String {
    secrets.iter().filter(|s| !s.is_empty()).fold(text.to_string(), |text, secret| text.replace(secret.as_str(), "***"))
}

fn redact_value(value: &Value, secrets: &[String]) -> Value {
    match value {
        Value::String(text) => Value::String(redact(text, secrets)),
        Value::Array(items) => Value::Array(items.iter().map(|v| redact_value(v, secrets)).collect()),
        Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), redact_value(v, secrets))).collect()),
        other => other.clone(),
    }
}

pub fn secret_values(run: &RunRow) -> Vec<String> {
    let mut values: Vec<String> = run.secrets.as_object().into_iter().flatten().filter_map(|(_, v)| v.as_str().map(str::to_string)).collect();
    // Longest first, so a secret that contains another is replaced whole.
    values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    values
}

/// Stores an event of the run, with its secrets redacted, and wakes its subscribers.
pub async fn record<S: Store>(app: &App<S>, run_id: &str, secrets: &[String], event: &str, data: Value) {
    match app.store.append_event(run_id, event, &redact_value(&data, secrets)).await {
        Ok(id) => {
            let mut feeds = app.engine.feeds.lock().expect("not poisoned");
            let feed = feeds.entry(run_id.to_string()).or_insert_with(|| watch::channel(0).0);
            feed.send_replace(id);
        }
        Err(error) => tracing::error!(run = run_id, ?error, "could not store a run event"),
    }
}

/// Stores a log entry of the run, with its secrets redacted.
pub async fn log<S: Store>(app: &App<S>, run_id: &str, secrets: &[String], kind: &str, level: &str, message: &str, metadata: Value) {
    let row = LogRow {
        seq: 0,
        timestamp: ids::now(),
        kind: kind.into(),
        level: level.into(),
        message: redact(message, secrets),
        metadata: redact_value(&metadata, secrets),
    };
    if let Err(error) = app.store.append_log(run_id, &row).await {
        tracing::error!(run = run_id, ?error, "could not store a run log");
    }
}

/// Ends a run: its row, its final status and `complete` events, a system log, and the
/// end of its feed.
pub async fn finish<S: Store>(app: &App<S>, run: &RunRow, end: RunEnd, checkpoint: Option<CheckpointRow>, secrets: &[String]) -> bool {
    let end = RunEnd { error: end.error.map(|e| redact(&e, secrets)), ..end };
    match app.store.end_run(&run.id, &end, checkpoint.as_ref()).await {
        Ok(true) => {}
        Ok(false) => return false,
        Err(error) => {
            tracing::error!(run = %run.id, ?error, "could not end a run");
            return false;
        }
    }
    announce_end(app, &run.id, &end, secrets).await;
    true
}

/// The events and log of an ended run.
pub async fn announce_end<S: Store>(app: &App<S>, run_id: &str, end: &RunEnd, secrets: &[String]) {
    if let Some(error) = &end.error {
        record(app, run_id, secrets, "error", json!({ "message": error })).await;
    }
    record(app, run_id, secrets, "status", json!({ "status": end.status })).await;
    let level = if end.status == "completed" { "info" } else { "error" };
    let message = match &end.error {
        Some(error) => format!("Run {}: {error}", end.status),
        None => format!("Run {}", end.status),
    };
    log(app, run_id, secrets, "system", level, &message, json!({ "status": end.status })).await;
    record(app, run_id, secrets, "complete", json!({ "status": end.status, "executionTimeMs": end.execution_time_ms })).await;
    app.engine.feeds.lock().expect("not poisoned").remove(run_id);
}

/// Ends the runs a previous process left running; pending runs wait for the scheduler.
pub async fn recover<S: Store>(app: &App<S>) {
    let Ok(running) = app.store.running_runs().await else { return };
    for id in running {
        let end = RunEnd {
            status: "failed".into(),
            error: Some("The server stopped while the run was running".into()),
            execution_time_ms: None,
            completed_at: ids::now(),
            checkpoint_id: None,
            artifact_version: None,
        };
        if let Ok(true) = app.store.end_run(&id, &end, None).await {
            announce_end(app, &id, &end, &[]).await;
        }
    }
}

/// Starts pending runs, oldest first, as slots free up; runs until the process ends.
pub async fn schedule<S: Store>(app: Arc<App<S>>) {
    loop {
        let permit = app.engine.slots.clone().acquire_owned().await.expect("the semaphore is never closed");
        let next = match app.store.next_pending_run().await {
            Ok(next) => next,
            Err(error) => {
                tracing::error!(?error, "could not read pending runs");
                None
            }
        };
        let Some(run) = next else {
            drop(permit);
            // A new run wakes the scheduler; the timeout only guards against a lost wake-up.
            tokio::time::timeout(Duration::from_secs(1), app.engine.wake.notified()).await.ok();
            continue;
        };
        let (switch, cancelled) = watch::channel(false);
        app.engine.cancels.lock().expect("not poisoned").insert(run.id.clone(), switch);
        match app.store.start_run(&run.id, ids::now()).await {
            Ok(true) => {
                let app = app.clone();
                tokio::spawn(async move {
                    let id = run.id.clone();
                    execute(&app, run, cancelled).await;
                    app.engine.cancels.lock().expect("not poisoned").remove(&id);
                    drop(permit);
                });
            }
            _ => {
                app.engine.cancels.lock().expect("not poisoned").remove(&run.id);
            }
        }
    }
}

/// The life of one started run.
async fn execute<S: Store>(app: &App<S>, run: RunRow, cancelled: watch::Receiver<bool>) {
    let secrets = secret_values(&run);
    record(app, &run.id, &secrets, "status", json!({ "status": "running" })).await;
    log(app, &run.id, &secrets, "system", "info", "Run started", json!({ "status": "running", "sessionId": run.session_id })).await;
    let started = Instant::now();
    let outcome = match prepare(app, &run).await {
        Ok(job) => {
            let (sender, mut receiver) = mpsc::unbounded_channel();
            let execution = app.engine.executor.execute(job, sender, cancelled);
            tokio::pin!(execution);
            loop {
                tokio::select! {
                    Some(output) = receiver.recv() => handle_output(app, &run.id, &secrets, output).await,
                    outcome = &mut execution => {
                        while let Ok(output) = receiver.try_recv() {
                            handle_output(app, &run.id, &secrets, output).await;
                        }
                        break outcome;
                    }
                }
            }
        }
        Err(message) => Outcome::Failed(message),
    };
    let elapsed = started.elapsed().as_millis() as i64;
    let (mut status, mut error) = match outcome {
        Outcome::Exited(0) => ("completed", None),
        Outcome::Exited(code) => ("failed", Some(format!("The agent exited with status {code}"))),
        Outcome::Killed(signal) => ("failed", Some(format!("The agent was killed by signal {signal}"))),
        Outcome::TimedOut => ("timeout", Some(format!("The run exceeded its timeout of {} seconds", timeout_of(&run, app).await.as_secs()))),
        Outcome::Cancelled => ("cancelled", Some("Cancelled by request".to_string())),
        Outcome::Failed(message) => ("failed", Some(message)),
    };
    let (mut checkpoint, mut artifact_version) = (None, None);
    if status == "completed" {
        match complete(app, &run).await {
            Ok((c, a)) => (checkpoint, artifact_version) = (Some(c), a),
            Err(message) => (status, error) = ("failed", Some(message)),
        }
    }
    let end = RunEnd {
        status: status.into(),
        error,
        execution_time_ms: Some(elapsed),
        completed_at: ids::now(),
        checkpoint_id: checkpoint.as_ref().map(|c: &CheckpointRow| c.id.clone()),
        artifact_version,
    };
    finish(app, &run, end, checkpoint, &secrets).await;
}

async fn handle_output<S: Store>(app: &App<S>, run_id: &str, secrets: &[String], output: Output) {
    match output {
        Output::Line { stderr, text } => {
            record(app, run_id, secrets, "output", json!({ "content": text })).await;
            let (level, stream) = if stderr { ("warn", "stderr") } else { ("info", "stdout") };
            log(app, run_id, secrets, "agent", level, &text, json!({ "stream": stream })).await;
        }
        Output::Sample(sample) => {
            if let Err(error) = app.store.append_metric(run_id, &sample).await {
                tracing::warn!(run = run_id, ?error, "could not store a metrics sample");
            }
        }
    }
}

async fn agent_config<S: Store>(app: &App<S>, run: &RunRow) -> Result<config::LocalConfig, String> {
    let version = app.store.get_agent_version(&run.agent_id, &run.agent_version_id).await.map_err(|e| format!("{e:?}"))?;
    let version = version.ok_or("The agent version of this run no longer exists")?;
    config::check(&version.config).map_err(|e| format!("The agent's configuration is invalid: {}", e.message))
}

async fn timeout_of<S: Store>(run: &RunRow, app: &App<S>) -> Duration {
    agent_config(app, run).await.ok().and_then(|c| c.timeout_seconds).map(Duration::from_secs).unwrap_or(DEFAULT_TIMEOUT)
}

/// The working directory of the run, ready: the session's state (from its checkpoint for
/// a new session), the agent's files, the volumes and the artifact's base version.
async fn prepare<S: Store>(app: &App<S>, run: &RunRow) -> Result<Job, String> {
    let config = agent_config(app, run).await?;
    let workdir = app.engine.session_dir(&run.session_id);
    let io = |what: &str| {
        let what = what.to_string();
        move |e: std::io::Error| format!("{what}: {e}")
    };
    if !workdir.exists() {
        match &run.from_checkpoint {
            Some(checkpoint) => copy_dir(&app.engine.checkpoint_dir(checkpoint), &workdir).await.map_err(io("restoring the checkpoint"))?,
            None => tokio::fs::create_dir_all(&workdir).await.map_err(io("creating the working directory"))?,
        }
    }
    for (path, content) in &config.files {
        let target = workdir.join(path);
        if let Some(folder) = target.parent() {
            tokio::fs::create_dir_all(folder).await.map_err(io("writing the agent's files"))?;
        }
        tokio::fs::write(&target, content).await.map_err(io("writing the agent's files"))?;
    }
    for folder in ["volumes", "artifact"] {
        let path = workdir.join(folder);
        if path.exists() {
            tokio::fs::remove_dir_all(&path).await.map_err(io("clearing the working directory"))?;
        }
        tokio::fs::create_dir_all(&path).await.map_err(io("preparing the working directory"))?;
    }
    for (name, version) in run.volumes.as_object().into_iter().flatten() {
        let version = version.as_str().unwrap_or_default();
        materialize(app, Kind::Volume, &run.user_id, name, version, &workdir.join("volumes").join(name)).await?;
    }
    if let (Some(name), Some(base)) = (&run.artifact_name, &run.artifact_base) {
        materialize(app, Kind::Artifact, &run.user_id, name, base, &workdir.join("artifact")).await?;
    }
    let mut env = vec![
        ("PATH".to_string(), "/usr/local/bin:/usr/bin:/bin".to_string()),
        ("HOME".to_string(), workdir.display().to_string()),
        ("VM0_PROMPT".to_string(), run.prompt.clone()),
        ("VM0_RUN_ID".to_string(), run.id.clone()),
        ("VM0_SESSION_ID".to_string(), run.session_id.clone()),
    ];
    for map in [&run.variables, &run.secrets] {
        env.extend(map.as_object().into_iter().flatten().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())));
    }
    Ok(Job {
        workdir,
        command: config.command,
        env,
        prompt: run.prompt.clone(),
        timeout: config.timeout_seconds.map(Duration::from_secs).unwrap_or(DEFAULT_TIMEOUT),
        sample_every: app.engine.sample_every,
    })
}

/// Copies the files of a version of a volume or artifact into `target`.
async fn materialize<S: Store>(app: &App<S>, kind: Kind, user_id: &str, name: &str, version_id: &str, target: &Path) -> Result<(), String> {
    let missing = || format!("The {} '{name}' no longer has version '{version_id}'", kind.as_str());
    let storage = app.store.get_storage_by_name(kind, user_id, name).await.map_err(|e| format!("{e:?}"))?.ok_or_else(missing)?;
    let version = app.store.get_version(&storage.id, version_id).await.map_err(|e| format!("{e:?}"))?.ok_or_else(missing)?;
    tokio::fs::create_dir_all(target).await.map_err(|e| e.to_string())?;
    for file in app.store.version_files(version.seq).await.map_err(|e| format!("{e:?}"))? {
        app.blobs.copy_to(&file.hash, &target.join(&file.path)).await.map_err(|e| format!("copying {name}/{}: {e}", file.path))?;
    }
    Ok(())
}

/// After a successful run: the checkpoint of the session's state, and the artifact's new
/// version.
async fn complete<S: Store>(app: &App<S>, run: &RunRow) -> Result<(CheckpointRow, Option<String>), String> {
    let workdir = app.engine.session_dir(&run.session_id);
    let checkpoint = CheckpointRow { id: ids::new("chk"), session_id: run.session_id.clone(), agent_id: run.agent_id.clone() };
    let snapshot = app.engine.checkpoint_dir(&checkpoint.id);
    copy_dir(&workdir, &snapshot).await.map_err(|e| format!("recording the checkpoint: {e}"))?;
    let Some(name) = &run.artifact_name else { return Ok((checkpoint, None)) };
    let artifact = app.store.get_storage_by_name(Kind::Artifact, &run.user_id, name).await.map_err(|e| format!("{e:?}"))?;
    let artifact = artifact.ok_or_else(|| format!("The artifact '{name}' was deleted during the run"))?;
    let mut files = Vec::new();
    for path in list_files(&workdir.join("artifact")).map_err(|e| format!("reading artifact/: {e}"))? {
        let relative = path.strip_prefix(workdir.join("artifact")).expect("listed under artifact/").to_string_lossy().into_owned();
        let (hash, size) = app.blobs.ingest(&path).await.map_err(|e| format!("storing artifact/{relative}: {e}"))?;
        app.store.record_blob(&hash, size as i64, ids::now()).await.map_err(|e| format!("{e:?}"))?;
        files.push(FileRow { path: relative, size: size as i64, hash });
    }
    let version =
        NewVersion { id: manifest_id(&files), message: Some(format!("Written by run {}", run.id)), created_by: run.id.clone(), created_at: ids::now(), files };
    let committed = app.store.commit_version(&artifact.id, "", &version).await.map_err(|e| format!("committing the artifact: {e:?}"))?;
    Ok((checkpoint, Some(committed.id)))
}

/// Every regular file under `dir`, depth first. Links are not followed.
fn list_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            out.extend(list_files(&entry.path())?);
        } else if kind.is_file() {
            out.push(entry.path());
        }
    }
    Ok(out)
}

/// Copies a directory tree (regular files and folders), into a temporary name first so
/// that `to` appears complete or not at all.
async fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    let (from, to) = (from.to_path_buf(), to.to_path_buf());
    tokio::task::spawn_blocking(move || {
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
        let partial = to.with_extension("partial");
        if partial.exists() {
            std::fs::remove_dir_all(&partial)?;
        }
        copy(&from, &partial)?;
        std::fs::rename(&partial, &to)
    })
    .await
    .map_err(std::io::Error::other)?
}
