//! The runs engine: a FIFO scheduler with a concurrency limit, and the life of one run,
//! executed by an `Executor` (`local.rs`) in a working directory that `workdir.rs`
//! prepares and collects. Everything a run says goes through its `Journal`
//! (`recorder.rs`), which masks its secrets and stores it in batches. `config.rs` is the
//! executor's agent configuration.
//!
//! The engine owns what it needs (the store, the blobs, the executor) and knows nothing
//! of HTTP: the API layer above calls `submitted`, `cancel` and `subscribe`.

pub(crate) mod config;
pub(crate) mod local;
mod recorder;
pub(crate) mod sandbox;
mod workdir;

use std::collections::HashMap;

use crate::secrets::Sealer;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use sqlx::types::Json;
use tokio::sync::{mpsc, watch, Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use vm0_types::{self as types, LogLevel, LogType, RunStatus};

pub(crate) use recorder::{Journal, Subscription};

use crate::blobs::Blobs;
use crate::ids;
use crate::metrics::Metrics;
use crate::store::{
    event_row, Batch, EventData, Expired, Lease, LogRow, NewCheckpoint, RunEnd, RunRow, Store,
};
use local::{Executor, Outcome, Output};
use recorder::Recorder;

/// How many runs execute at once, how often they are sampled, and how long sessions and
/// checkpoints are kept.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub concurrency: usize,
    pub sample_every: Duration,
    /// Checkpoints older than this are deleted, and sessions unused for this long expire.
    pub retention: Duration,
}

/// How often the retention sweep runs.
const SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// How long a cancel waits for the run's end to be recorded before it answers.
const CANCEL_WAIT: Duration = Duration::from_secs(5);
/// How often a cancel made on another instance than the run's executor looks whether the
/// run has ended.
const CANCEL_POLL: Duration = Duration::from_millis(50);
/// How long a run stays its executor's without a renewal of its lease: past it, any
/// instance ends the run as lost.
const LEASE: Duration = Duration::from_secs(20);
/// How often an instance renews its leases and looks for lost runs.
const RENEW_EVERY: Duration = Duration::from_secs(5);
/// How often an instance looks whether one of its runs was cancelled elsewhere (or ended
/// as lost): well within the second a cancel may take.
const WATCH_EVERY: Duration = Duration::from_millis(200);
/// Why a run stopped by a drain's end failed.
const SHUT_DOWN: &str = "The server shut down before the run finished";
/// Why a lost instance's run failed.
const LOST_EXECUTOR: &str = "The instance executing the run was lost: its lease ran out";
/// How often the events of a run executing on another instance are read from the store
/// for the subscribers here.
const RELAY_EVERY: Duration = Duration::from_millis(250);
/// Events relayed at most per read.
const RELAYED_AT_ONCE: i64 = 1000;
/// Lines of output that may wait between the executor and the recorder.
const OUTPUT_QUEUE: usize = 1024;

/// A run executing here: its cancel switch, and a signal that turns true once its end is
/// recorded.
struct Executing {
    cancel: watch::Sender<bool>,
    ended: watch::Receiver<bool>,
    /// Set, before the cancel, when the drain's end stops the run: it then fails for that
    /// reason rather than reads as cancelled by request.
    halted: Arc<AtomicBool>,
}

/// Where an engine runs: the id of its instance (the executor of the runs it starts,
/// the same across restarts of one data directory), the data directory, and the key that
/// seals run secrets, which every instance on one database shares.
pub(crate) struct Host {
    pub instance: String,
    pub dir: PathBuf,
    pub sealer: Sealer,
}

/// The engine's state, shared by the scheduler, the runs and the API.
pub struct Engine<S> {
    store: S,
    blobs: Arc<Blobs>,
    executor: Arc<dyn Executor>,
    recorder: Recorder,
    limits: Limits,
    wake: Notify,
    slots: Arc<Semaphore>,
    executing: Mutex<HashMap<String, Executing>>,
    /// The runs executing elsewhere whose events a task relays to subscribers here.
    relays: Mutex<std::collections::HashSet<String>>,
    instance: String,
    dir: PathBuf,
    sealer: Sealer,
    metrics: Arc<Metrics>,
    /// Cancelled when the instance drains: the scheduler starts no more runs, and event
    /// streams end so that their clients resume elsewhere.
    draining: CancellationToken,
}

impl<S: Store> Engine<S> {
    /// A run's secrets as they are stored: sealed.
    pub(crate) fn seal(&self, secrets: HashMap<String, String>) -> HashMap<String, String> {
        secrets.into_iter().map(|(name, value)| (name, self.sealer.seal(&value))).collect()
    }

    /// `run` with its secrets unsealed, for its execution only; the name of one that
    /// cannot be unsealed (sealed under another key).
    fn unsealed(&self, mut run: RunRow) -> Result<RunRow, String> {
        for (name, value) in run.secrets.0.iter_mut() {
            *value = self.sealer.unseal(value).ok_or_else(|| name.clone())?;
        }
        Ok(run)
    }

    /// The engine over `store` and `blobs` on `host`; starts the recorder's writer.
    pub(crate) fn new(
        store: S,
        blobs: Arc<Blobs>,
        executor: Arc<dyn Executor>,
        limits: Limits,
        host: Host,
        metrics: Arc<Metrics>,
    ) -> Engine<S> {
        Engine {
            recorder: Recorder::start(store.clone()),
            store,
            blobs,
            executor,
            limits,
            wake: Notify::new(),
            slots: Arc::new(Semaphore::new(limits.concurrency.max(1))),
            executing: Mutex::default(),
            relays: Mutex::default(),
            instance: host.instance,
            dir: host.dir,
            sealer: host.sealer,
            metrics,
            draining: CancellationToken::new(),
        }
    }

    fn journal(&self, run: &RunRow) -> Journal {
        self.recorder.journal(&run.id, run.secrets.0.values().cloned().collect())
    }

    /// What a new run records first, stored with it (`RunStore::create_run`): its pending
    /// status and a log entry.
    pub fn first_records(run: &RunRow) -> Batch {
        let event = event_row(&status_event(RunStatus::Pending).numbered(1));
        let metadata = meta([("status", "pending"), ("agentVersionId", &run.agent_version_id)]);
        let log = LogRow {
            seq: 1,
            timestamp: run.created_at,
            kind: LogType::System,
            level: LogLevel::Info,
            message: "Run created".into(),
            metadata: Json(metadata),
        };
        Batch {
            events: vec![(run.id.clone(), event)],
            logs: vec![(run.id.clone(), log)],
            metrics: Vec::new(),
        }
    }

    /// A new run is stored: a word to the scheduler (other instances find it by looking).
    pub fn submitted(&self) {
        self.wake.notify_one();
    }

    /// The signal of this instance's drain (see `drain`).
    pub fn draining(&self) -> &CancellationToken {
        &self.draining
    }

    /// Starts draining: the scheduler takes no more runs, which stay pending for another
    /// instance or this one's next start, and event streams end. Runs executing go on.
    pub fn drain(&self) {
        self.draining.cancel();
    }

    /// Waits until no run executes here: until the end of each run executing, and of
    /// any that started meanwhile.
    pub async fn idle(&self) {
        loop {
            let ended: Vec<watch::Receiver<bool>> = self
                .executing
                .lock()
                .expect("not poisoned")
                .values()
                .map(|e| e.ended.clone())
                .collect();
            if ended.is_empty() {
                return;
            }
            for mut ended in ended {
                // A run whose slot is gone has ended too.
                ended.wait_for(|ended| *ended).await.ok();
            }
        }
    }

    /// Stops every run executing here, which fails as stopped by the server's shutdown,
    /// and waits until their ends are recorded.
    pub async fn halt(&self) {
        for run in self.executing.lock().expect("not poisoned").values() {
            run.halted.store(true, Ordering::SeqCst);
            run.cancel.send_replace(true);
        }
        self.idle().await;
    }

    /// Whether the run executes on this instance, so that its events come live.
    pub fn executes_here(&self, run_id: &str) -> bool {
        self.executing.lock().expect("not poisoned").contains_key(run_id)
    }

    /// Cancels a run that has not ended, and returns once its end is recorded (or after
    /// `CANCEL_WAIT`, when the run will not die). A run executing on another instance is
    /// cancelled by that instance, on a request through the store.
    pub async fn cancel(&self, run: &RunRow) -> crate::store::Result<()> {
        if run.status == RunStatus::Pending {
            let end = RunEnd::without_execution(RunStatus::Cancelled, "Cancelled by request");
            if self.store.cancel_pending_run(&run.id, &end).await? {
                self.announce_end(&self.journal(run), &end).await;
                return Ok(());
            }
            // The scheduler started it meanwhile: it is executing now.
        }
        let ended = self.executing.lock().expect("not poisoned").get(&run.id).map(|e| {
            e.cancel.send_replace(true);
            e.ended.clone()
        });
        if let Some(mut ended) = ended {
            tokio::time::timeout(CANCEL_WAIT, ended.wait_for(|ended| *ended)).await.ok();
            return Ok(());
        }
        if self.store.request_cancel(&run.id).await? {
            let deadline = Instant::now() + CANCEL_WAIT;
            while Instant::now() < deadline {
                tokio::time::sleep(CANCEL_POLL).await;
                if self
                    .store
                    .get_run(&run.user_id, &run.id)
                    .await?
                    .is_none_or(|r| r.completed_at.is_some())
                {
                    break;
                }
            }
        }
        Ok(())
    }

    /// The live events of a run, from now on. Those of a run executing on another
    /// instance are relayed from the store, by one task per run for all its subscribers
    /// here.
    pub fn subscribe(self: &Arc<Self>, run_id: &str) -> Subscription {
        let subscription = self.recorder.subscribe(run_id);
        if !self.executes_here(run_id)
            && self.relays.lock().expect("not poisoned").insert(run_id.to_string())
        {
            tokio::spawn(self.clone().relay(run_id.to_string()));
        }
        subscription
    }

    /// Publishes to this instance's subscribers of `run` the events stored after now,
    /// read every `RELAY_EVERY`, until the run ends, executes here, or has no subscriber
    /// here any more.
    async fn relay(self: Arc<Self>, run: String) {
        let mut after = match self.store.counters(&run).await {
            Ok(counters) => counters.event,
            Err(error) => {
                tracing::warn!(%run, %error, "could not relay a run's events");
                0
            }
        };
        loop {
            tokio::time::sleep(RELAY_EVERY).await;
            {
                // Decided under the lock `subscribe` takes after subscribing, so that a new
                // subscriber either keeps this relay going or starts the next.
                let mut relays = self.relays.lock().expect("not poisoned");
                if !self.recorder.watched(&run) || self.executes_here(&run) {
                    relays.remove(&run);
                    return;
                }
            }
            let rows = match self.store.events_after(&run, after, RELAYED_AT_ONCE).await {
                Ok(rows) => rows,
                Err(error) => {
                    tracing::warn!(%run, %error, "could not read a run's events to relay");
                    continue;
                }
            };
            after = rows.last().map_or(after, |row| row.id);
            let events: Vec<types::RunEvent> =
                rows.into_iter().filter_map(|row| types::RunEvent::try_from(row).ok()).collect();
            self.recorder.relay(&run, events);
        }
    }

    /// Ends the runs this instance's previous process left running, and those of lost
    /// instances; pending runs wait for a scheduler.
    pub async fn recover(&self) {
        self.end_lost(Some(&self.instance), "The server stopped while the run was running").await;
        self.end_lost(None, LOST_EXECUTOR).await;
    }

    /// Ends the runs `executor` left running or, when `None`, those whose lease ran out.
    async fn end_lost(&self, executor: Option<&str>, message: &str) {
        let end = RunEnd::without_execution(RunStatus::Failed, message);
        match self.store.end_lost_runs(executor, ids::now(), &end).await {
            Ok(ended) => {
                for id in ended {
                    tracing::warn!(run = %id, "{message}");
                    self.announce_end(&self.recorder.journal(&id, Vec::new()), &end).await;
                }
            }
            Err(error) => tracing::error!(%error, "could not end the runs of lost instances"),
        }
    }

    /// This instance's lease on a run, from now.
    fn lease(&self) -> Lease {
        Lease {
            executor: self.instance.clone(),
            until: ids::now() + chrono::Duration::from_std(LEASE).expect("a short lease"),
        }
    }

    /// Stops this instance's runs that were cancelled on another instance or ended as
    /// lost, every `WATCH_EVERY`, and ends the runs of lost instances every
    /// `RENEW_EVERY`; runs until the process ends.
    pub async fn keep_leases(self: Arc<Self>) {
        let mut looked_for_lost: Option<Instant> = None;
        loop {
            let here = self.executing_here();
            match self.store.runs_to_stop(&self.instance, &here).await {
                Ok(stop) => {
                    let executing = self.executing.lock().expect("not poisoned");
                    for id in stop {
                        if let Some(run) = executing.get(&id) {
                            run.cancel.send_replace(true);
                        }
                    }
                }
                Err(error) => tracing::warn!(%error, "could not look for cancelled runs"),
            }
            if looked_for_lost.is_none_or(|at| at.elapsed() >= RENEW_EVERY) {
                looked_for_lost = Some(Instant::now());
                self.end_lost(None, LOST_EXECUTOR).await;
            }
            tokio::time::sleep(WATCH_EVERY).await;
        }
    }

    /// Renews the leases of the runs executing here every `RENEW_EVERY`, in a task of its
    /// own so that nothing else the instance does (announcing lost runs, say) delays it;
    /// runs until the process ends.
    pub async fn renew_leases(self: Arc<Self>) {
        loop {
            tokio::time::sleep(RENEW_EVERY).await;
            if let Err(error) = self.store.renew_leases(&self.lease(), &self.executing_here()).await
            {
                tracing::warn!(%error, "could not renew the leases of this instance's runs");
            }
        }
    }

    fn executing_here(&self) -> Vec<String> {
        self.executing.lock().expect("not poisoned").keys().cloned().collect()
    }

    /// Deletes the checkpoints older than `retention`, expires the sessions unused for as
    /// long and removes their working directories, then the blobs nothing holds any more.
    pub async fn expire(&self, retention: Duration) -> crate::store::Result<Expired> {
        let now = chrono::Utc::now();
        let before = now - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
        let expired = self.store.expire(before, now).await?;
        for session in &expired.sessions {
            workdir::forget(&self.dir, session).await;
            match tokio::fs::remove_dir_all(workdir::session_dir(&self.dir, session)).await {
                Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                    tracing::warn!(%session, %error, "could not remove an expired session's directory")
                }
                _ => {}
            }
        }
        self.blobs.collect_garbage(&self.store).await;
        Ok(expired)
    }

    /// Runs the retention sweep now and then every `SWEEP_EVERY`; runs until the process
    /// ends.
    pub async fn sweep(self: Arc<Self>) {
        loop {
            match self.expire(self.limits.retention).await {
                Ok(expired) if expired != Expired::default() => {
                    tracing::info!(
                        checkpoints = expired.checkpoints,
                        sessions = expired.sessions.len(),
                        "retention: deleted"
                    )
                }
                Ok(_) => {}
                Err(error) => tracing::error!(%error, "the retention sweep failed"),
            }
            tokio::time::sleep(SWEEP_EVERY).await;
        }
    }

    /// Starts pending runs, oldest first, as slots free up, until the instance drains.
    pub async fn schedule(self: Arc<Self>) {
        // The run at the head of the queue whose start keeps failing, and its backoff.
        let mut failing: Option<(String, Backoff)> = None;
        loop {
            let permit = tokio::select! {
                permit = self.slots.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
                _ = self.draining.cancelled() => return,
            };
            if self.draining.is_cancelled() {
                return;
            }
            let run = match self.store.next_pending_run().await {
                Ok(Some(run)) => run,
                found => {
                    if let Err(error) = found {
                        tracing::error!(%error, "could not read the pending runs");
                    }
                    drop(permit);
                    // A new run wakes the scheduler; the timeout guards against a lost
                    // wake-up, and paces retries while the store fails.
                    tokio::select! {
                        _ = tokio::time::timeout(Duration::from_secs(1), self.wake.notified()) => {}
                        _ = self.draining.cancelled() => return,
                    }
                    continue;
                }
            };
            let (cancel, cancelled) = watch::channel(false);
            let (ended_tx, ended) = watch::channel(false);
            let halted = Arc::new(AtomicBool::new(false));
            self.executing
                .lock()
                .expect("not poisoned")
                .insert(run.id.clone(), Executing { cancel, ended, halted: halted.clone() });
            // A drain that began while the run was read: it stays pending. (One that
            // begins after this look finds the run among those executing.)
            if self.draining.is_cancelled() {
                self.executing.lock().expect("not poisoned").remove(&run.id);
                return;
            }
            match self.store.start_run(&run.id, ids::now(), &self.lease()).await {
                Ok(true) => {
                    failing = None;
                    self.metrics
                        .run_started((ids::now() - run.created_at).to_std().unwrap_or_default());
                    let slot = Slot {
                        engine: self.clone(),
                        run: run.id.clone(),
                        ended: ended_tx,
                        _permit: permit,
                    };
                    tokio::spawn(async move {
                        slot.engine.execute(run, cancelled, &halted).await;
                        drop(slot);
                    });
                }
                Ok(false) => {
                    self.executing.lock().expect("not poisoned").remove(&run.id);
                }
                Err(error) => {
                    self.executing.lock().expect("not poisoned").remove(&run.id);
                    drop(permit);
                    let backoff = match &mut failing {
                        Some((id, backoff)) if *id == run.id => backoff,
                        _ => &mut failing.insert((run.id.clone(), Backoff::default())).1,
                    };
                    match backoff.next() {
                        Some(delay) => {
                            tracing::warn!(run = %run.id, %error, ?delay, "could not start a run; trying again");
                            tokio::time::sleep(delay).await;
                        }
                        None => {
                            // A run that cannot start must not hold up the queue behind it.
                            let end = RunEnd::without_execution(
                                RunStatus::Failed,
                                &format!("The run could not be started: {error}"),
                            );
                            if let Ok(true) = self.store.end_run(&run.id, &end, None).await {
                                self.announce_end(&self.journal(&run), &end).await;
                            }
                            failing = None;
                        }
                    }
                }
            }
        }
    }

    /// The life of one started run.
    async fn execute(&self, run: RunRow, cancelled: watch::Receiver<bool>, halted: &AtomicBool) {
        let run = match self.unsealed(run.clone()) {
            Ok(run) => run,
            Err(name) => {
                let message = format!("The run's secret {name} cannot be read: it was sealed under another key than this instance's (--secrets-key)");
                let end = RunEnd::without_execution(RunStatus::Failed, &message);
                if let Ok(true) = self.store.end_run(&run.id, &end, None).await {
                    self.announce_end(&self.journal(&run), &end).await;
                }
                return;
            }
        };
        let journal = self.journal(&run);
        journal.event(status_event(RunStatus::Running)).await;
        journal
            .log(
                LogType::System,
                LogLevel::Info,
                "Run started",
                meta([("status", "running"), ("sessionId", &run.session_id)]),
            )
            .await;
        let started = Instant::now();
        let workdir = workdir::Workdir { store: &self.store, blobs: &self.blobs, dir: &self.dir };
        let (outcome, timeout) = match workdir.prepare(&run, self.limits.sample_every).await {
            Ok(job) => {
                let timeout = job.timeout;
                (self.watch(job, &journal, cancelled).await, timeout)
            }
            Err(message) => (Outcome::Failed(message), Duration::ZERO),
        };
        let elapsed = started.elapsed().as_millis() as i64;
        let (mut status, mut error) = match outcome {
            Outcome::Exited(0) => (RunStatus::Completed, None),
            Outcome::Exited(code) => {
                (RunStatus::Failed, Some(format!("The agent exited with status {code}")))
            }
            Outcome::Killed(signal) => {
                (RunStatus::Failed, Some(format!("The agent was killed by signal {signal}")))
            }
            Outcome::TimedOut => (
                RunStatus::Timeout,
                Some(format!("The run exceeded its timeout of {} seconds", timeout.as_secs())),
            ),
            Outcome::Cancelled if halted.load(Ordering::SeqCst) => {
                (RunStatus::Failed, Some(SHUT_DOWN.to_string()))
            }
            Outcome::Cancelled => (RunStatus::Cancelled, Some("Cancelled by request".to_string())),
            Outcome::Failed(message) => (RunStatus::Failed, Some(message)),
        };
        let (mut checkpoint, mut artifact_version) = (None, None);
        if status == RunStatus::Completed {
            match workdir.complete(&run).await {
                Ok((c, a)) => (checkpoint, artifact_version) = (Some(c), a),
                Err(message) => (status, error) = (RunStatus::Failed, Some(message)),
            }
        }
        let end = RunEnd {
            status,
            error: error.map(|e| journal.mask(&e)),
            execution_time_ms: Some(elapsed),
            completed_at: ids::now(),
            checkpoint_id: checkpoint.as_ref().map(|c: &NewCheckpoint| c.row.id.clone()),
            artifact_version,
        };
        // Every line is stored before the run reads as ended.
        journal.flush().await;
        match self.store.end_run(&run.id, &end, checkpoint.as_ref()).await {
            Ok(true) => {
                if let Some(checkpoint) = &checkpoint {
                    workdir.mark(&run.session_id, &checkpoint.row.id).await;
                }
                self.announce_end(&journal, &end).await
            }
            Ok(false) => {}
            Err(error) => tracing::error!(run = %run.id, %error, "could not end a run"),
        }
    }

    /// Runs the job, recording its output as it comes; how it ended.
    async fn watch(
        &self,
        job: local::Job,
        journal: &Journal,
        cancelled: watch::Receiver<bool>,
    ) -> Outcome {
        let (sender, mut receiver) = mpsc::channel(OUTPUT_QUEUE);
        let execution = self.executor.execute(job, sender, cancelled);
        tokio::pin!(execution);
        loop {
            tokio::select! {
                Some(output) = receiver.recv() => record_output(journal, output).await,
                outcome = &mut execution => {
                    while let Ok(output) = receiver.try_recv() {
                        record_output(journal, output).await;
                    }
                    return outcome;
                }
            }
        }
    }

    /// The events and log of an ended run, stored before this returns.
    async fn announce_end(&self, journal: &Journal, end: &RunEnd) {
        self.metrics.run_ended(&end.status.to_string());
        if let Some(message) = &end.error {
            journal.event(EventData::Error(types::RunErrorData { message: message.clone() })).await;
        }
        journal.event(status_event(end.status)).await;
        let (level, message) = match &end.error {
            Some(error) => (LogLevel::Error, format!("Run {}: {error}", end.status)),
            None => (LogLevel::Info, format!("Run {}", end.status)),
        };
        journal
            .log(LogType::System, level, &message, meta([("status", &end.status.to_string())]))
            .await;
        let complete =
            types::RunCompleteData { status: end.status, execution_time_ms: end.execution_time_ms };
        journal.event(EventData::Complete(complete)).await;
        journal.flush().await;
    }
}

/// A run's place among those executing here, given back when the run's task ends, by
/// returning or by a panic: the run leaves `executing` (so that a drain does not wait for
/// it, nor the leases cover it), its end is signalled, and its slot freed.
struct Slot<S: Store> {
    engine: Arc<Engine<S>>,
    run: String,
    ended: watch::Sender<bool>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl<S: Store> Drop for Slot<S> {
    fn drop(&mut self) {
        self.engine.metrics.run_finished();
        // Out of `executing` before its end is signalled, so that `idle`, woken by the
        // signal, no longer finds it.
        self.engine
            .executing
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&self.run);
        self.ended.send_replace(true);
    }
}

async fn record_output(journal: &Journal, output: Output) {
    match output {
        Output::Line { stderr, text } => journal.output(stderr, &text).await,
        Output::Sample(sample) => journal.metric(sample).await,
    }
}

fn status_event(status: RunStatus) -> EventData {
    EventData::Status(types::RunStatusData { status })
}

/// A log entry's metadata of string values.
fn meta<const N: usize>(pairs: [(&str, &str); N]) -> Map<String, Value> {
    pairs.into_iter().map(|(k, v)| (k.to_string(), Value::String(v.to_string()))).collect()
}

impl RunEnd {
    /// The end of a run that did not execute (or whose execution is unknown).
    fn without_execution(status: RunStatus, error: &str) -> RunEnd {
        RunEnd {
            status,
            error: Some(error.to_string()),
            execution_time_ms: None,
            completed_at: ids::now(),
            checkpoint_id: None,
            artifact_version: None,
        }
    }
}

/// The delays between attempts to start a run whose start fails: doubling from 50 ms,
/// five times, after which the run fails rather than block the queue.
#[derive(Debug, Default)]
struct Backoff {
    attempts: u32,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(50);
    const ATTEMPTS: u32 = 5;

    /// The delay before the next attempt, or `None` when the attempts are spent.
    fn next(&mut self) -> Option<Duration> {
        if self.attempts >= Self::ATTEMPTS {
            return None;
        }
        let delay = Self::FIRST * 2u32.pow(self.attempts);
        self.attempts += 1;
        Some(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_then_gives_up() {
        let mut backoff = Backoff::default();
        let delays: Vec<u64> =
            std::iter::from_fn(|| backoff.next()).map(|d| d.as_millis() as u64).collect();
        assert_eq!(delays, [50, 100, 200, 400, 800]);
        assert_eq!(backoff.next(), None);
    }

    #[test]
    fn metadata_is_strings() {
        assert_eq!(
            Value::Object(meta([("a", "1"), ("b", "x")])),
            serde_json::json!({"a": "1", "b": "x"})
        );
    }
}
