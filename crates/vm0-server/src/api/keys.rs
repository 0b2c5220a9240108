//! The API's Idempotency-Keys (`vm0_api::idempotency`) kept in the store, shared by every
//! instance on the database; the answers' bodies sealed, as a new token is among them.
//!
//! Each write costs a commit (on SQLite, an fsync), so a keyed request adds as few as it
//! can to its operation's own. An instance alone on its database takes keys in its memory
//! (a key taken in the database would guard only against a concurrent duplicate as well:
//! a crash between the operation's commit and its answer's loses the answer either way),
//! where instances that share the database take them with a row. Answers are kept by one
//! writer that commits every answer waiting in one transaction before their requests are
//! answered: group commit, as the run recorder stores output.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use tokio::sync::{mpsc, oneshot};
use vm0_api::idempotency::{Begun, KeyStore, StoreFuture, StoredAnswer};
use vm0_api::ApiError;

use super::App;
use crate::store::{KeptAnswer, Store, StoreError};

/// How long a key stays held by a request that has not answered: past it, its instance is
/// taken to have died, and a retry runs the operation again.
const LOCK_MS: i64 = 120_000;
/// The most answers one transaction keeps.
const BATCH: usize = 256;

/// How keeping a batch of answers went: the store's error, shared by the batch's
/// requests, when it failed; `None` when the writer stopped.
type Kept = Result<(), Option<Arc<StoreError>>>;

/// The keys this instance holds, and its writer of answers.
pub(crate) struct Keys {
    /// Whether this instance is alone on its database: then it takes keys in memory.
    alone: bool,
    /// The keys taken in memory: `(user, key)` to the request's fingerprint.
    taken: Mutex<HashMap<(String, String), String>>,
    writer: mpsc::Sender<(KeptAnswer, oneshot::Sender<Kept>)>,
}

impl Keys {
    /// Keys over `store`, with the writer's task started; `lifetime_ms` as the engine's.
    pub(crate) fn new<S: Store>(store: S, alone: bool, lifetime_ms: i64) -> Keys {
        let (writer, answers) = mpsc::channel(4 * BATCH);
        tokio::spawn(keep_answers(store, answers, lifetime_ms));
        Keys { alone, taken: Mutex::new(HashMap::new()), writer }
    }

    fn taken(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), String>> {
        self.taken.lock().expect("not poisoned")
    }
}

/// Keeps the answers that `answers` brings, each batch of those waiting in one
/// transaction, and tells each request how it went.
async fn keep_answers<S: Store>(
    store: S,
    mut answers: mpsc::Receiver<(KeptAnswer, oneshot::Sender<Kept>)>,
    lifetime_ms: i64,
) {
    let mut batch = Vec::with_capacity(BATCH);
    while answers.recv_many(&mut batch, BATCH).await > 0 {
        let (kept, waiting): (Vec<KeptAnswer>, Vec<_>) = batch.drain(..).unzip();
        let result = store.keep_answers(&kept, lifetime_ms).await.map_err(|e| Some(Arc::new(e)));
        for waiter in waiting {
            waiter.send(result.clone()).ok();
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
            Entry::Occupied(taken) if taken.get() == fingerprint => return Ok(Begun::InUse),
            Entry::Occupied(_) => return Ok(Begun::Reused),
            Entry::Vacant(free) => {
                free.insert(fingerprint.to_string());
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
            let (done, kept_yet) = oneshot::channel();
            let sent = self.keys.writer.send((kept, done)).await;
            let result = match sent {
                Ok(()) => kept_yet.await.unwrap_or(Err(None)),
                Err(_) => Err(None),
            };
            self.keys.taken().remove(&(user.to_string(), key.to_string()));
            result.map_err(|error| match error {
                Some(error) => ApiError::internal(format!("keeping an answer: {error}")),
                None => ApiError::internal("the writer of answers stopped"),
            })
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
