//! What lets several instances share one database. A run is claimed by a conditional
//! update and held under a lease its executor renews; `keep_leases` stops the runs
//! here that were cancelled on another instance (or ended as lost), and ends the runs of
//! lost instances.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Engine;
use crate::ids;
use crate::store::{Lease, Store};

/// How long a run stays its executor's without a renewal of its lease: past it, any
/// instance ends the run as lost.
const LEASE: Duration = Duration::from_secs(20);
/// How often an instance renews its leases and looks for lost runs.
const RENEW_EVERY: Duration = Duration::from_secs(5);
/// How often an instance looks whether one of its runs was cancelled elsewhere (or ended
/// as lost): well within the second a cancel may take.
const WATCH_EVERY: Duration = Duration::from_millis(200);

impl<S: Store> Engine<S> {
    /// This instance's lease on a run, from now.
    pub(super) fn lease(&self) -> Lease {
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
            self.stop_cancelled_elsewhere().await;
            if looked_for_lost.is_none_or(|at| at.elapsed() >= RENEW_EVERY) {
                looked_for_lost = Some(Instant::now());
                self.end_lost().await;
            }
            tokio::time::sleep(WATCH_EVERY).await;
        }
    }

    /// Stops the runs executing here that the store says to stop.
    async fn stop_cancelled_elsewhere(&self) {
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
    }

    /// Renews the leases of the runs executing here every `RENEW_EVERY`, in a task of its
    /// own so that nothing else the instance does (announcing lost runs, say) delays it;
    /// runs until the process ends.
    pub async fn renew_leases(self: Arc<Self>) {
        loop {
            tokio::time::sleep(RENEW_EVERY).await;
            let renewed = self.store.renew_leases(&self.lease(), &self.executing_here()).await;
            if let Err(error) = renewed {
                tracing::warn!(%error, "could not renew the leases of this instance's runs");
            }
        }
    }
}
