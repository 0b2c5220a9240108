//! Waiting in tests: on an event where there is one, by polling where there is none, and
//! always under a deadline that fails the test loudly, naming what did not happen.

use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use vm0_client::RunEvent;

/// How long a test waits for anything before it fails.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// How often [`wait_until`] looks again.
const POLL: Duration = Duration::from_millis(20);

/// The output of `future`, or a panic naming `what` if it takes longer than `deadline`.
pub async fn within<T>(deadline: Duration, what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(deadline, future).await {
        Ok(value) => value,
        Err(_) => panic!("{what}: not within {deadline:?}"),
    }
}

/// Calls `check` until it returns `Ok`, and returns that; `Err` carries what it saw
/// instead, which the panic shows if `deadline` passes first. For states that no event
/// announces (a file appearing, say); a run's progress has its event stream.
pub async fn wait_until<T, E: Debug, Fut: Future<Output = Result<T, E>>>(
    deadline: Duration,
    what: &str,
    mut check: impl FnMut() -> Fut,
) -> T {
    let end = tokio::time::Instant::now() + deadline;
    loop {
        let seen = match tokio::time::timeout_at(end, check()).await {
            Ok(Ok(value)) => return value,
            Ok(Err(seen)) => seen,
            Err(_) => panic!("{what}: not within {deadline:?} (the last check never returned)"),
        };
        if tokio::time::Instant::now() + POLL >= end {
            panic!("{what}: not within {deadline:?}; last seen: {seen:?}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Follows the run's event stream until an event for which `wanted` holds, within
/// [`DEADLINE`]; panics naming `what` if the stream fails or ends first.
pub async fn until_run_event(
    c: &vm0_client::Client,
    run: &str,
    what: &str,
    wanted: impl Fn(&RunEvent) -> bool,
) -> RunEvent {
    let mut events = c.run_events(run);
    let mut seen = Vec::new();
    let found = tokio::time::timeout(DEADLINE, async {
        while let Some(event) = events.next().await {
            let event = event.unwrap_or_else(|e| {
                panic!("run {run}: the event stream failed before {what}: {e}")
            });
            if wanted(&event) {
                return Some(event);
            }
            seen.push(event);
        }
        None
    })
    .await;
    match found {
        Ok(Some(event)) => event,
        Ok(None) => panic!("run {run}: the event stream ended before {what}; events: {seen:?}"),
        Err(_) => panic!("run {run}: {what}: not within {DEADLINE:?}; events: {seen:?}"),
    }
}
