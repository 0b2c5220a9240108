//! Three reference servers on one PostgreSQL database and one S3 bucket, against one of
//! them alone, in this process: GET /v1/agents by 32 connections on one instance against
//! the same spread round-robin over three (on these two cores, a measure of what
//! spreading costs rather than a gain), and what crossing instances costs a run: the time
//! from createRun to its first output on the stream of the executing instance against
//! that of another, and the time cancelRun takes to answer on the executing instance
//! against another. Ratios of medians, since these machines are noisy. It needs
//! `VM0_TEST_DATABASE_URL` and `VM0_TEST_BLOB_STORE` (`cargo xtask bench` starts both),
//! and says so when they are missing.

#![allow(clippy::print_stdout)] // Printing is what this program is for.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::json;

/// The allocator of the `vm0-server` binary, so the figures are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ROUNDS: usize = 3;
/// Runs timed for each of the run figures.
const RUNS: usize = 7;

struct Instance {
    url: String,
    app: Arc<vm0_server::api::App<vm0_server::store::SqlStore>>,
}

/// Starts three instances over `shared`'s database, bucket prefix and secrets key; the
/// first token.
async fn start(shared: &std::path::Path) -> (Vec<Instance>, String, Vec<tempfile::TempDir>) {
    let database_url = vm0_server::testing::database_url(shared).await.unwrap();
    let blob_store = vm0_server::testing::blob_store(shared).await.unwrap();
    let (mut instances, mut dirs, mut token) = (Vec::new(), Vec::new(), None);
    for _ in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let config = vm0_server::Config {
            database_url: database_url.clone(),
            blob_store: blob_store.clone(),
            secrets_key: Some(shared.join("secrets.key")),
            sandbox: vm0_server::Sandbox::Unsandboxed,
            // The instances' throughput, which one token's flood measures.
            rate_limit: 0,
            ..vm0_server::Config::local(dir.path())
        };
        let server = vm0_server::bind(config).await.unwrap();
        token = token.or(server.first_token.clone());
        instances.push(Instance { url: server.url.clone(), app: server.app.clone() });
        tokio::spawn(server.serve(std::future::pending()));
        dirs.push(dir);
    }
    (instances, token.expect("the first instance made the first user"), dirs)
}

/// One instance alone on a database of its own, with its blobs on its disk, as
/// `benches/backends.rs` starts its PostgreSQL one: the baseline of the cluster's lists,
/// measured in the same run. Its URL and token.
async fn alone(dir: &std::path::Path) -> (String, String) {
    let config = vm0_server::Config {
        database_url: vm0_server::testing::database_url(dir).await.unwrap(),
        sandbox: vm0_server::Sandbox::Unsandboxed,
        rate_limit: 0,
        ..vm0_server::Config::local(dir)
    };
    let server = vm0_server::bind(config).await.unwrap();
    let (url, token) = (server.url.clone(), server.first_token.clone().unwrap());
    tokio::spawn(server.serve(std::future::pending()));
    (url, token)
}

/// Requests per second that 32 clients get listing agents from `urls`, in turn.
async fn list_round(urls: &[String], token: &str) -> f64 {
    let next = AtomicUsize::new(0);
    let (urls, token) = (urls.to_vec(), token.to_string());
    let request = move |http: &reqwest::Client| {
        http.get(format!("{}/v1/agents", urls[next.fetch_add(1, Ordering::Relaxed) % urls.len()]))
            .bearer_auth(&token)
    };
    common::round(32, Arc::new(request), |status, _| assert!(status.is_success(), "{status}")).await
}

/// Creates a run of the sleeping agent on `instance`; its id, once an instance executes it,
/// and which one.
async fn run(
    http: &reqwest::Client,
    instances: &[Instance],
    on: usize,
    token: &str,
) -> (String, usize) {
    let body = json!({"agent": "sleeper", "prompt": "go"});
    let run: serde_json::Value = http
        .post(format!("{}/v1/runs", instances[on].url))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = run["id"].as_str().unwrap().to_string();
    loop {
        if let Some(executor) = instances.iter().position(|i| i.app.engine.executes_here(&id)) {
            return (id, executor);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// How long after `since` the stream of `url` shows the run's first output.
async fn first_output(
    http: reqwest::Client,
    url: String,
    token: String,
    run: String,
    since: Instant,
) -> Duration {
    let events =
        http.get(format!("{url}/v1/runs/{run}/events")).bearer_auth(&token).send().await.unwrap();
    let (mut stream, mut text) = (events.bytes_stream(), String::new());
    while let Some(chunk) = stream.next().await {
        text.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
        if text.contains("event: output") {
            return since.elapsed();
        }
    }
    panic!("run {run}: the stream ended without output");
}

fn millis(durations: &[Duration]) -> f64 {
    common::median(durations.iter().map(|d| d.as_secs_f64() * 1000.0).collect())
}

#[tokio::main]
async fn main() {
    use vm0_server::testing::{TEST_BLOB_STORE, TEST_DATABASE_URL};
    if std::env::var_os(TEST_DATABASE_URL).is_none() || std::env::var_os(TEST_BLOB_STORE).is_none()
    {
        println!(
            "cluster: skipped, several instances need {TEST_DATABASE_URL} and {TEST_BLOB_STORE} \
             (cargo xtask bench sets both)"
        );
        return;
    }
    let shared = tempfile::tempdir().unwrap();
    let (instances, token, _dirs) = start(shared.path()).await;
    let http = reqwest::Client::new();
    seed(&http, &instances, &token).await;
    let urls: Vec<String> = instances.iter().map(|i| i.url.clone()).collect();
    let alone_dir = tempfile::tempdir().unwrap();
    let baseline = alone(alone_dir.path()).await;
    seed_alone(&http, &baseline).await;
    lists(&urls, &token, &baseline).await;
    watched_and_cancelled(&http, &instances, &urls, &token).await;
}

/// 20 agents created round-robin, and the agent of the runs, whose run sleeps.
async fn seed(http: &reqwest::Client, instances: &[Instance], token: &str) {
    let create = |at: usize, body: serde_json::Value| {
        http.post(format!("{}/v1/agents", instances[at].url)).bearer_auth(token).json(&body).send()
    };
    for i in 0..20 {
        let body = json!({"name": format!("seed-{i}"), "config": {"command": ["true"]}});
        assert_eq!(create(i % 3, body).await.unwrap().status(), 201);
    }
    let config = json!({"command": ["sh", "-c", "echo started; exec sleep 60"]});
    let body = json!({"name": "sleeper", "config": config});
    assert_eq!(create(0, body).await.unwrap().status(), 201);
}

/// The same 21 agents on the instance alone.
async fn seed_alone(http: &reqwest::Client, (url, token): &(String, String)) {
    for i in 0..21 {
        let body = json!({"name": format!("seed-{i}"), "config": {"command": ["true"]}});
        let created = http.post(format!("{url}/v1/agents")).bearer_auth(token).json(&body);
        assert_eq!(created.send().await.unwrap().status(), 201);
    }
}

/// GET /v1/agents from one instance of the three and round-robin from three, in rounds,
/// beside the same from `baseline`, an instance alone on its own database.
async fn lists(urls: &[String], token: &str, baseline: &(String, String)) {
    let (mut one, mut spread, mut alone) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..ROUNDS {
        alone.push(list_round(std::slice::from_ref(&baseline.0), &baseline.1).await);
        one.push(list_round(&urls[..1], token).await);
        spread.push(list_round(urls, token).await);
        println!(
            "GET /v1/agents round {}: an instance alone {:.0} req/s, one of three {:.0} req/s, \
             three round-robin {:.0} req/s",
            i + 1,
            alone[i],
            one[i],
            spread[i]
        );
    }
    let (a, o, s) = (common::median(alone), common::median(one), common::median(spread));
    println!(
        "GET /v1/agents: an instance alone on its own database (as benches/backends.rs) \
         {a:.0} req/s, one of three {o:.0} req/s, three round-robin {s:.0} req/s (medians of \
         {ROUNDS}); one of three/alone = {:.2}, three/one = {:.2}",
        o / a,
        s / o
    );
}

/// Each run watched from its executor and from another instance at once, then
/// cancelled, in turn, on the executor and on another instance.
async fn watched_and_cancelled(
    http: &reqwest::Client,
    instances: &[Instance],
    urls: &[String],
    token: &str,
) {
    let (mut here, mut there, mut cancel_here, mut cancel_there) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..2 * RUNS {
        let since = Instant::now();
        let (id, executor) = run(http, instances, i % 3, token).await;
        let other = (executor + 1) % 3;
        let watch = |at: usize| {
            tokio::spawn(first_output(
                http.clone(),
                urls[at].clone(),
                token.to_string(),
                id.clone(),
                since,
            ))
        };
        let (local, remote) = (watch(executor), watch(other));
        here.push(local.await.unwrap());
        there.push(remote.await.unwrap());
        let canceller = if i % 2 == 0 { executor } else { other };
        let asked = Instant::now();
        let cancelled: serde_json::Value = http
            .post(format!("{}/v1/runs/{id}/cancel", urls[canceller]))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
        let figures = if canceller == executor { &mut cancel_here } else { &mut cancel_there };
        figures.push(asked.elapsed());
    }
    let (h, t) = (millis(&here), millis(&there));
    println!(
        "createRun to first output: on the executor's stream {h:.0} ms, on another instance's \
         {t:.0} ms (medians of {}); other/executor = {:.2}",
        2 * RUNS,
        t / h
    );
    let (h, t) = (millis(&cancel_here), millis(&cancel_there));
    println!(
        "cancelRun answered: on the executor {h:.1} ms, on another instance {t:.1} ms \
         (medians of {RUNS}); other/executor = {:.2}",
        t / h
    );
}
