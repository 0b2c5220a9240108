//! A cancel: a pending run ends at once; a run executing here is stopped through its
//! switch; a run executing on another instance is stopped by that instance, on a request
//! through the store that its lease keeper reads, and if that instance does not end it
//! at once (it may be dead, or paused) the cancel ends it in the store itself, under the
//! epoch of the claim it saw: the executor's writes are refused from then on, and it
//! stops the run's processes at its next look.

use std::time::{Duration, Instant};

use vm0_types::RunStatus;

use super::{Engine, RunError};
use crate::store::{Ending, RunEnd, RunRow, Store};

/// How long a cancel waits for a run executing here to die before it answers.
const CANCEL_WAIT: Duration = Duration::from_secs(5);
/// How long a cancel waits for another instance to end the run it executes, before it
/// ends the run itself: twice the time that instance takes to look.
const HANDOFF_WAIT: Duration = Duration::from_millis(500);
/// How often a cancel made on another instance than the run's executor looks whether the
/// run has ended, while no signal can say so (`signals.rs`); with signals it looks at each
/// of the run's events signals, its end's among them.
const CANCEL_POLL: Duration = Duration::from_millis(50);
/// Why a run ends when cancelled.
const CANCELLED: &str = "Cancelled by request";

impl<S: Store> Engine<S> {
    /// Cancels run `id` of `user`, which must not have ended, and answers once its end is
    /// recorded (or after `CANCEL_WAIT`, when a run executing here will not die): the run
    /// as the store then holds it, `cancelled` unless it ended otherwise first.
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
        let end = RunEnd::without_execution(RunStatus::Cancelled, CANCELLED);
        if run.status == RunStatus::Pending && self.end(&run.id, Ending::Pending, &end).await? {
            return Ok(());
        }
        // Executing now, here or elsewhere (the scheduler may have started it meanwhile).
        let ended = self.executing.lock().expect("not poisoned").get(&run.id).map(|e| {
            e.cancel.send_replace(true);
            e.ended.clone()
        });
        if let Some(mut ended) = ended {
            tokio::time::timeout(CANCEL_WAIT, ended.wait_for(|ended| *ended)).await.ok();
            return Ok(());
        }
        // Listening before the request, so that no signal of its end comes unheard.
        let mut signalled = self.signals.events();
        if !self.store.request_cancel(&run.id).await? {
            return Ok(());
        }
        let deadline = Instant::now() + HANDOFF_WAIT;
        loop {
            let wait = match self.signals.live() {
                true => deadline.saturating_duration_since(Instant::now()).max(CANCEL_POLL),
                false => CANCEL_POLL,
            };
            super::signals::run_events(&mut signalled, &run.id, wait).await;
            let Some(now) = self.store.get_run(&run.user_id, &run.id).await? else { return Ok(()) };
            if now.completed_at.is_some() {
                return Ok(());
            }
            if Instant::now() >= deadline && now.status == RunStatus::Running {
                // Its executor has not ended it: it is gone, or slow. Ended here, under the
                // epoch of the claim just read, unless it ends otherwise first.
                let end = RunEnd::without_execution(RunStatus::Cancelled, CANCELLED);
                self.end(&run.id, Ending::Held(now.epoch), &end).await?;
                return Ok(());
            }
        }
    }
}
