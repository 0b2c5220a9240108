//! A cancel: a pending run ends at once; a run executing here is stopped through its
//! switch; a run executing on another instance is stopped by that instance, on a request
//! through the store that its lease keeper reads.

use std::time::{Duration, Instant};

use vm0_types::RunStatus;

use super::{Engine, RunError};
use crate::store::{RunEnd, RunRow, Store};

/// How long a cancel waits for the run's end to be recorded before it answers.
const CANCEL_WAIT: Duration = Duration::from_secs(5);
/// How often a cancel made on another instance than the run's executor looks whether the
/// run has ended.
const CANCEL_POLL: Duration = Duration::from_millis(50);

impl<S: Store> Engine<S> {
    /// Cancels run `id` of `user`, which must not have ended, and answers once its end is
    /// recorded (or after `CANCEL_WAIT`, when the run will not die): the run as it then is.
    pub async fn cancel(&self, user: &str, id: &str) -> Result<RunRow, RunError> {
        let run = self.run(user, id).await?;
        if run.completed_at.is_some() {
            return Err(RunError::invalid_state(format!(
                "Run '{id}' has already finished ({})",
                run.status
            )));
        }
        self.stop(&run).await?;
        self.run(user, id).await
    }

    /// Stops `run`, wherever it is, and waits for its end.
    async fn stop(&self, run: &RunRow) -> Result<(), RunError> {
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
                let now = self.store.get_run(&run.user_id, &run.id).await?;
                if now.is_none_or(|r| r.completed_at.is_some()) {
                    break;
                }
            }
        }
        Ok(())
    }
}
