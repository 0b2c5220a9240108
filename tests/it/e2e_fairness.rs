//! Sharing the server between users: a user who floods the queue does not hold up
//! another's run, `--max-running-runs-per-user` holds one user to its share of the slots,
//! `--max-pending-runs-per-user` to a number of runs waiting, and `--rate-limit` each token
//! to a number of requests a minute.

use std::time::Instant;

use futures::future::join_all;
use serde_json::json;
use vm0_tests::server::TestServer;
use vm0_types::RunStatus;

use crate::e2e_runs::{agent, body, start, wait};

/// A server with two slots, whose clients are the first user's and another's, each with
/// the agent `shell` (`sh -c 'eval "$VM0_PROMPT"'`).
async fn two_users(per_user: usize) -> (TestServer, vm0_client::Client, vm0_client::Client) {
    let server = TestServer::start_with(tempfile::tempdir().unwrap(), |config| {
        vm0_server::Config { max_concurrent_runs: 2, max_running_runs_per_user: per_user, ..config }
    })
    .await;
    let (flooder, other) = (server.client(), server.client_with(&server.user_token("other").await));
    let shell = json!({"command": ["sh", "-c", "eval \"$VM0_PROMPT\""], "timeoutSeconds": 60});
    for c in [&flooder, &other] {
        agent(c, "shell", shell.clone()).await;
    }
    (server, flooder, other)
}

/// One user submits 60 one-second runs on a server of two slots, then another user
/// submits one: it starts at the next free slot, before all but the few of the flood's
/// runs that were executing or starting (first come first served would put 58 before it).
#[tokio::test]
async fn a_user_who_floods_the_queue_does_not_hold_up_another() {
    let (_server, flooder, other) = two_users(0).await;
    let flood = join_all((0..60).map(|_| start(&flooder, body("shell", "sleep 1")))).await;
    let submitted = Instant::now();
    let theirs = start(&other, body("shell", "echo mine")).await;
    let theirs = wait(&other, &theirs.id).await;
    eprintln!("the other user's run completed {:?} after it was submitted", submitted.elapsed());
    assert_eq!(theirs.status, RunStatus::Completed);

    let started = theirs.started_at.expect("it started");
    let mut before = 0;
    for run in &flood {
        let run = flooder.get_run().id(&run.id).send().await.unwrap().into_inner();
        if run.started_at.is_some_and(|at| at < started) {
            before += 1;
        }
        // The rest of the flood is not needed.
        flooder.cancel_run().id(&run.id).send().await.ok();
    }
    assert!(before <= 4, "{before} of the flood's runs started before the other user's");
}

/// With `--max-running-runs-per-user 1` and two slots, one user's three runs execute one
/// after another, while another user's run takes the second slot.
#[tokio::test]
async fn a_user_executes_no_more_runs_at_once_than_the_cap() {
    let (_server, capped, other) = two_users(1).await;
    let runs = join_all((0..3).map(|_| start(&capped, body("shell", "sleep 1")))).await;
    let theirs = start(&other, body("shell", "sleep 1")).await;
    let mut ended = Vec::new();
    for run in &runs {
        ended.push(wait(&capped, &run.id).await);
    }
    ended.sort_by_key(|run| run.started_at);
    for pair in ended.windows(2) {
        let (first, next) = (&pair[0], &pair[1]);
        assert!(
            next.started_at >= first.completed_at,
            "two runs of one user executed at once: {first:?} and {next:?}"
        );
    }
    let theirs = wait(&other, &theirs.id).await;
    assert!(
        theirs.started_at < ended[1].started_at,
        "the other user's run waited behind the capped user's: {theirs:?}"
    );
}

/// A request of `server`'s first token, sent as it is (the client would retry a 429).
async fn send(
    http: &reqwest::Client,
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> reqwest::Response {
    let request = http.request(method, format!("{}{path}", server.url)).bearer_auth(&server.token);
    let request = match body {
        Some(body) => request.json(&body),
        None => request,
    };
    request.send().await.unwrap()
}

/// A 429 in the envelope, `rate_limit_error` with `code`, and its `Retry-After`.
async fn refused(response: reqwest::Response, code: &str) -> u64 {
    assert_eq!(response.status(), 429);
    let retry_after = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        (body["error"]["type"].as_str(), body["error"]["code"].as_str()),
        (Some("rate_limit_error"), Some(code)),
        "{body}"
    );
    assert!(retry_after >= 1, "Retry-After: {retry_after}");
    retry_after
}

/// With `--max-pending-runs-per-user 100`, of 110 runs one user submits at once, those
/// past the cap are 429 `too_many_pending_runs` with `Retry-After`, counted in `/metrics`;
/// another user's run is taken meanwhile.
#[tokio::test]
async fn runs_past_the_pending_cap_are_refused() {
    let server = TestServer::start_with(tempfile::tempdir().unwrap(), |config| {
        vm0_server::Config { max_concurrent_runs: 1, max_pending_runs_per_user: 100, ..config }
    })
    .await;
    let (c, other) = (server.client(), server.client_with(&server.user_token("other").await));
    let shell = json!({"command": ["sh", "-c", "eval \"$VM0_PROMPT\""], "timeoutSeconds": 60});
    for c in [&c, &other] {
        agent(c, "shell", shell.clone()).await;
    }
    let http = reqwest::Client::new();
    let run = json!({"agent": "shell", "prompt": "sleep 30"});
    let answers = join_all(
        (0..110)
            .map(|_| send(&http, &server, reqwest::Method::POST, "/v1/runs", Some(run.clone()))),
    )
    .await;
    let (mut taken, mut waits) = (0, Vec::new());
    for answer in answers {
        if answer.status() == 202 {
            taken += 1;
        } else {
            waits.push(refused(answer, "too_many_pending_runs").await);
        }
    }
    eprintln!("of 110 runs at once: {taken} taken, {} refused, Retry-After {waits:?}", waits.len());
    // The one that started meanwhile (one slot) made room for one more.
    assert!((100..=101).contains(&taken), "{taken} taken");
    let theirs = start(&other, body("shell", "echo mine")).await;
    assert_eq!(theirs.status, RunStatus::Pending, "another user's run is taken");
    // A refused request kept nothing under its key: sent again once there is room, it runs.
    let keyed = |key: &str| {
        let request = http.post(format!("{}/v1/runs", server.url)).bearer_auth(&server.token);
        request.header("Idempotency-Key", key).json(&run).send()
    };
    refused(keyed("one-more").await.unwrap(), "too_many_pending_runs").await;
    let pending = c.list_runs().status(vm0_types::RunStatus::Pending).limit(1u64);
    let pending = pending.send().await.unwrap().into_inner().data.remove(0);
    c.cancel_run().id(&pending.id).send().await.unwrap();
    assert_eq!(keyed("one-more").await.unwrap().status(), 202, "the key, sent again with room");
    let metrics = http.get(format!("{}/metrics", server.url)).send().await.unwrap();
    let metrics = metrics.text().await.unwrap();
    let refusals = waits.len() + 1; // the flood's, and the keyed request's
    let line = format!("vm0_requests_refused_total{{reason=\"too_many_pending_runs\"}} {refusals}");
    assert!(metrics.contains(&line), "{line} in:\n{metrics}");
}

/// The RateLimit fields of `response`: the policy's quota and window, and the requests
/// left and seconds until the next window.
fn rate_fields(response: &reqwest::Response) -> ((u64, u64), (u64, u64)) {
    let field = |name: &str| response.headers()[name].to_str().unwrap().to_string();
    let number = |text: &str, key: &str| -> u64 {
        let at = text.find(&format!(";{key}=")).unwrap_or_else(|| panic!("{key} in {text}"));
        let rest = &text[at + key.len() + 2..];
        rest.split(';').next().unwrap().parse().unwrap()
    };
    let (policy, state) = (field("ratelimit-policy"), field("ratelimit"));
    assert!(policy.starts_with("\"default\";") && state.starts_with("\"default\";"), "{state}");
    ((number(&policy, "q"), number(&policy, "w")), (number(&state, "r"), number(&state, "t")))
}

/// With `--rate-limit 100`: every answer carries the RateLimit fields, the requests left
/// counting down; past the quota the answer is 429 `rate_limit_exceeded` with a
/// `Retry-After` no earlier than the window's end; another token has its own budget.
#[tokio::test]
async fn a_token_past_its_rate_limit_is_refused_until_the_next_window() {
    let server = TestServer::start_with(tempfile::tempdir().unwrap(), |config| {
        vm0_server::Config { rate_limit: 100, ..config }
    })
    .await;
    let http = reqwest::Client::new();
    let get = || send(&http, &server, reqwest::Method::GET, "/v1/agents", None);
    let mut first = get().await;
    let (_, (_, t)) = rate_fields(&first);
    if t < 15 {
        // Too near the window's end for 110 requests to fall in one: wait for the next.
        tokio::time::sleep(std::time::Duration::from_secs(t + 1)).await;
        first = get().await;
    }
    let ((q, w), (r, t)) = rate_fields(&first);
    assert_eq!((q, w, r), (100, 60, 99), "the first request of a window");
    assert!((1..=60).contains(&t), "t={t}");
    let mut left = vec![r];
    for _ in 1..100 {
        let answer = get().await;
        assert_eq!(answer.status(), 200);
        left.push(rate_fields(&answer).1 .0);
    }
    assert_eq!(left, (0..100).rev().collect::<Vec<u64>>(), "r counts down to 0");
    let past = get().await;
    let ((_, _), (r, t)) = rate_fields(&past);
    assert_eq!(r, 0);
    let retry_after = refused(past, "rate_limit_exceeded").await;
    // Windows are the clock's minutes (the instance's, or its database's on this machine).
    let into_minute = chrono::Utc::now().timestamp() % 60;
    let minute_ends = (60 - into_minute) as u64;
    assert!(retry_after.abs_diff(minute_ends) <= 2, "Retry-After {retry_after} s, t={t}");
    eprintln!("the 101st request: 429, Retry-After {retry_after} s");
    // vm0-client's typed error says it all, from a client that waits out a Retry-After of
    // a second at most.
    let client = vm0_client::Client::builder().base_url(&server.url).token(&server.token);
    let client = client.longest_wait(std::time::Duration::from_secs(1)).build().unwrap();
    let error = client.list_agents().send().await.unwrap_err();
    let error = vm0_client::Error::from(error);
    let api = error.api().expect("an API error");
    assert_eq!((api.status, api.code), (429, vm0_types::ErrorCode::RateLimitExceeded));
    let limit = api.rate_limit.expect("the RateLimit fields");
    assert_eq!((limit.limit, limit.window_secs, limit.remaining), (100, 60, 0));
    let wait = api.retry_after.expect("Retry-After").as_secs();
    assert!(wait >= limit.reset_secs && wait <= 60, "{api:?}");
    assert!(error.to_string().contains(&format!("[retry after {wait} s]")), "{error}");
    // Another token of the same user has a budget of its own.
    let other = server.client_with(&server.user_token("default").await);
    other.list_agents().send().await.expect("another token's request");
}
