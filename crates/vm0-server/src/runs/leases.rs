//! What lets several instances share one database. A run is claimed by a conditional
//! update that takes a new epoch, and held under a lease its executor renews; the
//! database sets and judges the lease by its own clock, so no instance's clock decides
//! whether another's runs are lost. `keep_leases` stops the runs here that were cancelled
//! on another instance, ended elsewhere or claimed again, and those whose lease this
//! instance could not renew in time (by its own monotonic clock, before any other
//! instance may end them); and it ends the runs of lost instances.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Engine;
use crate::store::{Lease, Store, StoreError};

/// How long a run stays its executor's without a renewal of its lease: past it, any
/// instance ends the run as lost.
pub(super) const LEASE: Duration = Duration::from_secs(20);
/// How often an instance renews its leases and looks for lost runs.
const RENEW_EVERY: Duration = Duration::from_secs(3);
/// How soon a renewal that failed is tried again.
const RENEW_RETRY: Duration = Duration::from_secs(1);
/// How long one look at the store (a renewal, a look for runs to stop) may take: a
/// database that does not answer must not hold up the next look, nor the stop of runs
/// whose lease runs out meanwhile.
const LOOK_TIMEOUT: Duration = Duration::from_secs(2);
/// How long before its lease runs out an executor that could not renew it stops the run:
/// the time the stop takes, so that the run's processes are gone before another instance
/// may end it and start the next run of its session.
const STOP_BEFORE: Duration = Duration::from_secs(3);
/// How often an instance looks whether one of its runs was cancelled elsewhere (or ended
/// as lost), while no signal can say so (`signals.rs`): well within the second a cancel
/// may take.
const WATCH_EVERY: Duration = Duration::from_millis(200);

/// Why a run whose lease its executor could not renew failed.
const LEASE_LAPSED: &str = "The instance executing the run could not renew its lease in time: \
                            it lost the database, or was paused";
/// Why a run ended or claimed elsewhere stopped here (its end, recorded elsewhere, says
/// what happened).
const LOST_HERE: &str = "The run ended on another instance";

impl<S: Store> Engine<S> {
    /// This instance's lease on a run.
    pub(super) fn lease(&self) -> Lease {
        Lease { executor: self.instance.clone(), length: LEASE }
    }

    /// Stops this instance's runs that were cancelled on another instance, ended or
    /// claimed elsewhere (at their stop signal, or every `WATCH_EVERY` while signals
    /// cannot come), or whose lease is about to run out (every `WATCH_EVERY`), and ends
    /// the runs of lost instances every `RENEW_EVERY`; runs until the process ends.
    pub async fn keep_leases(self: Arc<Self>) {
        // On a timer of its own, so that no look at a store that does not answer delays
        // it; in this task, so that the server's end, which aborts the task, ends it too.
        let unleased = async {
            loop {
                self.stop_unleased();
                tokio::time::sleep(WATCH_EVERY).await;
            }
        };
        let store = async {
            let mut looked_for_lost: Option<Instant> = None;
            loop {
                tokio::time::timeout(LOOK_TIMEOUT, self.stop_cancelled_elsewhere()).await.ok();
                if looked_for_lost.is_none_or(|at| at.elapsed() >= RENEW_EVERY) {
                    looked_for_lost = Some(Instant::now());
                    tokio::time::timeout(LOOK_TIMEOUT, self.end_lost()).await.ok();
                }
                // At a stop signal; without signals, soon.
                let wait = if self.signals.live() { RENEW_EVERY } else { WATCH_EVERY };
                self.signals.stop_within(wait).await;
            }
        };
        tokio::join!(unleased, store);
    }

    /// Stops the runs executing here whose lease was last made sure of too long ago: the
    /// database may be away, or this process was paused. Judged by the monotonic clock,
    /// which counts the time a pause took.
    fn stop_unleased(&self) {
        for (id, run) in self.executing.lock().expect("not poisoned").iter() {
            if run.leased_at.elapsed() + STOP_BEFORE >= LEASE && run.halted.get().is_none() {
                tracing::error!(run = %id, "{LEASE_LAPSED}: stopping it");
                run.halt(LEASE_LAPSED);
            }
        }
    }

    /// Stops the runs executing here that the store says to stop.
    async fn stop_cancelled_elsewhere(&self) {
        match self.store.runs_to_stop(&self.held_here()).await {
            Ok(stop) => {
                let executing = self.executing.lock().expect("not poisoned");
                for id in stop {
                    if let Some(run) = executing.get(&id) {
                        // A cancel requested elsewhere stops the run as cancelled; a run
                        // that is no longer this instance's is stopped for that.
                        run.cancel.send_replace(true);
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "could not look for cancelled runs"),
        }
    }

    /// Renews the leases of the runs executing here every `RENEW_EVERY` (every
    /// `RENEW_RETRY` while the store fails), in a task of its own so that nothing else the
    /// instance does (announcing lost runs, say) delays it; a run whose lease the store
    /// refuses is no longer this instance's, and stops. Runs until the process ends.
    pub async fn renew_leases(self: Arc<Self>) {
        let mut wait = RENEW_EVERY;
        loop {
            tokio::time::sleep(wait).await;
            wait = RENEW_RETRY;
            let held = self.held_here();
            let sent = Instant::now();
            let lease = self.lease();
            let renewal = self.store.renew_leases(&lease, &held);
            let unanswered =
                |_| Err(StoreError::InvalidState("the database did not answer".into()));
            match tokio::time::timeout(LOOK_TIMEOUT, renewal).await.unwrap_or_else(unanswered) {
                Ok(renewed) => {
                    wait = RENEW_EVERY;
                    let renewed: HashSet<String> = renewed.into_iter().collect();
                    let mut executing = self.executing.lock().expect("not poisoned");
                    for (id, epoch) in held {
                        let Some(run) = executing.get_mut(&id).filter(|run| run.epoch == epoch)
                        else {
                            continue;
                        };
                        if renewed.contains(&id) {
                            run.leased_at = run.leased_at.max(sent);
                        } else {
                            run.halt(LOST_HERE);
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "could not renew the leases of this instance's runs")
                }
            }
        }
    }
}
