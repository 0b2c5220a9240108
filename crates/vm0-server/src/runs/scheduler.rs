//! The scheduler: pending runs start as slots free up, each claimed by a conditional
//! update so that one instance of several starts it; a run whose start keeps failing
//! backs off, then fails rather than hold up the queue behind it. A free slot goes to the
//! user with the fewest runs executing on every instance, oldest run first within a user
//! (the store's `next_pending_run`): one user's thousand runs wait behind another's one.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::{watch, OwnedSemaphorePermit};
use vm0_types::RunStatus;

use super::{Engine, Executing};
use crate::ids;
use crate::store::{Ending, RunEnd, RunRow, Store, StoreError};

impl<S: Store> Engine<S> {
    /// Starts pending runs, fairly between users, as slots free up, until the instance
    /// drains.
    pub async fn schedule(self: Arc<Self>) {
        // The run at the head of the queue whose start keeps failing, and its backoff.
        let mut failing: Option<(String, Backoff)> = None;
        loop {
            let permit = tokio::select! {
                permit = self.slots.clone().acquire_owned() => {
                    permit.expect("the semaphore is never closed")
                }
                _ = self.draining.cancelled() => return,
            };
            if self.draining.is_cancelled() {
                return;
            }
            let run = match self.store.next_pending_run(self.running_cap()).await {
                // A run of its session still executing here (cancelled, or ended elsewhere,
                // its processes not gone yet) keeps it waiting: they share one directory.
                Ok(Some(run)) if !self.session_in_use_here(&run.session_id) => run,
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
            match self.claim(run, permit).await {
                Claim::Started => failing = None,
                Claim::Taken => {}
                Claim::Drained => return,
                Claim::Failed(run, error) => self.failed_to_start(&run, error, &mut failing).await,
            }
        }
    }

    /// Claims `run` for this instance and, if that works, starts it in a task of its own
    /// that holds `permit` until the run ends.
    async fn claim(self: &Arc<Self>, run: RunRow, permit: OwnedSemaphorePermit) -> Claim {
        let (cancel, cancelled) = watch::channel(false);
        let (ended_tx, ended) = watch::channel(false);
        let halted = Arc::new(OnceLock::new());
        // The lease holds from the claim's commit, which is after this.
        let leased_at = Instant::now();
        // Placed before the claim, so that a drain beginning meanwhile finds it; its epoch
        // is set once the claim takes one.
        let executing = Executing {
            cancel,
            ended,
            halted: halted.clone(),
            epoch: 0,
            leased_at,
            ending: false,
            session: run.session_id.clone(),
        };
        self.executing.lock().expect("not poisoned").insert(run.id.clone(), executing);
        // A drain that began while the run was read: it stays pending. (One that begins
        // after this look finds the run among those executing.)
        if self.draining.is_cancelled() {
            self.executing.lock().expect("not poisoned").remove(&run.id);
            return Claim::Drained;
        }
        match self.store.start_run(&run.id, ids::now(), &self.lease(), self.running_cap()).await {
            Ok(Some(run)) => {
                if let Some(executing) =
                    self.executing.lock().expect("not poisoned").get_mut(&run.id)
                {
                    executing.epoch = run.epoch;
                }
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
                Claim::Started
            }
            Ok(None) => {
                self.executing.lock().expect("not poisoned").remove(&run.id);
                Claim::Taken
            }
            Err(error) => {
                self.executing.lock().expect("not poisoned").remove(&run.id);
                Claim::Failed(Box::new(run), error)
            }
        }
    }

    /// How many runs of one user may execute at once, on every instance; `None`: no cap.
    fn running_cap(&self) -> Option<i64> {
        match self.limits.running_per_user {
            0 => None,
            cap => Some(cap as i64),
        }
    }

    /// After `run` could not start: waits before the next attempt, or fails the run once
    /// its attempts are spent.
    async fn failed_to_start(
        &self,
        run: &RunRow,
        error: StoreError,
        failing: &mut Option<(String, Backoff)>,
    ) {
        let backoff = match failing {
            Some((id, backoff)) if *id == run.id => backoff,
            _ => &mut failing.insert((run.id.clone(), Backoff::default())).1,
        };
        match backoff.next() {
            Some(delay) => {
                tracing::warn!(
                    run = %run.id,
                    %error,
                    ?delay,
                    "could not start a run; trying again"
                );
                tokio::time::sleep(delay).await;
            }
            None => {
                // A run that cannot start must not hold up the queue behind it.
                let message = format!("The run could not be started: {error}");
                let end = RunEnd::without_execution(RunStatus::Failed, &message);
                if let Err(error) = self.end(&run.id, Ending::Pending, &end).await {
                    tracing::error!(run = %run.id, %error, "could not fail a run");
                }
                *failing = None;
            }
        }
    }
}

/// What became of a run the scheduler tried to claim.
enum Claim {
    /// It executes here now.
    Started,
    /// Another instance started it, or it was cancelled, meanwhile.
    Taken,
    /// The instance began to drain: the run stays pending.
    Drained,
    /// The store failed. (The run is boxed: it is far larger than the other variants.)
    Failed(Box<RunRow>, StoreError),
}

/// A run's place among those executing here, given back when the run's task ends, by
/// returning or by a panic: the run leaves `executing` (so that a drain does not wait for
/// it, nor the leases cover it), its end is signalled, and its slot freed.
struct Slot<S: Store> {
    engine: Arc<Engine<S>>,
    run: String,
    ended: watch::Sender<bool>,
    _permit: OwnedSemaphorePermit,
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
}
