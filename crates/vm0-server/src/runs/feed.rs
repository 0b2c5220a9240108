//! A run's events for one subscriber (`Engine::events`): the stored ones after where
//! the subscriber stands, then live ones from the recorder's memory as they come, a
//! heartbeat after each quiet spell, and the end after `complete`. The events of a run
//! executing on another instance are relayed from the store, by one task per run for all
//! its subscribers here.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use vm0_api::SentEvent;
use vm0_types::{self as types, RunEvent};

use super::recorder::Subscription;
use super::{Engine, RunError};
use crate::metrics::SubscriberGuard;
use crate::store::{event_id, positive, RunStore, Store};

/// How long a stream stays quiet before a heartbeat.
const HEARTBEAT: Duration = Duration::from_secs(15);
/// Stored events read at once when a stream replays.
const REPLAY_BATCH: i64 = 500;
/// Events relayed at most per read.
const RELAYED_AT_ONCE: i64 = 1000;

impl<S: Store> Engine<S> {
    /// The events of run `id` of `user` after the event numbered `after`, ending after
    /// the run's `complete` event or when the instance drains.
    pub async fn events(
        self: &Arc<Self>,
        user: &str,
        id: &str,
        after: i64,
    ) -> Result<impl Stream<Item = Arc<SentEvent>> + Send + 'static, RunError> {
        self.run(user, id).await?;
        // Subscribed before anything is read, so that no event falls between the two.
        let live = self.subscribe(id);
        let feed = Feed {
            store: self.store.clone(),
            user: user.to_string(),
            run: id.to_string(),
            ended: false,
            after,
            live,
            replaying: true,
            buffer: VecDeque::new(),
            done: false,
            quiet: Box::pin(tokio::time::sleep(HEARTBEAT)),
            last_sent: Instant::now(),
            drained: Box::pin(self.draining.clone().cancelled_owned()),
            draining: self.draining.clone(),
            _counted: self.metrics.subscribed(),
        };
        Ok(futures_util::stream::unfold(feed, Feed::next))
    }

    /// The live events of a run, from now on, relayed from the store when the run
    /// executes elsewhere.
    fn subscribe(self: &Arc<Self>, run_id: &str) -> Subscription {
        let subscription = self.recorder.subscribe(run_id);
        if !self.executes_here(run_id)
            && self.relays.lock().expect("not poisoned").insert(run_id.to_string())
        {
            tokio::spawn(self.clone().relay(run_id.to_string()));
        }
        subscription
    }

    /// Publishes to this instance's subscribers of `run` the events stored after now,
    /// read as its executor signals them (or, while signals cannot come, every
    /// `signals::FALLBACK_EVERY`), until the run ends, executes here, or has no subscriber
    /// here any more.
    async fn relay(self: Arc<Self>, run: String) {
        let mut signalled = self.signals.events();
        let mut after = match self.store.counters(&run).await {
            Ok(counters) => counters.event,
            Err(error) => {
                tracing::warn!(%run, %error, "could not relay a run's events");
                0
            }
        };
        loop {
            super::signals::run_events(&mut signalled, &run, self.signals.patience()).await;
            {
                // Decided under the lock `subscribe` takes after subscribing, so that a new
                // subscriber either keeps this relay going or starts the next.
                let mut relays = self.relays.lock().expect("not poisoned");
                if !self.recorder.watched(&run) || self.executes_here(&run) {
                    relays.remove(&run);
                    return;
                }
            }
            let rows = match self.store.events_after(&run, after, RELAYED_AT_ONCE).await {
                Ok(rows) => rows,
                Err(error) => {
                    tracing::warn!(%run, %error, "could not read a run's events to relay");
                    continue;
                }
            };
            after = rows.last().map_or(after, |row| row.id);
            let events: Vec<RunEvent> =
                rows.into_iter().filter_map(|row| RunEvent::try_from(row).ok()).collect();
            self.recorder.relay(&run, events);
        }
    }
}

/// One subscriber's position in a run's events.
struct Feed<S> {
    store: S,
    user: String,
    run: String,
    /// The run was seen ended: the store has all its events, and once they are read the
    /// stream is over, `complete` or not (a run ended without one).
    ended: bool,
    after: i64,
    live: Subscription,
    /// Reading stored events, until caught up with the store.
    replaying: bool,
    buffer: VecDeque<Arc<SentEvent>>,
    done: bool,
    /// Ends a heartbeat's time after `last_sent`, or earlier, when it is set again. One
    /// timer for the stream's life and one wait for the drain, looked at only when no event
    /// is ready: ten thousand streams that each set a new timer and a new wait for every
    /// event they send crowd the runtime's timer wheel and the drain token's lock.
    quiet: Pin<Box<Sleep>>,
    last_sent: Instant,
    /// The instance's drain, which ends the stream: its client resumes with
    /// `Last-Event-ID`, on another instance or after the restart.
    draining: CancellationToken,
    drained: Pin<Box<WaitForCancellationFutureOwned>>,
    _counted: SubscriberGuard,
}

/// What the feed does after a step.
enum Step {
    /// Looks again: the buffer may hold events now.
    Again,
    /// The stream is over.
    End,
    /// Sends a heartbeat.
    Heartbeat,
}

impl<S: RunStore + Send + Sync> Feed<S> {
    /// The next event: stored ones first, then live ones as they come, a heartbeat after
    /// each quiet spell, and the end after `complete`.
    async fn next(mut self) -> Option<(Arc<SentEvent>, Self)> {
        loop {
            if let Some(event) = self.buffer.pop_front() {
                self.after = event_id(event.event());
                self.done = matches!(event.event(), RunEvent::Complete { .. });
                self.sent();
                return Some((event, self));
            }
            if self.done || (self.replaying && self.draining.is_cancelled()) {
                return None;
            }
            let step = if self.replaying { self.replay().await } else { self.listen().await };
            match step {
                Step::Again => {}
                Step::End => return None,
                Step::Heartbeat => {
                    let id = positive(self.after);
                    let heartbeat = RunEvent::Heartbeat { id, data: types::RunHeartbeatData {} };
                    self.sent();
                    return Some((SentEvent::new(heartbeat), self));
                }
            }
        }
    }

    /// Something was sent: the next heartbeat is due after a quiet spell from now.
    fn sent(&mut self) {
        self.last_sent = Instant::now();
    }

    /// Reads the next stored events into the buffer; once caught up, the feed goes live.
    async fn replay(&mut self) -> Step {
        let batch = match self.store.events_after(&self.run, self.after, REPLAY_BATCH).await {
            Ok(batch) => batch,
            Err(error) => {
                tracing::error!(run = %self.run, %error, "could not read a run's events");
                return Step::End;
            }
        };
        if batch.is_empty() {
            // Caught up to a `complete` event already sent (a client resuming after the
            // last event, or a feed closed at the run's end), or with a run seen ended
            // before this read: the stream is over.
            if self.ended || (self.after > 0 && self.last_sent_was_complete().await) {
                return Step::End;
            }
            // Ended meanwhile: its end's events, stored with it, are read once more.
            if self.run_ended().await {
                self.ended = true;
                return Step::Again;
            }
            self.replaying = false;
        }
        for row in batch {
            // Past a row that does not read, too, so that it is not read again.
            self.after = self.after.max(row.id);
            match RunEvent::try_from(row) {
                Ok(event) => self.buffer.push_back(SentEvent::new(event)),
                Err(error) => {
                    let run = &self.run;
                    tracing::error!(%run, %error, "a stored run event does not read as a RunEvent")
                }
            }
        }
        Step::Again
    }

    /// Whether the run has ended (a run that cannot be read any more has too).
    async fn run_ended(&self) -> bool {
        match self.store.get_run(&self.user, &self.run).await {
            Ok(run) => run.is_none_or(|run| run.completed_at.is_some()),
            Err(error) => {
                tracing::warn!(run = %self.run, %error, "could not read whether a run ended");
                false
            }
        }
    }

    /// Whether the stored event numbered `after` is the run's `complete` event.
    async fn last_sent_was_complete(&self) -> bool {
        let last = self.store.events_after(&self.run, self.after - 1, 1).await.unwrap_or_default();
        let last = last.into_iter().next().filter(|row| row.id == self.after);
        let event = last.and_then(|row| RunEvent::try_from(row).ok());
        matches!(event, Some(RunEvent::Complete { .. }))
    }

    /// Waits for the next live event, up to a heartbeat's time.
    async fn listen(&mut self) -> Step {
        let received = tokio::select! {
            biased;
            received = self.live.events.recv() => Ok(received),
            _ = &mut self.drained => return Step::End,
            _ = &mut self.quiet => Err(()),
        };
        match received {
            // Something was sent meanwhile: the quiet spell starts from then.
            Err(()) if self.last_sent.elapsed() < HEARTBEAT => {
                let due = self.last_sent + HEARTBEAT;
                self.quiet.as_mut().reset(due);
            }
            // A quiet spell: the run may have ended without a word here (its end's events
            // lost to this instance's feed), which the store tells.
            Err(()) if self.run_ended().await => {
                self.replaying = true;
                self.sent();
            }
            Err(()) => return Step::Heartbeat,
            Ok(Ok(event)) if event_id(event.event()) <= self.after => {}
            Ok(Ok(event)) if event_id(event.event()) == self.after + 1 => {
                self.buffer.push_back(event)
            }
            // A gap, or this subscriber fell behind: the store has the rest.
            Ok(Ok(_)) | Ok(Err(RecvError::Lagged(_))) => self.replaying = true,
            // The run's feed closed: it ended, and what is left is stored, or it had no
            // other subscriber for a moment. Replay, then a fresh subscription waits for
            // the rest should the run still be going.
            Ok(Err(RecvError::Closed)) => {
                self.live = self.live.renew();
                self.replaying = true;
            }
        }
        Step::Again
    }
}
