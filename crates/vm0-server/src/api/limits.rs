//! Each token's rate limit: a quota of requests in fixed windows of a minute, one budget
//! per token on every instance together.
//!
//! An instance alone on its database counts in its memory, in windows of its own clock.
//! Instances that share a database reserve requests from the token's row of the window a
//! chunk at a time (a fiftieth of the quota), in windows of the database's clock, and
//! admit from what they hold: a token's requests on every instance add up to its quota at
//! most, and fall short of it by no more than what the instances reserved and did not use
//! (under a chunk each). Costs: one upsert per chunk of a token's requests, and while the
//! database is away (or slow past 2 s) requests are admitted uncounted, without RateLimit
//! fields, rather than refused: the limit protects the service and must not be what takes
//! it down.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vm0_api::idempotency::StoreFuture;
use vm0_api::limits::{Charge, Limiter, Quota};

use crate::secrets;
use crate::store::{Reserved, Store};

/// The window's length.
const WINDOW: Duration = Duration::from_secs(60);
/// How many tokens' windows are kept before those that ended are dropped.
const KEPT_WINDOWS: usize = 4096;
/// How long a reservation may take before the request is admitted uncounted.
const RESERVE_TIMEOUT: Duration = Duration::from_secs(2);

/// The rate limiter of one instance.
pub(crate) struct RateLimiter<S: Store> {
    quota: u32,
    /// The store the instances share, or none when this one is alone on its database.
    shared: Option<S>,
    /// Each token's window (by its token's SHA-256), locked while its request is charged.
    windows: Mutex<HashMap<Vec<u8>, Arc<tokio::sync::Mutex<Window>>>>,
    /// The start of the last window whose older rows this instance deleted.
    forgotten: AtomicI64,
}

/// Where a token stands here in its window.
#[derive(Debug, Default)]
struct Window {
    /// When it ends; none before the first request, or once it has ended.
    ends: Option<Instant>,
    /// When it began, in milliseconds of the clock that judges it.
    start_ms: i64,
    /// The requests admitted here in it.
    used: u32,
    /// The requests reserved for this instance in it (alone: the whole quota).
    granted: u32,
    /// What the database's row held at the last reservation, up to the quota (alone: the
    /// whole quota, all of it this instance's).
    counted: u32,
}

impl Window {
    /// The seconds until it ends, at least 1 (a window a moment from its end is still
    /// this one for a client whose clock is behind).
    fn reset_secs(&self, now: Instant) -> u32 {
        let left = self.ends.map_or(WINDOW, |ends| ends.saturating_duration_since(now));
        (left.as_millis().div_ceil(1000) as u32).max(1)
    }
}

impl<S: Store> RateLimiter<S> {
    /// A limiter of `quota` requests a minute for each token; `shared` the store when
    /// other instances use the same database.
    pub(crate) fn new(quota: u32, shared: Option<S>) -> RateLimiter<S> {
        let windows = Mutex::new(HashMap::new());
        RateLimiter { quota, shared, windows, forgotten: AtomicI64::new(0) }
    }

    /// The window of the token with this `hash`, made if new, locked. (One dropped from the
    /// map between its lookup and its lock is looked up again.)
    async fn locked(&self, hash: &[u8]) -> tokio::sync::OwnedMutexGuard<Window> {
        loop {
            let window = self.window(hash.to_vec());
            let locked = window.clone().lock_owned().await;
            let windows = self.windows.lock().expect("not poisoned");
            if windows.get(hash).is_some_and(|current| Arc::ptr_eq(current, &window)) {
                return locked;
            }
        }
    }

    /// The window of the token with this `hash`, made if new.
    fn window(&self, hash: Vec<u8>) -> Arc<tokio::sync::Mutex<Window>> {
        let mut windows = self.windows.lock().expect("not poisoned");
        if windows.len() >= KEPT_WINDOWS && !windows.contains_key(&hash) {
            // Tokens seen in the last minute only: a window that ended holds nothing.
            let now = Instant::now();
            windows.retain(|_, window| {
                window.try_lock().map_or(true, |w| w.ends.is_some_and(|ends| ends > now))
            });
        }
        windows.entry(hash).or_default().clone()
    }

    /// Charges a request to `window`, counted in this instance's memory.
    fn charge_alone(&self, window: &mut Window, now: Instant) -> Charge {
        if window.ends.is_none_or(|ends| now >= ends) {
            let wall = chrono::Utc::now().timestamp_millis();
            let into = wall.rem_euclid(WINDOW.as_millis() as i64);
            let left = Duration::from_millis((WINDOW.as_millis() as i64 - into) as u64);
            // The whole quota is this instance's, and counted as such.
            let (granted, counted) = (self.quota, self.quota);
            let start_ms = wall - into;
            *window = Window { ends: Some(now + left), start_ms, used: 0, granted, counted };
        }
        self.admit(window, now)
    }

    /// Charges a request to `window`, reserving more from the shared `store` when what
    /// this instance holds is used up.
    async fn charge_shared(&self, store: &S, hash: &[u8], window: &mut Window) -> Charge {
        let mut now = Instant::now();
        if window.ends.is_some_and(|ends| now >= ends) {
            *window = Window::default();
        }
        let spent = window.ends.is_some() && window.counted >= self.quota;
        if window.used >= window.granted && !spent {
            let chunk = (self.quota / 50).max(1);
            let window_ms = WINDOW.as_millis() as i64;
            let key = hex::encode(hash);
            let reserve = store.reserve_requests(&key, window_ms, chunk);
            match tokio::time::timeout(RESERVE_TIMEOUT, reserve).await {
                Ok(Ok(reserved)) => {
                    now = Instant::now();
                    self.take(window, reserved, chunk, now);
                    self.forget_before(store, reserved.window_start_ms);
                }
                failed => {
                    let error = match failed {
                        Ok(Err(error)) => error.to_string(),
                        _ => format!("no answer within {RESERVE_TIMEOUT:?}"),
                    };
                    tracing::warn!(%error, "could not count a request against its rate limit");
                    return Charge::Admitted(None);
                }
            }
        }
        self.admit(window, now)
    }

    /// Admits a request if `window` holds one granted to this instance and not used yet.
    /// What is left: the quota's room beyond what has been counted, and what this instance
    /// holds unused.
    fn admit(&self, window: &mut Window, now: Instant) -> Charge {
        let admitted = window.used < window.granted;
        if admitted {
            window.used += 1;
        }
        let remaining = (self.quota - window.counted) + (window.granted - window.used);
        let quota = self.quota_of(remaining, window.reset_secs(now));
        if admitted {
            Charge::Admitted(Some(quota))
        } else {
            Charge::Refused(quota)
        }
    }

    /// Adds to `window` what a reservation of `chunk` requests got: of them, those the
    /// quota still had room for.
    fn take(&self, window: &mut Window, reserved: Reserved, chunk: u32, now: Instant) {
        if window.ends.is_none() || reserved.window_start_ms != window.start_ms {
            *window = Window { start_ms: reserved.window_start_ms, ..Window::default() };
        }
        let window_ms = WINDOW.as_millis() as i64;
        let left = (reserved.window_start_ms + window_ms - reserved.now_ms).clamp(0, window_ms);
        window.ends = Some(now + Duration::from_millis(left as u64));
        let before = reserved.used - i64::from(chunk);
        let room = (i64::from(self.quota) - before).clamp(0, i64::from(chunk));
        window.granted += room as u32;
        window.counted = reserved.used.clamp(0, i64::from(self.quota)) as u32;
    }

    /// Deletes the rows of windows before `start`, once per window on this instance, in
    /// the background.
    fn forget_before(&self, store: &S, start: i64) {
        if self.forgotten.fetch_max(start, Ordering::Relaxed) >= start {
            return;
        }
        let store = store.clone();
        tokio::spawn(async move {
            if let Err(error) = store.forget_rate_windows(start).await {
                tracing::warn!(%error, "could not delete the rate windows that ended");
            }
        });
    }

    fn quota_of(&self, remaining: u32, reset_secs: u32) -> Quota {
        let window_secs = WINDOW.as_secs() as u32;
        Quota { limit: self.quota, window_secs, remaining, reset_secs }
    }
}

impl<S: Store> Limiter for RateLimiter<S> {
    fn charge<'a>(&'a self, token: &'a str) -> StoreFuture<'a, Charge> {
        Box::pin(async move {
            let hash = secrets::token_hash(token);
            let mut window = self.locked(&hash).await;
            match &self.shared {
                None => self.charge_alone(&mut window, Instant::now()),
                Some(store) => self.charge_shared(store, &hash, &mut window).await,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reserved(used: i64) -> Reserved {
        Reserved { used, window_start_ms: 60_000, now_ms: 90_000 }
    }

    #[test]
    fn a_reservation_takes_only_what_the_quota_has_room_for() {
        let limiter = RateLimiter::<crate::store::SqlStore>::new(100, None);
        let mut window = Window::default();
        let now = Instant::now();
        limiter.take(&mut window, reserved(2), 2, now);
        assert_eq!((window.granted, window.counted), (2, 2));
        // Other instances took 97 meanwhile: of this chunk of 2, one is left.
        limiter.take(&mut window, reserved(101), 2, now);
        assert_eq!((window.granted, window.counted), (3, 100));
        limiter.take(&mut window, reserved(103), 2, now);
        assert_eq!(window.granted, 3, "nothing past the quota");
        assert_eq!(window.reset_secs(now), 30, "the database's clock says when it ends");
        // A new window starts afresh.
        let next = Reserved { used: 2, window_start_ms: 120_000, now_ms: 120_500 };
        limiter.take(&mut window, next, 2, now);
        assert_eq!((window.granted, window.counted, window.reset_secs(now)), (2, 2, 60));
    }

    #[test]
    fn alone_a_token_gets_its_quota_in_a_window_and_no_more() {
        let limiter = RateLimiter::<crate::store::SqlStore>::new(3, None);
        let mut window = Window::default();
        let now = Instant::now();
        let charges: Vec<(bool, u32)> = (0..5)
            .map(|_| match limiter.charge_alone(&mut window, now) {
                Charge::Admitted(quota) => (true, quota.unwrap().remaining),
                Charge::Refused(quota) => (false, quota.remaining),
            })
            .collect();
        assert_eq!(charges, [(true, 2), (true, 1), (true, 0), (false, 0), (false, 0)]);
        let later = window.ends.unwrap();
        let next = limiter.charge_alone(&mut window, later);
        assert!(matches!(next, Charge::Admitted(Some(q)) if q.remaining == 2), "{next:?}");
    }
}
