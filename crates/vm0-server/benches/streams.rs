//! Many open event streams on one run of one reference server (the release binary, in a
//! process of its own so that its memory is its alone): the server's resident memory per
//! idle stream, and the delivery latency of each output line to every subscriber, from the
//! moment the agent wrote it (the line is the agent's clock in nanoseconds) to the moment
//! the subscriber read it. `VM0_BENCH_STREAMS` sets how many (default 10,000). Run with
//! `cargo xtask bench` (or `cargo bench -p vm0-server --bench streams`).

#![allow(clippy::print_stdout)] // Printing is what this program is for.

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;

/// How long the agent stays silent first: the streams open and sit idle meanwhile.
const SILENT_SECS: u64 = 45;
/// How long the latencies are gathered, once the agent prints.
const MEASURED: Duration = Duration::from_secs(5);

/// The release server, killed when dropped.
struct Server {
    child: Child,
    url: String,
    token: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// Starts the server over `data`, serving `streams` connections and a few more.
fn start(data: &std::path::Path, streams: usize) -> Server {
    let connections = (streams + 64).to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_vm0-server"))
        .args(["--listen", "127.0.0.1:0", "--log", "warn", "--rate-limit", "0"])
        .args(["--max-connections", &connections])
        .args(["--unsandboxed-runs", "--data-dir"])
        .arg(data)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut url, mut token) = (String::new(), String::new());
    for line in lines.by_ref().map_while(Result::ok) {
        if let Some(rest) = line.strip_prefix("vm0-server listening on ") {
            url = rest.trim().to_string();
        }
        if let Some(found) = line.split_whitespace().find(|w| w.starts_with("vm0_live_")) {
            token = found.trim_matches('"').to_string();
            break;
        }
    }
    std::thread::spawn(move || lines.for_each(drop));
    Server { child, url, token }
}

/// The server's resident memory, in KiB.
fn resident_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn now_ns() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos()
}

/// Raises this process's open-file limit to its hard limit: each stream is a socket.
fn raise_file_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit read and write the one struct given.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
}

/// One subscriber: reads the run's events, and once `measuring` is set records each
/// output line's latency in `latencies`.
async fn subscribe(
    http: reqwest::Client,
    url: String,
    opened: Arc<tokio::sync::Semaphore>,
    measuring: Arc<std::sync::atomic::AtomicBool>,
    latencies: Arc<Mutex<Vec<f64>>>,
) {
    let response = http.get(url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    opened.add_permits(1);
    let (mut stream, mut text) = (response.bytes_stream(), String::new());
    let mut mine = Vec::new();
    while let Some(Ok(chunk)) = stream.next().await {
        let read = now_ns();
        text.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = text.find("\n\n") {
            let message: String = text.drain(..end + 2).collect();
            if !message.contains("event: output") {
                continue;
            }
            let data = message.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
            let data: serde_json::Value = serde_json::from_str(data).unwrap();
            let written: u128 = data["content"].as_str().unwrap().trim().parse().unwrap();
            if measuring.load(std::sync::atomic::Ordering::Relaxed) {
                mine.push(read.saturating_sub(written) as f64 / 1e6);
            }
        }
    }
    latencies.lock().unwrap().extend(mine);
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() {
    raise_file_limit();
    let streams: usize =
        std::env::var("VM0_BENCH_STREAMS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let data = tempfile::tempdir().unwrap();
    let server = start(data.path(), streams);
    let http = reqwest::Client::new();
    let script = format!("sleep {SILENT_SECS}; while :; do date +%s%N; sleep 0.2; done");
    let agent = serde_json::json!({"name": "clock", "config": {"command": ["sh", "-c", script]}});
    let created = http
        .post(format!("{}/v1/agents", server.url))
        .bearer_auth(&server.token)
        .json(&agent)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let run: serde_json::Value = http
        .post(format!("{}/v1/runs", server.url))
        .bearer_auth(&server.token)
        .json(&serde_json::json!({"agent": "clock", "prompt": "go"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = run["id"].as_str().unwrap().to_string();
    // Settled: the run started, the first connections' memory taken.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = resident_kib(server.child.id());

    let opened = Arc::new(tokio::sync::Semaphore::new(0));
    let measuring = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    let events = format!("{}/v1/runs/{id}/events", server.url);
    // One client for every subscriber: each stream holds a connection of its own.
    let subscriber = authed(&server.token);
    for _ in 0..streams {
        let (opened, measuring, latencies) = (opened.clone(), measuring.clone(), latencies.clone());
        let task = subscribe(subscriber.clone(), events.clone(), opened, measuring, latencies);
        tasks.push(tokio::spawn(task));
    }
    let all = opened.acquire_many(streams as u32).await.unwrap();
    all.forget();
    let opening = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = resident_kib(server.child.id());
    let per_stream = (idle.saturating_sub(before)) as f64 / streams as f64;
    println!(
        "{streams} event streams opened in {:.1} s; the server's resident memory {before} KiB \
         before, {idle} KiB with them idle: {per_stream:.1} KiB per idle stream",
        opening.as_secs_f64()
    );
    assert!(
        started.elapsed() < Duration::from_secs(SILENT_SECS - 5),
        "the streams took too long to open: the agent may have printed before all were idle"
    );
    // Until the agent prints, then a while of its lines.
    let silent_until = started + Duration::from_secs(SILENT_SECS);
    tokio::time::sleep_until(silent_until.into()).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    measuring.store(true, std::sync::atomic::Ordering::Relaxed);
    tokio::time::sleep(MEASURED).await;
    measuring.store(false, std::sync::atomic::Ordering::Relaxed);
    let cancelled = http
        .post(format!("{}/v1/runs/{id}/cancel", server.url))
        .bearer_auth(&server.token)
        .send()
        .await
        .unwrap();
    assert_eq!(cancelled.status(), 200);
    for task in tasks {
        task.await.unwrap();
    }
    let mut all = std::mem::take(&mut *latencies.lock().unwrap());
    all.sort_by(f64::total_cmp);
    assert!(!all.is_empty(), "no output line reached a subscriber while measuring");
    println!(
        "delivery of each output line to each of {streams} subscribers, from the agent's \
         write to the subscriber's read, over {} s ({} deliveries): median {:.1} ms, p99 \
         {:.1} ms, slowest {:.1} ms",
        MEASURED.as_secs(),
        all.len(),
        percentile(&all, 0.5),
        percentile(&all, 0.99),
        all[all.len() - 1]
    );
}

/// A client with the bearer token on every request, which keeps no idle connection.
fn authed(token: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    let value = format!("Bearer {token}").parse().unwrap();
    headers.insert(reqwest::header::AUTHORIZATION, value);
    reqwest::Client::builder().default_headers(headers).pool_max_idle_per_host(0).build().unwrap()
}
