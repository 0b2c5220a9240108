//! The end of runs whose instance is gone: at start, the runs this instance's previous
//! process left running, and at any time those of instances whose lease ran out.

use vm0_types::RunStatus;

use super::Engine;
use crate::ids;
use crate::store::{RunEnd, Store};

/// Why a lost instance's run failed.
const LOST_EXECUTOR: &str = "The instance executing the run was lost: its lease ran out";
/// Why a run that this instance's previous process left running failed.
const STOPPED: &str = "The server stopped while the run was running";

impl<S: Store> Engine<S> {
    /// Ends the runs this instance's previous process left running, and those of lost
    /// instances; pending runs wait for a scheduler.
    pub async fn recover(&self) {
        self.end_left_running().await;
        self.end_lost().await;
    }

    /// Ends the runs this instance's previous process left running.
    async fn end_left_running(&self) {
        self.end_runs_of(Some(&self.instance), STOPPED).await
    }

    /// Ends the runs whose lease ran out.
    pub(super) async fn end_lost(&self) {
        self.end_runs_of(None, LOST_EXECUTOR).await
    }

    /// Ends the runs `executor` left running or, when `None`, those whose lease ran out.
    async fn end_runs_of(&self, executor: Option<&str>, message: &str) {
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
}
