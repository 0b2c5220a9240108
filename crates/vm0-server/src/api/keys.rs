//! The API's Idempotency-Keys (`vm0_api::idempotency`) kept in the store, shared by every
//! instance on the database; the answers' bodies sealed, as a new token is among them.
//!
//! Each write costs a commit (on SQLite, an fsync), so a keyed request adds as few as it
//! can to its operation's own. An instance alone on its database takes keys in its memory
//! (a key taken in the database would guard only against a concurrent duplicate as well:
//! a crash between the operation's commit and its answer's loses the answer either way),
//! where instances that share the database take them with a row. Answers are kept by one
//! writer that commits every answer waiting in one transaction (group commit, as the run
//! recorder stores output). A request is answered as soon as its answer is queued, not
//! kept: until it is, this instance holds the key in memory with the answer, and replays
//! it from there; another instance finds the key's row held, and answers 409 in use. So
//! a retry never runs the operation again, and the writer's commits are not the
//! request's: they come after it, as many answers in each as are waiting. (A crash between
//! the operation's commit and the answer's loses the answer, as it did when the request
//! waited: the operation and its answer are two commits either way.) The queue is
//! bounded, in answers and in bytes: when the writer falls behind, requests wait for
//! room in it.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use tokio::sync::{mpsc, oneshot};
use vm0_api::idempotency::{Begun, KeyStore, StoreFuture, StoredAnswer};
use vm0_api::ApiError;

use super::App;
use crate::store::{KeptAnswer, Store};

/// How long a key stays held by a request that has not answered: past it, its instance is
/// taken to have died, and a retry runs the operation again.
const LOCK_MS: i64 = 120_000;
/// The most answers one transaction keeps.
const BATCH: usize = 256;
/// The most bytes the answers waiting for the writer may hold, each counted twice (as
/// kept in memory for replays, and sealed for the writer).
const QUEUED_BYTES: usize = 64 << 20;

/// A key this instance holds in memory, by `(user, key)`.
enum Held {
    /// Its request, of this fingerprint, is executing (taken in memory: alone only).
    Running(String),
    /// Its request, of this fingerprint, answered this, which the writer has yet to keep.
    Keeping(String, StoredAnswer),
}

type Taken = Arc<Mutex<HashMap<(String, String), Held>>>;

/// What the writer is given: an answer to keep, or a request to say when every answer
/// before it is kept.
enum ToWrite {
    /// An answer, with its share of [`QUEUED_BYTES`], given back once it is kept.
    Answer(KeptAnswer, tokio::sync::OwnedSemaphorePermit),
    Flush(oneshot::Sender<()>),
}

/// The keys this instance holds, and its writer of answers.
pub(crate) struct Keys {
    /// Whether this instance is alone on its database: then it takes keys in memory.
    alone: bool,
    taken: Taken,
    writer: mpsc::Sender<ToWrite>,
    /// What is left of [`QUEUED_BYTES`].
    room: Arc<tokio::sync::Semaphore>,
}

impl Keys {
    /// Keys over `store`, with the writer's task started; `lifetime_ms` as the engine's.
    pub(crate) fn new<S: Store>(store: S, alone: bool, lifetime_ms: i64) -> Keys {
        let (writer, answers) = mpsc::channel(4 * BATCH);
        let taken = Taken::default();
        tokio::spawn(keep_answers(store, answers, taken.clone(), lifetime_ms));
        let room = Arc::new(tokio::sync::Semaphore::new(QUEUED_BYTES));
        Keys { alone, taken, writer, room }
    }

    fn taken(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Held>> {
        self.taken.lock().expect("not poisoned")
    }

    /// Returns once every answer queued before the call is kept (or failed to be): for a
    /// drain, after the requests in flight have answered.
    pub(crate) async fn flush(&self) {
        let (done, flushed) = oneshot::channel();
        if self.writer.send(ToWrite::Flush(done)).await.is_ok() {
            flushed.await.ok();
        }
    }
}

/// Keeps the answers that `answers` brings, each batch of those waiting in one
/// transaction, then lets go of their keys in `taken`.
async fn keep_answers<S: Store>(
    store: S,
    mut answers: mpsc::Receiver<ToWrite>,
    taken: Taken,
    lifetime_ms: i64,
) {
    let mut batch = Vec::with_capacity(BATCH);
    while answers.recv_many(&mut batch, BATCH).await > 0 {
        let (mut flushes, mut room) = (Vec::new(), Vec::new());
        let kept: Vec<KeptAnswer> = batch
            .drain(..)
            .filter_map(|item| match item {
                ToWrite::Answer(answer, bytes) => {
                    room.push(bytes);
                    Some(answer)
                }
                ToWrite::Flush(done) => {
                    flushes.push(done);
                    None
                }
            })
            .collect();
        if !kept.is_empty() {
            if let Err(error) = store.keep_answers(&kept, lifetime_ms).await {
                // Their requests were answered; a retry runs afresh (alone) or finds the
                // key's row held until it expires (shared), as after a crash.
                let answers = kept.len();
                tracing::error!(%error, answers, "Idempotency-Key answers were not kept");
            }
            let mut held = taken.lock().expect("not poisoned");
            for answer in kept {
                held.remove(&(answer.user_id, answer.key));
            }
        }
        drop(room);
        for done in flushes {
            done.send(()).ok();
        }
    }
}

impl<S: Store> App<S> {
    /// The answer a key's row holds, unsealed, or what holds the key instead.
    fn begun(&self, held: crate::store::KeyRow, fingerprint: &str) -> Result<Begun, ApiError> {
        if held.fingerprint != fingerprint {
            return Ok(Begun::Reused);
        }
        let (Some(status), Some(headers), Some(body)) = (held.status, held.headers, held.body)
        else {
            return Ok(Begun::InUse);
        };
        let body = self
            .engine
            .sealer()
            .unseal(&body)
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .ok_or_else(|| ApiError::internal("a kept answer does not unseal"))?;
        let headers = serde_json::from_str(&headers)
            .map_err(|e| ApiError::internal(format!("a kept answer's headers: {e}")))?;
        Ok(Begun::Answered(StoredAnswer { status: status as u16, headers, body }))
    }

    /// Takes `key` in this instance's memory, alone on its database.
    async fn take_alone(
        &self,
        user: &str,
        key: &str,
        fingerprint: &str,
        lifetime: i64,
    ) -> Result<Begun, ApiError> {
        let id = (user.to_string(), key.to_string());
        // Taken before the answers are read: a request that answered let go of the key
        // only once its answer was kept, so the read below finds it.
        match self.keys.taken().entry(id.clone()) {
            Entry::Occupied(held) => return Ok(begun_in_memory(held.get(), fingerprint)),
            Entry::Vacant(free) => {
                free.insert(Held::Running(fingerprint.to_string()));
            }
        }
        let answered = match self.store.answered_key(user, key, lifetime).await {
            Ok(answered) => answered,
            Err(error) => {
                self.keys.taken().remove(&id);
                return Err(error.into());
            }
        };
        match answered {
            None => Ok(Begun::Fresh),
            Some(held) => {
                self.keys.taken().remove(&id);
                self.begun(held, fingerprint)
            }
        }
    }
}

/// What a key held in memory means for a request of `fingerprint`.
fn begun_in_memory(held: &Held, fingerprint: &str) -> Begun {
    match held {
        Held::Running(taken) if taken == fingerprint => Begun::InUse,
        Held::Keeping(taken, answer) if taken == fingerprint => Begun::Answered(answer.clone()),
        _ => Begun::Reused,
    }
}

impl<S: Store> KeyStore for App<S> {
    fn begin<'a>(
        &'a self,
        user: &'a str,
        key: &'a str,
        fingerprint: &'a str,
    ) -> StoreFuture<'a, Result<Begun, ApiError>> {
        Box::pin(async move {
            let lifetime = self.engine.key_lifetime().as_millis() as i64;
            if self.keys.alone {
                return self.take_alone(user, key, fingerprint, lifetime).await;
            }
            // An answer of this instance's that the writer has yet to keep.
            let id = (user.to_string(), key.to_string());
            if let Some(held) = self.keys.taken().get(&id) {
                return Ok(begun_in_memory(held, fingerprint));
            }
            match self.store.take_key(user, key, fingerprint, LOCK_MS, lifetime).await? {
                None => Ok(Begun::Fresh),
                Some(held) => self.begun(held, fingerprint),
            }
        })
    }

    fn finish<'a>(
        &'a self,
        user: &'a str,
        key: &'a str,
        fingerprint: &'a str,
        answer: StoredAnswer,
    ) -> StoreFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            let body = base64::engine::general_purpose::STANDARD.encode(&answer.body);
            let kept = KeptAnswer {
                user_id: user.to_string(),
                key: key.to_string(),
                fingerprint: fingerprint.to_string(),
                status: i64::from(answer.status),
                headers: serde_json::to_string(&answer.headers).expect("headers serialize"),
                body: self.engine.sealer().seal(&body),
            };
            let id = (user.to_string(), key.to_string());
            // Waits only for room in the queue; the writer lets go of the key once kept.
            let bytes = (answer.body.len() + kept.body.len()).clamp(1, QUEUED_BYTES);
            let room = self.keys.room.clone().acquire_many_owned(bytes as u32).await;
            let room = room.map_err(|_| ApiError::internal("the writer of answers stopped"))?;
            self.keys.taken().insert(id.clone(), Held::Keeping(fingerprint.to_string(), answer));
            if self.keys.writer.send(ToWrite::Answer(kept, room)).await.is_err() {
                self.keys.taken().remove(&id);
                return Err(ApiError::internal("the writer of answers stopped"));
            }
            Ok(())
        })
    }

    fn release<'a>(
        &'a self,
        user: &'a str,
        key: &'a str,
        fingerprint: &'a str,
    ) -> StoreFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            if self.keys.alone {
                self.keys.taken().remove(&(user.to_string(), key.to_string()));
                return Ok(());
            }
            Ok(self.store.free_key(user, key, fingerprint).await?)
        })
    }
}
