//! The end of runs whose instance is gone: at start, the runs this instance's previous
//! process left running, and at any time those of instances whose lease ran out.

use vm0_types::RunStatus;

use super::Engine;
use crate::store::{Ending, RunEnd, Store};

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

    /// Ends the runs `executor` left running or, when `None`, those whose lease ran out
    /// by the database's clock, each under the epoch it was found with (and, for a lapsed
    /// lease, only if it has not been renewed meanwhile).
    async fn end_runs_of(&self, executor: Option<&str>, message: &str) {
        let lost = match self.store.lost_runs(executor).await {
            Ok(lost) => lost,
            Err(error) => {
                tracing::error!(%error, "could not look for the runs of lost instances");
                return;
            }
        };
        for (id, epoch) in lost {
            let ending =
                if executor.is_some() { Ending::Held(epoch) } else { Ending::Lapsed(epoch) };
            let end = RunEnd::without_execution(RunStatus::Failed, message);
            match self.end(&id, ending, &end).await {
                Ok(true) => tracing::warn!(run = %id, "{message}"),
                Ok(false) => {}
                Err(error) => tracing::error!(run = %id, %error, "could not end a lost run"),
            }
        }
    }
}
