//! The life of one started run: its secrets unsealed, its working directory prepared,
//! its agent executed with every line recorded as it comes, its checkpoint and artifact
//! collected, and its end stored and announced. Every end of a run, here or elsewhere in
//! the engine, is announced by `announce_end`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use vm0_types::{self as types, LogLevel, LogType, RunStatus};

use super::local::{Job, Outcome, Output};
use super::recorder::{meta, status_event, Journal};
use super::{workdir, Engine};
use crate::ids;
use crate::store::{EventData, NewCheckpoint, RunEnd, RunRow, Store};

/// Why a run stopped by a drain's end failed.
const SHUT_DOWN: &str = "The server shut down before the run finished";
/// How long a run's end is tried again while the store fails: well within the lease,
/// which the instance renews meanwhile, so that no other instance ends the run as lost.
const END_RETRIES_FOR: Duration = Duration::from_secs(15);
/// Lines of output that may wait between the executor and the recorder.
const OUTPUT_QUEUE: usize = 1024;

/// A secret of a run that this instance cannot unseal: it was sealed under another key.
#[derive(Debug, thiserror::Error)]
#[error(
    "The run's secret {0} cannot be read: it was sealed under another key than this \
     instance's (--secrets-key)"
)]
struct UnreadableSecret(String);

impl<S: Store> Engine<S> {
    /// `run` with its secrets unsealed, for its execution only.
    fn unsealed(&self, mut run: RunRow) -> Result<RunRow, UnreadableSecret> {
        for (name, value) in run.secrets.0.iter_mut() {
            *value = self.sealer.unseal(value).ok_or_else(|| UnreadableSecret(name.clone()))?;
        }
        Ok(run)
    }

    /// The life of one started run.
    pub(super) async fn execute(
        &self,
        run: RunRow,
        cancelled: watch::Receiver<bool>,
        halted: &AtomicBool,
    ) {
        let run = match self.unsealed(run.clone()) {
            Ok(run) => run,
            Err(unreadable) => {
                let end = RunEnd::without_execution(RunStatus::Failed, &unreadable.to_string());
                if let Ok(true) = self.store.end_run(&run.id, &end, None).await {
                    self.announce_end(&self.journal(&run), &end).await;
                }
                return;
            }
        };
        let journal = self.journal(&run);
        journal.event(status_event(RunStatus::Running)).await;
        let metadata =
            meta([("status", &RunStatus::Running.to_string()), ("sessionId", &run.session_id)]);
        journal.log(LogType::System, LogLevel::Info, "Run started", metadata).await;
        let started = Instant::now();
        let workdir = workdir::Workdir { store: &self.store, blobs: &self.blobs, dir: &self.dir };
        let (outcome, timeout) = match workdir.prepare(&run, self.limits.sample_every).await {
            Ok(job) => {
                let timeout = job.timeout;
                (self.watch(job, &journal, cancelled).await, timeout)
            }
            Err(error) => (Outcome::Failed(error.to_string()), Duration::ZERO),
        };
        let elapsed = started.elapsed().as_millis() as i64;
        let (mut status, mut error) = verdict(outcome, timeout, halted);
        let (mut checkpoint, mut artifact_version) = (None, None);
        if status == RunStatus::Completed {
            match workdir.complete(&run).await {
                Ok((c, a)) => (checkpoint, artifact_version) = (Some(c), a),
                Err(failure) => (status, error) = (RunStatus::Failed, Some(failure.to_string())),
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
        if self.store_end(&run, &end, checkpoint.as_ref()).await {
            if let Some(checkpoint) = &checkpoint {
                workdir.mark(&run.session_id, &checkpoint.row.id).await;
            }
            self.announce_end(&journal, &end).await
        }
    }

    /// Stores the end of `run`, trying again while the store fails (the lease, renewed
    /// meanwhile, keeps the run this instance's): whether this end is the run's. False when
    /// the run had ended otherwise (cancelled, or ended as lost), or the store failed for
    /// `END_RETRIES_FOR`.
    async fn store_end(
        &self,
        run: &RunRow,
        end: &RunEnd,
        checkpoint: Option<&NewCheckpoint>,
    ) -> bool {
        let deadline = Instant::now() + END_RETRIES_FOR;
        let mut delay = Duration::from_millis(50);
        let mut failed = false;
        loop {
            match self.store.end_run(&run.id, end, checkpoint).await {
                Ok(true) => return true,
                // A try that failed may have committed all the same, its answer lost: the
                // end stored is then this one.
                Ok(false) if failed => return self.ended_as(run, end).await,
                Ok(false) => return false,
                Err(error) if Instant::now() + delay < deadline => {
                    let id = &run.id;
                    tracing::warn!(run = %id, %error, ?delay, "could not end a run; trying again");
                    failed = true;
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
                Err(error) => {
                    tracing::error!(run = %run.id, %error, "could not end a run");
                    return false;
                }
            }
        }
    }

    /// Whether the stored end of `run` is `end`.
    async fn ended_as(&self, run: &RunRow, end: &RunEnd) -> bool {
        match self.store.get_run(&run.user_id, &run.id).await {
            Ok(Some(stored)) => {
                stored.status == end.status && stored.completed_at == Some(end.completed_at)
            }
            Ok(None) => false,
            Err(error) => {
                tracing::error!(run = %run.id, %error, "could not read a run's end");
                false
            }
        }
    }

    /// Runs the job, recording its output as it comes; how it ended.
    async fn watch(
        &self,
        job: Job,
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
    pub(super) async fn announce_end(&self, journal: &Journal, end: &RunEnd) {
        self.metrics.run_ended(&end.status.to_string());
        if let Some(message) = &end.error {
            journal.event(EventData::Error(types::RunErrorData { message: message.clone() })).await;
        }
        journal.event(status_event(end.status)).await;
        let (level, message) = match &end.error {
            Some(error) => (LogLevel::Error, format!("Run {}: {error}", end.status)),
            None => (LogLevel::Info, format!("Run {}", end.status)),
        };
        let metadata = meta([("status", &end.status.to_string())]);
        journal.log(LogType::System, level, &message, metadata).await;
        let complete =
            types::RunCompleteData { status: end.status, execution_time_ms: end.execution_time_ms };
        journal.event(EventData::Complete(complete)).await;
        journal.flush().await;
    }
}

/// A run's status and error from how its agent ended. `timeout` is the run's, and
/// `halted` whether the drain's end stopped it.
fn verdict(
    outcome: Outcome,
    timeout: Duration,
    halted: &AtomicBool,
) -> (RunStatus, Option<String>) {
    match outcome {
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
    }
}

async fn record_output(journal: &Journal, output: Output) {
    match output {
        Output::Line { stderr, text } => journal.output(stderr, &text).await,
        Output::Sample(sample) => journal.metric(sample).await,
    }
}

impl RunEnd {
    /// The end of a run that did not execute (or whose execution is unknown).
    pub(super) fn without_execution(status: RunStatus, error: &str) -> RunEnd {
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
