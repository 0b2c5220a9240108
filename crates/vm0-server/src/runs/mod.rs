//! The runs engine, `Engine<S>`: it owns the store, the blobs and the executor, knows
//! nothing of HTTP, and is what the API layer calls. This file is its face: the front
//! door (`submit`, `cancel`, `events`) and the instance's life (`drain`, `idle`, `halt`).
//! Behind it, one file for each thing the engine does:
//!
//! - `submit.rs`: a run's submission, all of it (`RunRequest`);
//! - `scheduler.rs`: the queue of pending runs under a concurrency limit, fair between
//!   users;
//! - `execution.rs`: the life of one started run, and the record of its end;
//! - `cancel.rs`: a cancel, here or through the store on another instance;
//! - `feed.rs`: a run's events for one subscriber, replayed from the store then live, and
//!   the relay of a run executing elsewhere;
//! - `leases.rs`: what lets several instances share a database: leases on the runs an
//!   instance executes, renewed, and the stop of runs cancelled or lost elsewhere;
//! - `recovery.rs`: the end of runs whose instance stopped or was lost;
//! - `retention.rs`: the sweep of old checkpoints, sessions and blobs;
//! - `recorder.rs`: everything a run says, masked by its `Journal` and stored in batches;
//! - `workdir.rs`: a run's working directory, prepared and collected into a checkpoint;
//! - `local.rs`, `sandbox.rs`, `config.rs`: the executor, its sandbox, its configuration.
//!
//! `error.rs` holds `RunError`, the front door's one error.

mod cancel;
pub(crate) mod cgroup;
pub(crate) mod config;
mod error;
mod execution;
mod feed;
mod leases;
pub(crate) mod local;
mod recorder;
mod recovery;
mod retention;
pub(crate) mod sandbox;
mod scheduler;
mod signals;
mod submit;
mod workdir;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::{watch, Notify, Semaphore};
use tokio_util::sync::CancellationToken;

pub(crate) use error::RunError;
pub(crate) use submit::{RunRequest, Target};

use crate::blobs::Blobs;
use crate::metrics::Metrics;
use crate::secrets::Sealer;
use crate::store::{RunRow, Store};
use local::Executor;
use recorder::{Journal, Recorder};

/// How many runs execute at once, how often they are sampled, and how long sessions,
/// checkpoints and Idempotency-Keys are kept.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub concurrency: usize,
    /// How many runs of one user execute at once, on every instance; 0 for no cap.
    pub running_per_user: usize,
    /// How many runs of one user may wait to start; 0 for no cap.
    pub pending_per_user: u32,
    pub sample_every: Duration,
    /// Checkpoints older than this are deleted, and sessions unused for this long expire.
    pub retention: Duration,
    /// Idempotency-Keys older than this are deleted with the retention sweep.
    pub idempotency: Duration,
    /// The most any one run may be given.
    pub caps: config::RunCaps,
}

/// A run executing here: its cancel switch, a signal that turns true once its end is
/// recorded, the epoch of its claim and when its lease was last made sure of.
struct Executing {
    cancel: watch::Sender<bool>,
    ended: watch::Receiver<bool>,
    /// Set, before the cancel, when the engine stops the run itself (the drain's end, a
    /// lease it could not renew): the run then fails for that reason rather than reads as
    /// cancelled by request.
    halted: Arc<OnceLock<&'static str>>,
    epoch: i64,
    /// When the last claim or renewal of the lease that succeeded was sent, by this
    /// process's monotonic clock: the lease holds at least `LEASE` from then.
    leased_at: Instant,
    /// Its end is being stored: its lease is no longer renewed (the end's transaction
    /// holds the run's row, and the end is tried within the lease it has).
    ending: bool,
    /// Its session, which no other run may start in here before this one is gone.
    session: String,
}

impl Executing {
    /// Stops the run, failing it for `why` unless it was stopped already.
    fn halt(&self, why: &'static str) {
        self.halted.set(why).ok();
        self.cancel.send_replace(true);
    }
}

/// Where an engine runs: the id of its instance (the executor of the runs it starts,
/// the same across restarts of one data directory), the data directory, and the key that
/// seals run secrets, which every instance on one database shares.
pub(crate) struct Host {
    pub instance: String,
    pub dir: PathBuf,
    pub sealer: Sealer,
}

impl<S> Engine<S> {
    /// The key that seals what the database must not hold in clear: run secrets, and the
    /// answers kept for Idempotency-Keys (a new token among them).
    pub(crate) fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    /// How long Idempotency-Keys and their answers are kept.
    pub(crate) fn key_lifetime(&self) -> Duration {
        self.limits.idempotency
    }
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
    relays: Mutex<HashSet<String>>,
    /// What the other instances sharing the database signal (`signals.rs`).
    signals: signals::Signals,
    instance: String,
    dir: PathBuf,
    sealer: Sealer,
    metrics: Arc<Metrics>,
    /// Cancelled when the instance drains: the scheduler starts no more runs, and event
    /// streams end so that their clients resume elsewhere.
    draining: CancellationToken,
}

impl<S: Store> Engine<S> {
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
            signals: signals::Signals::default(),
            instance: host.instance,
            dir: host.dir,
            sealer: host.sealer,
            metrics,
            draining: CancellationToken::new(),
        }
    }

    /// Run `id` of `user`: another user's is as missing as one that does not exist.
    async fn run(&self, user: &str, id: &str) -> Result<RunRow, RunError> {
        self.store.get_run(user, id).await?.ok_or_else(|| RunError::not_found("run", id))
    }

    fn journal(&self, run: &RunRow) -> Journal {
        self.recorder.journal(&run.id, run.epoch, run.secrets.0.values().cloned().collect())
    }

    /// The operator's caps on a run's limits, which agent configurations are checked
    /// against.
    pub(crate) fn caps(&self) -> &config::RunCaps {
        &self.limits.caps
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
            run.halt(execution::SHUT_DOWN);
        }
        self.idle().await;
    }

    /// Whether the run executes on this instance, so that its events come live.
    pub fn executes_here(&self, run_id: &str) -> bool {
        self.executing.lock().expect("not poisoned").contains_key(run_id)
    }

    /// Whether a run of session `id` is executing here.
    fn session_in_use_here(&self, id: &str) -> bool {
        self.executing.lock().expect("not poisoned").values().any(|run| run.session == id)
    }

    /// Marks run `id` as ending (see `Executing::ending`).
    fn ending(&self, id: &str) {
        if let Some(run) = self.executing.lock().expect("not poisoned").get_mut(id) {
            run.ending = true;
        }
    }

    /// The runs executing here, each with the epoch of its claim; not those whose claim
    /// is under way (epoch 0), nor those whose end is being stored.
    fn held_here(&self) -> Vec<(String, i64)> {
        let executing = self.executing.lock().expect("not poisoned");
        let claimed = executing.iter().filter(|(_, run)| run.epoch > 0 && !run.ending);
        claimed.map(|(id, run)| (id.clone(), run.epoch)).collect()
    }
}
