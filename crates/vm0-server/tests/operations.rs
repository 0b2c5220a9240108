//! What an operator relies on, against the server binary: `/metrics` after a scripted
//! workload, `/readyz` while the database or the blob store cannot serve, the JSON log
//! lines and the responses' request ids, the drain on SIGTERM, a backup taken under
//! write load restored into a new data directory, and the connections the server closes
//! for their clients' silence.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};

mod common;
use common::{sha, within, Api, Server, DEADLINE};

/// The server binary over `data_dir` on the test's backends, with `extra` arguments,
/// logging its warnings.
async fn start(data_dir: &Path, extra: &[&str]) -> (Server, Option<String>) {
    let extra: Vec<&str> = ["--log", "warn"].iter().chain(extra).copied().collect();
    start_logging(data_dir, &extra, std::process::Stdio::inherit()).await
}

async fn start_logging(
    data_dir: &Path,
    extra: &[&str],
    stderr: impl Into<std::process::Stdio>,
) -> (Server, Option<String>) {
    let mut args: Vec<String> = ["--listen", "127.0.0.1:0", "--data-dir"].map(String::from).into();
    args.push(data_dir.display().to_string());
    args.extend(common::backend_args(data_dir).await);
    args.extend(extra.iter().map(|a| a.to_string()));
    common::spawn_with(&args, stderr)
}

fn api(server: &Server, token: &str) -> Api {
    Api { http: reqwest::Client::new(), url: server.url.clone(), token: token.to_string() }
}

/// Whether the test's blobs are in a bucket, whose transfers bypass the server.
async fn blobs_in_a_bucket(data_dir: &Path) -> bool {
    matches!(
        vm0_server::testing::blob_store(data_dir).await.unwrap(),
        vm0_server::BlobLocation::S3 { .. }
    )
}

/// The samples of a metrics text, by series (name and labels) as written.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            l.rsplit_once(' ')
                .map(|(series, value)| (series.to_string(), value.parse().expect("a number")))
        })
        .collect()
}

async fn scrape(http: &reqwest::Client, url: &str) -> HashMap<String, f64> {
    let response = http.get(format!("{url}/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    samples(&response.text().await.unwrap())
}

impl Api {
    async fn volume(&self, name: &str) -> String {
        let (status, volume) =
            self.call(reqwest::Method::POST, "/v1/volumes", Some(json!({ "name": name }))).await;
        assert_eq!(status, 201, "createVolume: {volume}");
        volume["id"].as_str().unwrap().to_string()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_scripted_workload() {
    let data = tempfile::tempdir().unwrap();
    let (server, token) = start(data.path(), &["--metrics-listen", "127.0.0.1:0"]).await;
    let metrics_url = server
        .banner
        .iter()
        .find_map(|l| l.strip_prefix("Metrics: "))
        .expect("the banner names the metrics' address");
    let metrics_url = metrics_url.trim_end_matches("/metrics").to_string();
    let api = api(&server, &token.unwrap());
    let http = reqwest::Client::new();

    // On their own listener, the metrics are not beside the API.
    assert_eq!(http.get(format!("{}/metrics", server.url)).send().await.unwrap().status(), 404);

    agent_calls(&api, &server).await;
    push_and_download(&api, &http).await;
    a_streamed_run(&api, &http, &metrics_url).await;

    let expected = [
        ("vm0_http_requests_total{operation=\"createAgent\",status=\"201\"}", 4.0),
        ("vm0_http_requests_total{operation=\"getAgent\",status=\"404\"}", 1.0),
        ("vm0_http_requests_total{operation=\"listAgents\",status=\"200\"}", 2.0),
        ("vm0_http_requests_total{operation=\"listAgents\",status=\"401\"}", 1.0),
        ("vm0_http_requests_total{operation=\"createVolume\",status=\"201\"}", 1.0),
        ("vm0_http_requests_total{operation=\"commitVolumeUpload\",status=\"200\"}", 1.0),
        ("vm0_http_requests_total{operation=\"createRun\",status=\"202\"}", 1.0),
        ("vm0_http_requests_total{operation=\"streamRunEvents\",status=\"200\"}", 1.0),
        ("vm0_http_request_duration_seconds_count{operation=\"listAgents\"}", 3.0),
        ("vm0_runs{status=\"completed\"}", 1.0),
        ("vm0_runs{status=\"pending\"}", 0.0),
        ("vm0_runs_ended_total{status=\"completed\"}", 1.0),
        ("vm0_run_queue_length", 0.0),
        ("vm0_run_queue_wait_seconds_count", 1.0),
        ("vm0_runs_executing", 0.0),
        ("vm0_sse_subscribers", 0.0),
        ("vm0_database_up", 1.0),
    ];
    let after = settled(&http, &metrics_url, &expected).await;
    for (series, value) in expected {
        assert_eq!(after.get(series), Some(&value), "{series}");
    }
    if !blobs_in_a_bucket(data.path()).await {
        assert_eq!(
            after["vm0_http_requests_total{operation=\"/storage/blobs/{hash}\",status=\"204\"}"],
            1.0
        );
        assert_eq!(after["vm0_storage_transferred_bytes_total{direction=\"upload\"}"], 1000.0);
        assert_eq!(after["vm0_storage_transferred_bytes_total{direction=\"download\"}"], 1000.0);
    }
    assert!(after["vm0_db_pool_max_connections"] >= 1.0);
    // No label holds an id: the unknown agent's path is counted under its operation.
    assert!(!after.keys().any(|series| series.contains("agt_")), "a label holds an id");
}

/// Three agents created, a missing one asked for, the list twice, and a stranger's token.
async fn agent_calls(api: &Api, server: &Server) {
    for name in ["a", "b", "c"] {
        assert_eq!(
            api.call(
                reqwest::Method::POST,
                "/v1/agents",
                Some(json!({"name": name, "config": {"command": ["true"]}}))
            )
            .await
            .0,
            201
        );
    }
    assert_eq!(
        api.call(reqwest::Method::GET, "/v1/agents/agt_00000000000000000000000000", None).await.0,
        404
    );
    for _ in 0..2 {
        assert_eq!(api.call(reqwest::Method::GET, "/v1/agents", None).await.0, 200);
    }
    let stranger = Api { token: format!("vm0_live_{}", "0".repeat(64)), ..api.clone_for(server) };
    assert_eq!(stranger.call(reqwest::Method::GET, "/v1/agents", None).await.0, 401);
}

/// A volume's version pushed and downloaded: 1000 bytes each way.
async fn push_and_download(api: &Api, http: &reqwest::Client) {
    let volume = api.volume("inputs").await;
    let content = vec![7u8; 1000];
    assert!(api.push(&volume, &[("data.bin".to_string(), content.clone())]).await);
    let (_, download) =
        api.call(reqwest::Method::GET, &format!("/v1/volumes/{volume}/download"), None).await;
    let bytes = http
        .get(download["files"][0]["downloadUrl"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(bytes.as_ref(), content.as_slice());
}

/// A run, with its event stream open while it executes: one subscriber meanwhile.
async fn a_streamed_run(api: &Api, http: &reqwest::Client, metrics_url: &str) {
    api.shell_agent().await;
    let run = api.run("sleep 1; echo done").await;
    let stream = api
        .http
        .get(format!("{}/v1/runs/{run}/events", api.url))
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let mut stream = stream.bytes_stream();
    stream.next().await.expect("the first event").unwrap();
    let during = scrape(http, metrics_url).await;
    assert_eq!(during["vm0_sse_subscribers"], 1.0);
    let mut text = String::new();
    within(DEADLINE, "the run's complete event", async {
        while let Some(chunk) = stream.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        }
    })
    .await;
    assert!(text.contains("event: complete"), "{text}");
    drop(stream);
}

/// The metrics once they hold the `expected` values, or at the deadline. The stream's end
/// reaches the server a moment after the client's, the run's slot is given back after its
/// last event, and the database's gauges are read anew each second: scraped until they
/// settle.
async fn settled(
    http: &reqwest::Client,
    metrics_url: &str,
    expected: &[(&str, f64)],
) -> HashMap<String, f64> {
    let settled = |metrics: &HashMap<String, f64>| {
        expected.iter().all(|(series, value)| metrics.get(*series) == Some(value))
    };
    let mut after = scrape(http, metrics_url).await;
    let deadline = Instant::now() + DEADLINE;
    while !settled(&after) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = scrape(http, metrics_url).await;
    }
    after
}

impl Api {
    fn clone_for(&self, server: &Server) -> Api {
        Api { http: self.http.clone(), url: server.url.clone(), token: self.token.clone() }
    }
}

async fn readiness(http: &reqwest::Client, url: &str) -> (u16, Value) {
    let response = http.get(format!("{url}/readyz")).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// `/readyz` once it answers `status`, which takes up to a second: its checks are reused
/// for that long.
async fn readiness_turning(http: &reqwest::Client, url: &str, status: u16) -> Value {
    within(DEADLINE, &format!("/readyz answering {status}"), async {
        loop {
            let (now, body) = readiness(http, url).await;
            if now == status {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_fails_while_the_database_or_blob_store_cannot_serve() {
    let data = tempfile::tempdir().unwrap();
    let log_path = data.path().join("server.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let (server, _) = start_logging(data.path(), &["--log", "warn"], log).await;
    let logged = || std::fs::read_to_string(&log_path).unwrap();
    let http = reqwest::Client::new();
    assert_eq!(readiness(&http, &server.url).await, (200, json!({"ready": true})));

    match vm0_server::testing::database_url(data.path()).await.unwrap() {
        // SQLite serves reads while another process holds its one write lock, but
        // nothing that writes: that is a database that cannot serve.
        None => {
            use sqlx::{ConnectOptions, Connection};
            let options =
                sqlx::sqlite::SqliteConnectOptions::new().filename(data.path().join("vm0.db"));
            let mut holder = options.connect().await.unwrap();
            sqlx::query("BEGIN IMMEDIATE").execute(&mut holder).await.unwrap();
            let body = readiness_turning(&http, &server.url, 503).await;
            assert_eq!(body, json!({"ready": false}), "the probe says no more than that");
            let log = logged();
            assert!(log.contains("not ready") && log.contains("locked"), "{log}");
            // The liveness probe does not depend on the database.
            assert_eq!(
                http.get(format!("{}/healthz", server.url)).send().await.unwrap().status(),
                200
            );
            sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
            holder.close().await.unwrap();
        }
        // PostgreSQL refusing the database's connections, and ending the open ones.
        Some(url) => {
            use sqlx::{Connection, Executor};
            let name = url.rsplit('/').next().unwrap().split('?').next().unwrap().to_string();
            let admin = std::env::var(vm0_server::testing::TEST_DATABASE_URL).unwrap();
            let mut admin = sqlx::PgConnection::connect(&admin).await.unwrap();
            admin
                .execute(format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false").as_str())
                .await
                .unwrap();
            let terminate = format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
            );
            admin.execute(terminate.as_str()).await.unwrap();
            let body = readiness_turning(&http, &server.url, 503).await;
            assert_eq!(body, json!({"ready": false}));
            assert!(logged().contains("not ready"), "{}", logged());
            assert_eq!(
                http.get(format!("{}/healthz", server.url)).send().await.unwrap().status(),
                200
            );
            admin
                .execute(format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true").as_str())
                .await
                .unwrap();
        }
    }
    readiness_turning(&http, &server.url, 200).await;

    if !blobs_in_a_bucket(data.path()).await {
        let (blobs, away) = (data.path().join("blobs"), data.path().join("blobs-away"));
        std::fs::rename(&blobs, &away).unwrap();
        let before = logged().len();
        let body = readiness_turning(&http, &server.url, 503).await;
        assert_eq!(body, json!({"ready": false}));
        let log = logged();
        let log = &log[before..];
        assert!(log.contains("not ready") && log.contains("database=ok"), "{log}");
        std::fs::rename(&away, &blobs).unwrap();
        readiness_turning(&http, &server.url, 200).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_log_lines_carry_each_responses_request_id() {
    let data = tempfile::tempdir().unwrap();
    let log_path = data.path().join("server.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let (server, token) = start_logging(data.path(), &["--log-format", "json"], log).await;
    let token = token.unwrap();
    let api = api(&server, &token);

    let mut answered = Vec::new();
    for (path, token) in [
        ("/v1/agents", token.as_str()),
        ("/v1/agents/agt_00000000000000000000000000", token.as_str()),
        ("/v1/agents", "vm0_live_bad"),
    ] {
        let response =
            api.http.get(format!("{}{path}", api.url)).bearer_auth(token).send().await.unwrap();
        answered.push((
            response.headers()["x-request-id"].to_str().unwrap().to_string(),
            response.status().as_u16(),
        ));
    }
    // A pre-signed URL's signature is in its query, which the log leaves out.
    let volume = api.volume("logged").await;
    let list = json!({"files": [{"path": "a", "size": 1, "hash": sha(b"a")}]});
    let (_, prepared) =
        api.call(reqwest::Method::POST, &format!("/v1/volumes/{volume}/upload"), Some(list)).await;
    let upload_url = prepared["files"][0]["uploadUrl"].as_str().unwrap().to_string();
    api.http.put(&upload_url).body("a").send().await.unwrap();
    let (_, tokens) = api.call(reqwest::Method::GET, "/v1/tokens", None).await;
    assert!(tokens["data"].as_array().is_some_and(|t| !t.is_empty()));
    drop(server);

    let text = std::fs::read_to_string(&log_path).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    assert!(lines
        .iter()
        .all(|l| l["timestamp"].is_string() && l["level"].is_string() && l["message"].is_string()));
    let line_of = |id: &str| {
        lines
            .iter()
            .find(|l| l["request"] == id)
            .unwrap_or_else(|| panic!("no log line for {id}:\n{text}"))
    };
    let (listed, missing, refused) =
        (line_of(&answered[0].0), line_of(&answered[1].0), line_of(&answered[2].0));
    assert_eq!(
        (&listed["operation"], &listed["status"], &listed["method"], &listed["path"]),
        (&json!("listAgents"), &json!(200), &json!("GET"), &json!("/v1/agents"))
    );
    assert!(listed["user"].as_str().is_some_and(|u| u.starts_with("usr_")), "{listed}");
    assert!(listed["ms"].is_u64());
    assert_eq!(
        (&missing["operation"], &missing["status"], &missing["user"]),
        (&json!("getAgent"), &json!(404), &listed["user"])
    );
    // A refused token names no user.
    assert_eq!(
        (&refused["operation"], &refused["status"], refused.get("user")),
        (&json!("listAgents"), &json!(401), None)
    );
    // This server's `signature`, or a bucket's `X-Amz-Signature`.
    let query = upload_url.split_once('?').unwrap().1;
    let signature = query
        .split('&')
        .find_map(|pair| {
            pair.split_once('=').filter(|(name, _)| name.to_lowercase().ends_with("signature"))
        })
        .unwrap()
        .1;
    for secret in [token.as_str(), &token["vm0_live_".len()..], signature] {
        assert!(!text.contains(secret), "the log holds a secret");
    }
}

/// Sends SIGTERM to the server.
fn terminate(server: &Server) {
    // SAFETY: kill(2) on the child's pid, which the test owns and has not reaped.
    assert_eq!(unsafe { libc::kill(server.child.id() as i32, libc::SIGTERM) }, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_drains_within_its_grace() {
    let data = tempfile::tempdir().unwrap();
    let (mut server, token) =
        start(data.path(), &["--max-concurrent-runs", "1", "--shutdown-grace-seconds", "8"]).await;
    let token = token.unwrap();
    let api = api(&server, &token);
    api.shell_agent().await;
    let long = api.run("sleep 60").await;
    api.until_event(&long, DEADLINE, "running", |event, data| {
        event == "status" && data["status"] == "running"
    })
    .await;
    let queued = api.run("echo after the restart").await;

    // An event stream, and an upload sent slowly, both open when the signal comes.
    let events = api
        .http
        .get(format!("{}/v1/runs/{long}/events", api.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let mut events = events.bytes_stream();
    let volume = api.volume("slow").await;
    let content: Vec<u8> = (0..64 * 1024u32).map(|i| i as u8).collect();
    let list =
        json!({"files": [{"path": "slow.bin", "size": content.len(), "hash": sha(&content)}]});
    let (_, prepared) =
        api.call(reqwest::Method::POST, &format!("/v1/volumes/{volume}/upload"), Some(list)).await;
    let upload_url = prepared["files"][0]["uploadUrl"].as_str().unwrap().to_string();
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        content.chunks(4096).map(|c| Ok(c.to_vec())).collect();
    // Said once the fourth chunk is asked for: the request's head went out 360 ms before,
    // so the server is reading the request, not waiting for one (a connection between
    // requests is closed by the drain, as HTTP allows).
    let (started, first_chunk) = tokio::sync::oneshot::channel::<()>();
    let mut started = Some(started);
    let slow =
        futures_util::stream::iter(chunks.into_iter().enumerate()).then(move |(i, chunk)| {
            let signal = if i == 3 { started.take() } else { None };
            async move {
                if let Some(signal) = signal {
                    signal.send(()).ok();
                }
                tokio::time::sleep(Duration::from_millis(120)).await;
                chunk
            }
        });
    let upload =
        tokio::spawn(api.http.put(upload_url).body(reqwest::Body::wrap_stream(slow)).send());
    first_chunk.await.unwrap();

    let signalled = Instant::now();
    terminate(&server);
    // The event stream ends, for its client to resume elsewhere.
    within(Duration::from_secs(5), "the event stream's end", async {
        while events.next().await.is_some_and(|chunk| chunk.is_ok()) {}
    })
    .await;
    // The upload in flight finishes: 16 chunks, about 2 s.
    let uploaded = within(DEADLINE, "the slow upload", upload).await.unwrap().unwrap();
    assert!(
        uploaded.status().is_success() || blobs_in_a_bucket(data.path()).await,
        "the upload in flight answered {}",
        uploaded.status()
    );
    // No new connection is taken.
    assert!(
        reqwest::Client::new().get(format!("{}/healthz", server.url)).send().await.is_err(),
        "a draining server took a new connection"
    );
    let status = within(Duration::from_secs(8 + 10), "the server's exit", async {
        loop {
            if let Some(status) = server.child.try_wait().unwrap() {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(status.success(), "the drained server exited with {status}");
    let took = signalled.elapsed();
    drop(server);

    // The run still executing was stopped before the grace ran out, saying so; the queued
    // one waited for the next start, and runs then.
    let (server, _) = start(data.path(), &[]).await;
    let api = Api { url: server.url.clone(), ..api };
    let (_, ended) = api.call(reqwest::Method::GET, &format!("/v1/runs/{long}"), None).await;
    assert_eq!(
        (&ended["status"], &ended["error"]),
        (&json!("failed"), &json!("The server shut down before the run finished")),
        "{ended}"
    );
    api.until_event(&queued, DEADLINE, "the queued run's completion", |event, data| {
        event == "complete" && data["status"] == "completed"
    })
    .await;
    assert!(took < Duration::from_secs(8 + 5), "the drain took {took:?}, past its 8 s grace");
}

/// Every agent and every version of every volume, with each file's bytes checked: what a
/// restored server must serve. The counts.
async fn read_everything(api: &Api) -> (usize, usize, usize) {
    let list_all = |path: String| async move {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = match &cursor {
                Some(c) => format!("{path}?limit=100&cursor={c}"),
                None => format!("{path}?limit=100"),
            };
            let (status, body) = api.call(reqwest::Method::GET, &page, None).await;
            assert_eq!(status, 200, "{page}: {body}");
            items.extend(body["data"].as_array().unwrap().iter().cloned());
            cursor = body["pagination"]["nextCursor"].as_str().map(str::to_string);
            if cursor.is_none() {
                return items;
            }
        }
    };
    let agents = list_all("/v1/agents".to_string()).await;
    for agent in &agents {
        let id = agent["id"].as_str().unwrap();
        assert_eq!(api.call(reqwest::Method::GET, &format!("/v1/agents/{id}"), None).await.0, 200);
    }
    let (mut versions, mut files) = (0, 0);
    for volume in list_all("/v1/volumes".to_string()).await {
        let id = volume["id"].as_str().unwrap();
        for version in list_all(format!("/v1/volumes/{id}/versions")).await {
            versions += 1;
            let version = version["id"].as_str().unwrap();
            let (status, download) = api
                .call(
                    reqwest::Method::GET,
                    &format!("/v1/volumes/{id}/download?versionId={version}"),
                    None,
                )
                .await;
            assert_eq!(status, 200, "{download}");
            for file in download["files"].as_array().unwrap() {
                let bytes = api
                    .http
                    .get(file["downloadUrl"].as_str().unwrap())
                    .send()
                    .await
                    .unwrap()
                    .bytes()
                    .await
                    .unwrap();
                assert_eq!(
                    (bytes.len() as u64, sha(&bytes)),
                    (file["size"].as_u64().unwrap(), file["hash"].as_str().unwrap().to_string()),
                    "{file}"
                );
                files += 1;
            }
        }
    }
    (agents.len(), versions, files)
}

fn server_command(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_vm0-server")).args(args).output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_under_write_load_restores_consistent() {
    let data = tempfile::tempdir().unwrap();
    let (server, token) = start(data.path(), &[]).await;
    let api = api(&server, &token.unwrap());
    let archive = data.path().join("backup.tar");
    let dir = data.path().display().to_string();

    if vm0_server::testing::database_url(data.path()).await.unwrap().is_some() {
        let output = server_command(&[
            "backup",
            "--data-dir",
            &dir,
            "--database-url",
            "postgres://x@localhost/x",
            "--to",
            &archive.display().to_string(),
        ]);
        assert!(!output.status.success());
        assert!(String::from_utf8_lossy(&output.stderr).contains("pg_dump"), "{output:?}");
        return;
    }

    let (stop, mut written, writers) = write_without_pause(&api);
    within(DEADLINE, "3 rounds written", written.wait_for(|n| *n >= 3)).await.unwrap();
    let backup = tokio::task::spawn_blocking({
        let (dir, archive) = (dir.clone(), archive.display().to_string());
        move || server_command(&["backup", "--data-dir", &dir, "--to", &archive])
    });
    let output = within(DEADLINE, "the backup", backup).await.unwrap();
    assert!(output.status.success(), "backup: {output:?}");
    let said = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(said.contains("and the secrets key"), "{said}");
    // Writes go on after the snapshot, which the restored server must not have.
    let after = *written.borrow();
    within(DEADLINE, "3 rounds written after the backup", written.wait_for(|n| *n >= after + 3))
        .await
        .unwrap();
    stop.cancel();
    let mut rounds = 0;
    for writer in writers {
        rounds += writer.await.unwrap();
    }
    assert!(rounds > 3, "the writers wrote {rounds} rounds");
    let live = read_everything(&api).await;
    drop(server);
    #[cfg(unix)]
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&archive).unwrap().permissions()
        ) & 0o777,
        0o600
    );

    let restored = tempfile::tempdir().unwrap();
    let target = restored.path().join("data");
    restored_serves_what_it_lists(&archive, &target, &api, live).await;
    restore_refuses(&archive, &target, restored.path());
}

/// Writers, without pause: agents, and versions of volumes with files of their own. What
/// stops them, the count of rounds done, and the writers, each ending with its rounds.
fn write_without_pause(
    api: &Api,
) -> (
    tokio_util::sync::CancellationToken,
    tokio::sync::watch::Receiver<u32>,
    Vec<tokio::task::JoinHandle<u32>>,
) {
    let stop = tokio_util::sync::CancellationToken::new();
    let (count, written) = tokio::sync::watch::channel(0u32);
    let count = std::sync::Arc::new(count);
    let mut writers = Vec::new();
    for worker in 0..3 {
        let api =
            Api { http: reqwest::Client::new(), url: api.url.clone(), token: api.token.clone() };
        let (stop, count) = (stop.clone(), count.clone());
        writers.push(tokio::spawn(async move {
            let volume = api.volume(&format!("volume-{worker}")).await;
            let mut round = 0u32;
            while !stop.is_cancelled() {
                let name = format!("agent-{worker}-{round}");
                let agent = json!({"name": name, "config": {"command": ["true"]}});
                assert_eq!(api.call(reqwest::Method::POST, "/v1/agents", Some(agent)).await.0, 201);
                let file =
                    |i| (format!("f{i}"), format!("{worker}-{round}-{i}").repeat(500).into_bytes());
                let files: Vec<(String, Vec<u8>)> = (0..3).map(file).collect();
                assert!(api.push(&volume, &files).await);
                round += 1;
                count.send_modify(|n| *n += 1);
            }
            round
        }));
    }
    (stop, written, writers)
}

/// Restored from `archive` into the new data directory `target`, the server serves every
/// object it lists: no more than the `live` server had when it stopped.
async fn restored_serves_what_it_lists(
    archive: &Path,
    target: &Path,
    api: &Api,
    live: (usize, usize, usize),
) {
    let target_dir = target.display().to_string();
    let output = server_command(&[
        "restore",
        "--data-dir",
        &target_dir,
        "--from",
        &archive.display().to_string(),
    ]);
    assert!(output.status.success(), "restore: {output:?}");
    let (server, first) = start(target, &[]).await;
    assert!(first.is_none(), "the restored server made a new first user");
    let api = api.clone_for(&server);
    let (agents, versions, files) = read_everything(&api).await;
    assert!(
        agents >= 3 && versions >= 3 && files == versions * 3,
        "restored {agents} agents, {versions} versions, {files} files"
    );
    assert!(
        agents <= live.0 && versions <= live.1,
        "restored more than there was: {:?} of {live:?}",
        (agents, versions, files)
    );
    drop(server);
}

/// Restore refuses a data directory that has a database, and a damaged archive.
fn restore_refuses(archive: &Path, target: &Path, scratch: &Path) {
    let target_dir = target.display().to_string();
    let output = server_command(&[
        "restore",
        "--data-dir",
        &target_dir,
        "--from",
        &archive.display().to_string(),
    ]);
    assert!(
        !output.status.success()
            && String::from_utf8_lossy(&output.stderr)
                .contains("exists: restore into a new data directory"),
        "{output:?}"
    );
    let mut bytes = std::fs::read(archive).unwrap();
    let at =
        bytes.windows(10).position(|w| w == b"0-0-00-0-0").expect("a file's bytes in the archive");
    bytes[at] ^= 1;
    let damaged = scratch.join("damaged.tar");
    std::fs::write(&damaged, bytes).unwrap();
    let other = scratch.join("other").display().to_string();
    let output = server_command(&[
        "restore",
        "--data-dir",
        &other,
        "--from",
        &damaged.display().to_string(),
    ]);
    assert!(
        !output.status.success()
            && String::from_utf8_lossy(&output.stderr).contains("does not hold its hash's bytes"),
        "{output:?}"
    );
    assert!(!Path::new(&other).join("vm0.db").exists(), "a damaged restore left a database");
}

/// Connections that say nothing more are closed by the server once its connection
/// timeout has passed (2 s here; 30 s by default): idle ones, one whose request headers
/// never end, and one whose body stops half way; meanwhile `/healthz` answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_closed_after_the_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let data = tempfile::tempdir().unwrap();
    let (server, token) = start(data.path(), &["--connection-timeout-seconds", "2"]).await;
    let address = server.url.trim_start_matches("http://").to_string();
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(tokio::net::TcpStream::connect(&address).await.unwrap());
    }
    let mut headers = tokio::net::TcpStream::connect(&address).await.unwrap();
    headers.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    silent.push(headers);
    let mut body = tokio::net::TcpStream::connect(&address).await.unwrap();
    let request = format!(
        "POST /v1/agents HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"name\":",
        token.unwrap()
    );
    body.write_all(request.as_bytes()).await.unwrap();
    silent.push(body);
    let opened = Instant::now();
    let (status, _) = api(&server, "").call(reqwest::Method::GET, "/healthz", None).await;
    assert_eq!(status, 200, "the server answers beside them");
    for (i, mut connection) in silent.into_iter().enumerate() {
        let mut rest = Vec::new();
        within(Duration::from_secs(10), &format!("connection {i} closed"), async {
            connection.read_to_end(&mut rest).await.ok();
        })
        .await;
    }
    let closed = opened.elapsed();
    eprintln!("22 silent connections closed by the server within {closed:?}");
    assert!(closed >= Duration::from_secs(2), "not before the timeout: {closed:?}");
}

/// A malformed request head (a bad request line, obsolete line folding, a bad
/// `Content-Length`) is answered 400 in the API's error envelope, and the connection
/// closed; a good request on a connection of its own still gets its answer.
#[tokio::test]
async fn malformed_http_is_answered_in_the_envelope() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let data = tempfile::tempdir().unwrap();
    let (server, _) = start(data.path(), &[]).await;
    let address = server.url.trim_start_matches("http://").to_string();
    let cases: [(&str, &[u8], Option<&str>); 6] = [
        ("a bad request line", b"GARBAGE\r\n\r\n", None),
        ("a bad version", b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n", None),
        ("a folded header", b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n", None),
        (
            "a Content-Length that is no number",
            b"POST /v1/agents HTTP/1.1\r\nHost: x\r\nContent-Length: 1e3\r\n\r\n",
            Some("Content-Length"),
        ),
        (
            "two different Content-Lengths",
            b"POST /v1/agents HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
            Some("Content-Length"),
        ),
        ("a good request", b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", None),
    ];
    for (what, request, param) in cases {
        let mut connection = tokio::net::TcpStream::connect(&address).await.unwrap();
        connection.write_all(request).await.unwrap();
        let mut answer = Vec::new();
        within(Duration::from_secs(10), what, connection.read_to_end(&mut answer)).await.unwrap();
        let answer = String::from_utf8_lossy(&answer);
        let (head, body) = answer.split_once("\r\n\r\n").unwrap_or_else(|| panic!("{answer}"));
        if what == "a good request" {
            assert!(head.starts_with("HTTP/1.1 200"), "{what}: {answer}");
            continue;
        }
        assert!(head.starts_with("HTTP/1.1 400"), "{what}: {answer}");
        assert!(head.to_ascii_lowercase().contains("content-type: application/json"), "{answer}");
        let body: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(body["error"]["type"], "invalid_request_error", "{what}: {body}");
        assert_eq!(body["error"]["param"].as_str(), param, "{what}: {body}");
    }
}
