//! The life of one started run: its secrets unsealed, its working directory prepared,
//! its agent executed with every line recorded as it comes, its checkpoint and artifact
//! collected, and its end stored and announced. Every end of a run, here or elsewhere in
//! the engine, goes through `end`, which stores it with the run's last words and
//! announces them.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use vm0_types::{LogLevel, LogType, RunEvent, RunStatus};

use super::local::{Job, Outcome, Output};
use super::recorder::{meta, status_event, Journal};
use super::{workdir, Engine};
use crate::ids;
use crate::store::{Ending, RunEnd, RunRow, Store, StoreError};

/// Why a run stopped by a drain's end failed.
pub(super) const SHUT_DOWN: &str = "The server shut down before the run finished";
/// How long a run's end is tried again while the store fails: within the lease the run
/// has left when its end begins (17 s or more since the last renewal), so that no other
/// instance ends it as lost meanwhile.
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
        halted: &OnceLock<&'static str>,
    ) {
        let run = match self.unsealed(run.clone()) {
            Ok(run) => run,
            Err(unreadable) => {
                let end = RunEnd::without_execution(RunStatus::Failed, &unreadable.to_string());
                if let Err(error) = self.end(&run.id, Ending::Held(run.epoch), &end).await {
                    tracing::error!(run = %run.id, %error, "could not fail a run");
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
        let workdir = workdir::Workdir {
            store: &self.store,
            blobs: &self.blobs,
            dir: &self.dir,
            caps: &self.limits.caps,
        };
        let (outcome, timeout) = match workdir.prepare(&run, self.limits.sample_every).await {
            Ok(job) => {
                let timeout = job.timeout;
                (self.watch(job, &journal, cancelled).await, timeout)
            }
            Err(error) => (Outcome::Failed(error.to_string()), Duration::ZERO),
        };
        let elapsed = started.elapsed().as_millis() as i64;
        let (status, error) = verdict(outcome, timeout, halted);
        let mut end = RunEnd {
            status,
            error,
            execution_time_ms: Some(elapsed),
            completed_at: ids::now(),
            checkpoint: None,
            artifact: None,
        };
        if status == RunStatus::Completed {
            match workdir.complete(&run).await {
                Ok(collected) => {
                    for sentence in &collected.left_out {
                        let metadata = meta([("checkpoint", &collected.checkpoint.row.id)]);
                        journal.log(LogType::System, LogLevel::Warn, sentence, metadata).await;
                    }
                    (end.checkpoint, end.artifact) =
                        (Some(collected.checkpoint), collected.artifact)
                }
                Err(failure) => {
                    (end.status, end.error) = (RunStatus::Failed, Some(failure.to_string()))
                }
            }
        }
        end.error = end.error.map(|e| journal.mask(&e));
        // Every line is stored before the run reads as ended.
        journal.flush().await;
        self.ending(&run.id);
        match self.store_end(&run, end).await {
            Some(end) => {
                if let Some(checkpoint) = &end.checkpoint {
                    workdir.mark(&run.session_id, &checkpoint.row.id).await;
                }
            }
            // Its end was stored elsewhere (or not at all): the subscribers here replay
            // what the store holds.
            None => self.recorder.ended(&run.id, Vec::new()),
        }
    }

    /// Ends run `id` if `ending` holds, with its last words, and announces them: whether
    /// this end is the run's.
    pub(super) async fn end(
        &self,
        id: &str,
        ending: Ending,
        end: &RunEnd,
    ) -> Result<bool, StoreError> {
        match self.store.end_run(id, ending, end).await? {
            Some(events) => {
                self.announce_end(id, end, events);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Stores the end of `run` under the epoch of its claim, trying again while the store
    /// fails (within the lease it has, which the last renewal left at 17 s or more): the
    /// end stored,
    /// which is `end` or, when its artifact was deleted during the run, a failure. `None`
    /// when the run had ended otherwise (cancelled, ended as lost or claimed again), or
    /// the store failed for `END_RETRIES_FOR`.
    async fn store_end(&self, run: &RunRow, mut end: RunEnd) -> Option<RunEnd> {
        let deadline = Instant::now() + END_RETRIES_FOR;
        let mut delay = Duration::from_millis(50);
        let mut failed = false;
        loop {
            match self.end(&run.id, Ending::Held(run.epoch), &end).await {
                Ok(true) => return Some(end),
                // A try that failed may have committed all the same, its answer lost: the
                // end stored is then this one, whose events subscribers replay.
                Ok(false) if failed && self.ended_as(run, &end).await => {
                    self.announce_end(&run.id, &end, Vec::new());
                    return Some(end);
                }
                Ok(false) => return None,
                Err(StoreError::InvalidState(message)) => {
                    let elapsed = end.execution_time_ms;
                    end = RunEnd::without_execution(RunStatus::Failed, &message);
                    end.execution_time_ms = elapsed;
                }
                Err(error) if Instant::now() + delay < deadline => {
                    let id = &run.id;
                    tracing::warn!(run = %id, %error, ?delay, "could not end a run; trying again");
                    failed = true;
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
                Err(error) => {
                    tracing::error!(run = %run.id, %error, "could not end a run");
                    return None;
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

    /// The end of a run, stored with its last `events`: counted, and the events given to
    /// the run's subscribers here, whose feed then closes.
    pub(super) fn announce_end(&self, id: &str, end: &RunEnd, events: Vec<RunEvent>) {
        self.metrics.run_ended(&end.status.to_string());
        self.recorder.ended(id, events);
    }
}

/// A run's status and error from how its agent ended. `timeout` is the run's, and
/// `halted` why the engine stopped it, if it did.
fn verdict(
    outcome: Outcome,
    timeout: Duration,
    halted: &OnceLock<&'static str>,
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
        Outcome::Cancelled if halted.get().is_some() => {
            (RunStatus::Failed, halted.get().map(|why| why.to_string()))
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
            checkpoint: None,
            artifact: None,
        }
    }
}
