//! What the instances sharing a database tell each other at once, through it (PostgreSQL's
//! LISTEN/NOTIFY, see `store::Signal`): a run's new events, for its subscribers on other
//! instances, and a cancel or an end, for its executor. Each is sent in the transaction
//! that makes it true, and arrives about a millisecond after that commits.
//!
//! Polling stays as the fallback, for when signals may have been lost: while the listening
//! connection is down, the waiters look every `FALLBACK_EVERY` (relays of events, the
//! executor's look for runs to stop, a cancel waiting for another instance), and once it is
//! made again each looks once at once ([`Signal::Missed`]). While it is up they wait for a
//! signal, with a look every `SAFETY_EVERY` besides, against a signal never sent.
//! On SQLite (one instance) nothing is signalled, and nothing else changes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, Notify};

use super::Engine;
use crate::store::{Signal, Store};

/// How often a waiter looks while signals cannot come (the listening connection is down).
pub(super) const FALLBACK_EVERY: Duration = Duration::from_millis(250);
/// How often a waiter looks while signals come: only against a signal never sent.
const SAFETY_EVERY: Duration = Duration::from_secs(10);
/// How long a lost listening connection waits before it is made again.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);
/// Signals held for a slow relay before it misses some (and then looks for itself).
const BACKLOG: usize = 1024;

/// The signals as this instance receives them.
pub(super) struct Signals {
    /// Run ids with new events, and `Missed`.
    events: broadcast::Sender<Signal>,
    /// Wakes the executor's look for runs to stop.
    stop: Notify,
    /// Whether signals come now: the connection is up.
    live: AtomicBool,
}

impl Default for Signals {
    fn default() -> Self {
        Signals {
            events: broadcast::channel(BACKLOG).0,
            stop: Notify::new(),
            live: AtomicBool::new(false),
        }
    }
}

impl Signals {
    /// How long a waiter waits before it looks anyway.
    pub(super) fn patience(&self) -> Duration {
        if self.live() {
            SAFETY_EVERY
        } else {
            FALLBACK_EVERY
        }
    }

    /// Events signals, for a relay or a cancel to wait on.
    pub(super) fn events(&self) -> broadcast::Receiver<Signal> {
        self.events.subscribe()
    }

    /// Whether signals come now.
    pub(super) fn live(&self) -> bool {
        self.live.load(Ordering::Relaxed)
    }

    /// Waits for a stop signal, or for `at_most`.
    pub(super) async fn stop_within(&self, at_most: Duration) {
        tokio::time::timeout(at_most, self.stop.notified()).await.ok();
    }
}

/// Waits until `events` says run `run` has new events (or signals were missed), or for
/// `patience`: whichever comes first.
pub(super) async fn run_events(
    events: &mut broadcast::Receiver<Signal>,
    run: &str,
    patience: Duration,
) {
    let wait = async {
        loop {
            match events.recv().await {
                Ok(Signal::Events(id)) if id == run => return,
                Ok(Signal::Missed) | Err(broadcast::error::RecvError::Lagged(_)) => return,
                Ok(_) => {}
                Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
            }
        }
    };
    tokio::time::timeout(patience, wait).await.ok();
}

impl<S: Store> Engine<S> {
    /// Receives the signals of the other instances, and this one's, until the process
    /// ends; on SQLite, returns at once.
    pub async fn listen(self: Arc<Self>) {
        loop {
            let mut listener = match self.store.listen().await {
                Ok(Some(listener)) => listener,
                Ok(None) => return,
                Err(error) => {
                    tracing::warn!(%error, "could not listen for other instances' signals");
                    tokio::time::sleep(RECONNECT_AFTER).await;
                    continue;
                }
            };
            self.signals.live.store(true, Ordering::Relaxed);
            // Whatever was signalled before this connection listened is looked for.
            self.deliver(Signal::Missed);
            loop {
                match listener.next().await {
                    Ok(Signal::Missed) => {
                        self.signals.live.store(false, Ordering::Relaxed);
                        self.deliver(Signal::Missed);
                    }
                    Ok(signal) => {
                        self.signals.live.store(true, Ordering::Relaxed);
                        self.deliver(signal);
                    }
                    Err(error) => {
                        tracing::warn!(%error, "lost the connection that listens for signals");
                        break;
                    }
                }
            }
            self.signals.live.store(false, Ordering::Relaxed);
            self.deliver(Signal::Missed);
            tokio::time::sleep(RECONNECT_AFTER).await;
        }
    }

    fn deliver(&self, signal: Signal) {
        match &signal {
            Signal::Stop(run) if self.executes_here(run) => self.signals.stop.notify_one(),
            Signal::Stop(_) => {}
            Signal::Missed => {
                self.signals.stop.notify_one();
                self.signals.events.send(signal).ok();
            }
            Signal::Events(_) => {
                self.signals.events.send(signal).ok();
            }
        }
    }
}
