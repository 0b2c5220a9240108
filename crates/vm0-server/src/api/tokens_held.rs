//! The tokens that hold event streams open. A stream lasts as long as its run, a day at
//! most, and ends once the token that opened it is revoked or expires, as a new request
//! with it would be refused. Each such token is looked up once every `TOKEN_CHECK`,
//! however many streams it holds, and its streams end together: a look for each stream
//! cost ten thousand streams on one token 3,300 queries a second (BENCHMARKS.md).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::store::Store;

/// How often a token that holds streams open is looked up.
const TOKEN_CHECK: Duration = Duration::from_secs(3);
/// Tokens looked up at once.
const LOOKUPS_AT_ONCE: usize = 8;

/// A user's token, by the user's id and the token's.
type Key = (String, String);

pub(super) struct TokensHeld<S> {
    store: S,
    held: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    tokens: HashMap<Key, Holders>,
    /// Whether the task that looks the tokens up is running: it ends when none is held.
    looking: bool,
    /// Numbers the holders, so that a stream that ends after its token was found dead
    /// leaves a later holder of the same key alone.
    generations: u64,
}

/// The streams a token holds open.
struct Holders {
    generation: u64,
    streams: usize,
    /// Cancelled when the token is found revoked or expired.
    dead: CancellationToken,
}

impl<S: Store> TokensHeld<S> {
    pub(super) fn new(store: S) -> Arc<TokensHeld<S>> {
        Arc::new(TokensHeld { store, held: Mutex::new(Held::default()) })
    }

    /// Completes once `token` of `user` is revoked or expires; a stream that ends first
    /// drops it, and the token is looked up no more once no stream holds it.
    pub(super) fn until_dead(
        self: &Arc<Self>,
        user: &str,
        token: &str,
    ) -> impl Future<Output = ()> + Send + 'static {
        let key = (user.to_string(), token.to_string());
        let (generation, dead) = {
            let mut held = self.held.lock().expect("not poisoned");
            let held = &mut *held;
            if !held.looking {
                held.looking = true;
                tokio::spawn(self.clone().look());
            }
            let holders = held.tokens.entry(key.clone()).or_insert_with(|| {
                held.generations += 1;
                Holders { generation: held.generations, streams: 0, dead: CancellationToken::new() }
            });
            holders.streams += 1;
            (holders.generation, holders.dead.clone())
        };
        let hold = Hold { tokens: self.clone(), key, generation };
        async move {
            let _hold = hold;
            dead.cancelled().await
        }
    }

    /// Looks up each held token every `TOKEN_CHECK`, ending the streams of those revoked
    /// or expired, until no token is held.
    async fn look(self: Arc<Self>) {
        let _looking = Looking(&self);
        loop {
            tokio::time::sleep(TOKEN_CHECK).await;
            let keys: Vec<Key> = {
                let mut held = self.held.lock().expect("not poisoned");
                if held.tokens.is_empty() {
                    held.looking = false;
                    return;
                }
                held.tokens.keys().cloned().collect()
            };
            // At once, a few at a time, each within a look's time: one slow answer (the
            // pool waiting, the database away) holds back no other token's revocation.
            let store = &self.store;
            let lookups = futures_util::stream::iter(keys).map(|key| async move {
                let lookup = store.get_token(&key.0, &key.1);
                let dead = match tokio::time::timeout(TOKEN_CHECK, lookup).await {
                    Ok(Ok(None)) => true,
                    Ok(Ok(Some(live))) => live.expires_at <= chrono::Utc::now(),
                    // The database slow or away: the streams go on, and the next look tells.
                    Ok(Err(_)) | Err(_) => false,
                };
                (key, dead)
            });
            let mut lookups = lookups.buffer_unordered(LOOKUPS_AT_ONCE);
            while let Some((key, dead)) = lookups.next().await {
                if !dead {
                    continue;
                }
                let removed = self.held.lock().expect("not poisoned").tokens.remove(&key);
                // Woken outside the lock, which each ending stream's hold takes.
                if let Some(holders) = removed {
                    holders.dead.cancel();
                }
            }
        }
    }
}

/// Marks the look stopped should it panic, so that the next stream starts another. (It
/// ends otherwise only when it marks itself stopped, under the lock that `until_dead`
/// checks the mark under.)
struct Looking<'a, S>(&'a TokensHeld<S>);

impl<S> Drop for Looking<'_, S> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let mut held = self.0.held.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            held.looking = false;
        }
    }
}

/// One stream's hold on its token.
struct Hold<S: Store> {
    tokens: Arc<TokensHeld<S>>,
    key: Key,
    generation: u64,
}

impl<S: Store> Drop for Hold<S> {
    fn drop(&mut self) {
        let mut held = self.tokens.held.lock().expect("not poisoned");
        let Some(holders) = held.tokens.get_mut(&self.key) else { return };
        if holders.generation == self.generation {
            holders.streams -= 1;
            if holders.streams == 0 {
                held.tokens.remove(&self.key);
            }
        }
    }
}
