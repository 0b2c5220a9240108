//! The server under the hostile input of issue 12's finding 4, measured from outside: a
//! run printing one 300 MB line without a newline, then 8 parallel 14 MB JSON bodies of
//! 7 million tiny values, half to createAgent and half to an upload's file list, while
//! /healthz is polled. It prints the server's peak resident memory (VmHWM, against the
//! same figure after start-up), the database's growth and /healthz's slowest answer, and
//! fails past the targets: 256 MiB and 64 MiB. Then issue 35's runs: a fork bomb at the
//! largest `maxProcesses` the server allows, timed from createRun to the run's end while
//! /healthz is polled (targets 5 s and 500 ms), and five runs whose 8 processes each take
//! 100 MB for 50 ms under `maxMemoryMib: 64` (every one must fail naming it). Run with
//! `cargo xtask bench` (or `cargo bench -p vm0-server --bench hostile`).

#![allow(clippy::print_stdout)] // Printing is what this program is for.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const MIB: u64 = 1 << 20;

/// The peak resident memory of process `pid`, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

/// The bytes of the database's files (with its journal).
fn database_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("vm0.db"))
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

/// `{"<key>": [0,0,...]}` of about `bytes` bytes.
fn tiny_values(key: &str, bytes: usize) -> Vec<u8> {
    let mut text = format!("{{\"{key}\": [");
    while text.len() < bytes {
        text.push_str("0,");
    }
    text.push_str("0]}");
    text.into_bytes()
}

#[tokio::main]
async fn main() {
    let data = tempfile::tempdir().unwrap();
    let mut server = Command::new(env!("CARGO_BIN_EXE_vm0-server"))
        .args(["--listen", "127.0.0.1:0", "--log", "error", "--data-dir"])
        .arg(data.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    let url =
        lines.next().unwrap().unwrap().trim_start_matches("vm0-server listening on ").to_string();
    let token = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| l.split_whitespace().find(|w| w.starts_with("vm0_live_")).map(str::to_string))
        .unwrap();
    std::thread::spawn(move || lines.for_each(drop));
    let api = Api { http: reqwest::Client::new(), url, token };
    let started_rss = peak_rss(server.id());
    let database_before = database_size(data.path());
    one_long_line(&api).await;
    let (statuses, slowest) = tiny_value_bodies(&api).await;
    println!(
        "8 x 14 MB bodies of tiny values: answered {statuses:?} (0: closed after the answer); \
         the slowest /healthz took {} ms",
        slowest.as_millis()
    );

    let peak = peak_rss(server.id());
    let growth = database_size(data.path()).saturating_sub(database_before);
    let (bomb, stopped, slowest) = fork_bomb(&api).await;
    println!(
        "fork bomb under maxProcesses 1024: the run ended {} in {:.2} s (target 5 s), {}; \
         the slowest /healthz took {} ms meanwhile (target 500 ms)",
        bomb["status"],
        stopped.as_secs_f64(),
        bomb["error"],
        slowest.as_millis()
    );
    let bursts = memory_bursts(&api).await;
    println!("8 x 100 MB for 50 ms under maxMemoryMib 64, 5 runs: {bursts:?}");
    server.kill().ok();
    server.wait().ok();
    println!(
        "peak RSS: {} MiB (after start-up: {} MiB; target < 256 MiB)",
        peak / MIB,
        started_rss / MIB
    );
    println!("database growth: {:.1} MiB (target < 64 MiB)", growth as f64 / MIB as f64);
    assert!(peak < 256 * MIB && growth < 64 * MIB, "past a target");
    // 0: the server answered 400 before the body was sent and closed the connection, which
    // the client saw first.
    assert!(statuses.iter().all(|s| *s == 400 || *s == 0), "every hostile body is refused");
    assert!(
        stopped < Duration::from_secs(5) && slowest < Duration::from_millis(500),
        "the fork bomb went past a target"
    );
    assert!(bomb["error"].as_str().is_some_and(|e| e.contains("maxProcesses")), "{bomb}");
    assert!(bursts.iter().all(|e| e.contains("maxMemoryMib")), "a burst got through");
}

/// The server's address, and the first user's token.
struct Api {
    http: reqwest::Client,
    url: String,
    token: String,
}

impl Api {
    /// `body` posted as JSON to `path`.
    fn post(
        &self,
        path: &str,
        body: Vec<u8>,
    ) -> impl std::future::Future<Output = reqwest::Result<reqwest::Response>> {
        self.http
            .post(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .header("content-type", "application/json")
            .body(body)
            .send()
    }

    /// Makes the agent `name` of `config`, runs it, and answers the run as it ended and
    /// how long after createRun the server said so.
    async fn run_to_end(&self, name: &str, config: Value) -> (Value, Duration) {
        let agent = json!({"name": name, "config": config});
        let made = self.post("/v1/agents", serde_json::to_vec(&agent).unwrap()).await.unwrap();
        assert_eq!(made.status(), 201);
        let body = serde_json::to_vec(&json!({"agent": name, "prompt": "go"})).unwrap();
        let clock = Instant::now();
        let run: Value = self.post("/v1/runs", body).await.unwrap().json().await.unwrap();
        let id = run["id"].as_str().unwrap().to_string();
        loop {
            let run: Value = self
                .http
                .get(format!("{}/v1/runs/{id}", self.url))
                .bearer_auth(&self.token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if !matches!(run["status"].as_str(), Some("pending" | "running")) {
                return (run, clock.elapsed());
            }
            assert!(clock.elapsed() < Duration::from_secs(120), "the run did not end: {run}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A run that prints one 300 MB line, without a newline, until it ends.
async fn one_long_line(api: &Api) {
    let command = ["sh", "-c", "head -c 300000000 /dev/zero | tr '\\0' x"];
    let config = json!({"command": command, "maxOutputBytes": 1073741824});
    let clock = Instant::now();
    let (ended, _) = api.run_to_end("flood", config).await;
    println!(
        "300 MB line: the run ended {} in {:.1} s",
        ended["status"],
        clock.elapsed().as_secs_f64()
    );
}

/// A fork bomb under the largest `maxProcesses` the server allows by default, while
/// /healthz is polled: the run as it ended, how long after createRun, and /healthz's
/// slowest answer meanwhile.
async fn fork_bomb(api: &Api) -> (Value, Duration, Duration) {
    let command = ["bash", "-c", "bomb() { bomb | bomb & }; bomb; sleep 30"];
    let config = json!({"command": command, "maxProcesses": 1024, "timeoutSeconds": 60});
    let clock = Instant::now();
    let (ended, slowest) = tokio::join!(api.run_to_end("bomb", config), async {
        let mut slowest = Duration::ZERO;
        while clock.elapsed() < Duration::from_secs(6) {
            let asked = Instant::now();
            api.http.get(format!("{}/healthz", api.url)).send().await.unwrap();
            slowest = slowest.max(asked.elapsed());
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        slowest
    });
    let (ended, stopped) = ended;
    (ended, stopped, slowest)
}

/// Five runs whose 8 processes each take 100 MB for 50 ms under `maxMemoryMib: 64`: the
/// error each ended with (the status, when none).
async fn memory_bursts(api: &Api) -> Vec<String> {
    let burst = "for i in $(seq 8); do python3 -c 'import time; x = b\"x\" * (100 << 20); \
                 time.sleep(0.05)' & done; wait";
    let config = json!({"command": ["bash", "-c", burst], "maxMemoryMib": 64});
    let mut errors = Vec::new();
    for i in 0..5 {
        let (ended, _) = api.run_to_end(&format!("burst-{i}"), config.clone()).await;
        errors.push(ended["error"].as_str().unwrap_or(ended["status"].as_str().unwrap()).into());
    }
    errors
}

/// 8 bodies of 14 MB of tiny values in parallel, while /healthz is polled: their statuses,
/// and /healthz's slowest answer.
async fn tiny_value_bodies(api: &Api) -> (Vec<u16>, Duration) {
    let Api { http, url, .. } = api;
    let volume: Value = api
        .post("/v1/volumes", serde_json::to_vec(&json!({"name": "v"})).unwrap())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let upload = format!("/v1/volumes/{}/upload", volume["id"].as_str().unwrap());
    let bodies = (0..8).map(|i| {
        let (path, key) = if i % 2 == 0 {
            ("/v1/agents".to_string(), "config")
        } else {
            (upload.clone(), "files")
        };
        let send = api.post(&path, tiny_values(key, 14_000_000));
        async move { send.await.map(|r| r.status().as_u16()).unwrap_or(0) }
    });
    let probe = async {
        let mut slowest = Duration::ZERO;
        for _ in 0..40 {
            let asked = Instant::now();
            http.get(format!("{url}/healthz")).send().await.unwrap();
            slowest = slowest.max(asked.elapsed());
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        slowest
    };
    tokio::join!(futures_util::future::join_all(bodies), probe)
}
