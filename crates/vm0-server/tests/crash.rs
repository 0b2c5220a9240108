//! SIGKILL in the middle of uploads and commits, then a restart: no partial version is
//! visible, the database is intact, partial uploads are gone, and the interrupted upload
//! can be retried to success.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;

mod common;
use common::{processes_of, sha, within, Api, Server, DEADLINE};

/// Starts the server binary over `data_dir` on the test's database and blob store, with
/// one run at a time.
async fn start(data_dir: &std::path::Path, listen: &str) -> (Server, Option<String>) {
    let mut args: Vec<String> =
        ["--listen", listen, "--log", "warn", "--max-concurrent-runs", "1", "--data-dir"]
            .map(String::from)
            .into();
    args.push(data_dir.display().to_string());
    args.extend(common::backend_args(data_dir).await);
    common::spawn(&args)
}

/// The PIDs of the processes whose command line matches `pattern`, by pgrep(1).
fn running(pattern: &str) -> Vec<String> {
    let output = Command::new("pgrep").args(["-f", pattern]).output().expect("pgrep runs");
    String::from_utf8_lossy(&output.stdout).split_whitespace().map(str::to_string).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_server_restarts_with_nothing_partial() {
    let data = tempfile::tempdir().unwrap();
    let (server, token) = start(data.path(), "127.0.0.1:0").await;
    let api = Api { http: reqwest::Client::new(), url: server.url.clone(), token: token.unwrap() };
    let (_, busy) =
        api.call(reqwest::Method::POST, "/v1/volumes", Some(json!({"name": "busy"}))).await;
    let (_, big) =
        api.call(reqwest::Method::POST, "/v1/volumes", Some(json!({"name": "big"}))).await;
    let (busy, big) =
        (busy["id"].as_str().unwrap().to_string(), big["id"].as_str().unwrap().to_string());

    let (committed, workers) = commit_in_a_loop(&api, &busy);

    // A large upload, sent slowly, killed halfway; it starts once a commit has completed.
    let (content, prepared) = prepare_large_upload(&api, &big).await;
    let upload_url = prepared["files"][0]["uploadUrl"].as_str().unwrap().to_string();
    let (slow, reached) = slowly(&content);
    within(DEADLINE, "a first commit on the busy volume", committed.notified()).await;
    let upload = tokio::spawn({
        let http = api.http.clone();
        let url = upload_url.clone();
        async move { http.put(url).body(reqwest::Body::wrap_stream(slow)).send().await }
    });
    within(DEADLINE, "the large upload reaching its middle chunk", reached)
        .await
        .expect("the large upload's body was dropped before its middle");
    let address = server.url.trim_start_matches("http://").to_string();
    drop(server); // SIGKILL
    for worker in workers {
        worker.abort();
    }
    let killed = within(DEADLINE, "the killed upload's end", upload).await.unwrap();
    if let vm0_server::BlobLocation::S3 { .. } =
        vm0_server::testing::blob_store(data.path()).await.unwrap()
    {
        // It went to the bucket, which the kill did not touch; its commit is still to come.
        assert!(
            killed.is_ok_and(|r| r.status().is_success()),
            "the upload to the bucket was cut off"
        );
    } else {
        assert!(
            killed.map(|r| !r.status().is_success()).unwrap_or(true),
            "the killed upload did not succeed"
        );
    }

    // The same address, as the pre-signed URLs name it.
    let (server, _) = start(data.path(), address.as_str()).await;
    let api =
        Api { http: reqwest::Client::new(), url: server.url.clone(), token: api.token.clone() };
    assert_eq!(
        std::fs::read_dir(data.path().join("tmp")).unwrap().count(),
        0,
        "partial uploads are gone"
    );

    let versions = every_version_is_complete(&api, &busy).await;
    database_is_intact(data.path()).await;
    retried_and_committed(&api, &big, &content, &prepared).await;
    eprintln!("{versions} versions survived the kill intact");
}

/// Four workers that commit in a loop on the volume `busy`, each version with files of its
/// own; each successful commit is announced.
fn commit_in_a_loop(
    api: &Api,
    busy: &str,
) -> (Arc<tokio::sync::Notify>, Vec<tokio::task::JoinHandle<()>>) {
    let committed = Arc::new(tokio::sync::Notify::new());
    let mut workers = Vec::new();
    for worker in 0..4 {
        let api =
            Api { http: reqwest::Client::new(), url: api.url.clone(), token: api.token.clone() };
        let (busy, committed) = (busy.to_string(), committed.clone());
        workers.push(tokio::spawn(async move {
            for round in 0..10_000u32 {
                let files: Vec<(String, Vec<u8>)> = (0..3)
                    .map(|i| {
                        (
                            format!("w{worker}/f{i}"),
                            format!("{worker}-{round}-{i}").repeat(1000).into_bytes(),
                        )
                    })
                    .collect();
                if api.push(&busy, &files).await {
                    committed.notify_one();
                }
            }
        }));
    }
    (committed, workers)
}

/// 8 MiB for the volume `big`, and its prepared upload.
async fn prepare_large_upload(api: &Api, big: &str) -> (Vec<u8>, serde_json::Value) {
    let content: Vec<u8> =
        (0..8 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8).collect();
    let files =
        json!({"files": [{"path": "large.bin", "size": content.len(), "hash": sha(&content)}]});
    let (status, prepared) =
        api.call(reqwest::Method::POST, &format!("/v1/volumes/{big}/upload"), Some(files)).await;
    assert_eq!(status, 200);
    (content, prepared)
}

/// `content` as a body sent slowly, in chunks of 256 KiB, and a receiver told when its
/// middle chunk is taken.
fn slowly(
    content: &[u8],
) -> (
    impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>>,
    tokio::sync::oneshot::Receiver<()>,
) {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        content.chunks(256 * 1024).map(|c| Ok(c.to_vec())).collect();
    let middle = chunks.len() / 2;
    let (halfway, reached) = tokio::sync::oneshot::channel::<()>();
    let mut halfway = Some(halfway);
    let slow =
        futures_util::stream::iter(chunks.into_iter().enumerate()).then(move |(i, chunk)| {
            let signal = if i == middle { halfway.take() } else { None };
            async move {
                tokio::time::sleep(Duration::from_millis(40)).await;
                if let Some(signal) = signal {
                    signal.send(()).ok();
                }
                chunk
            }
        });
    (slow, reached)
}

/// Every visible version of `busy` is complete: every file downloads with its size and
/// hash. How many there are.
async fn every_version_is_complete(api: &Api, busy: &str) -> usize {
    let mut versions = Vec::new();
    let mut query = String::from("limit=100");
    loop {
        let (_, page) = api
            .call(reqwest::Method::GET, &format!("/v1/volumes/{busy}/versions?{query}"), None)
            .await;
        versions.extend(page["data"].as_array().unwrap().iter().cloned());
        match page["pagination"]["nextCursor"].as_str() {
            Some(cursor) => query = format!("limit=100&cursor={cursor}"),
            None => break,
        }
    }
    assert!(!versions.is_empty(), "some commits completed before the kill");
    for version in &versions {
        let id = version["id"].as_str().unwrap();
        let (status, download) = api
            .call(
                reqwest::Method::GET,
                &format!("/v1/volumes/{busy}/download?versionId={id}"),
                None,
            )
            .await;
        assert_eq!(status, 200);
        let files = download["files"].as_array().unwrap();
        assert_eq!(files.len() as i64, version["fileCount"].as_i64().unwrap());
        for file in files {
            let bytes = api
                .http
                .get(file["downloadUrl"].as_str().unwrap())
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            assert_eq!(bytes.len() as i64, file["size"].as_i64().unwrap());
            assert_eq!(sha(&bytes), file["hash"].as_str().unwrap());
        }
    }
    versions.len()
}

/// The database is intact (PostgreSQL's own recovery needs no check of ours).
async fn database_is_intact(data: &std::path::Path) {
    if vm0_server::testing::database_url(data).await.unwrap().is_none() {
        let pool =
            sqlx::SqlitePool::connect(&format!("sqlite://{}", data.join("vm0.db").display()))
                .await
                .unwrap();
        let check: String =
            sqlx::query_scalar("PRAGMA integrity_check").fetch_one(&pool).await.unwrap();
        assert_eq!(check, "ok");
        pool.close().await;
    }
}

/// The interrupted upload can be retried with the same URL, and committed.
async fn retried_and_committed(api: &Api, big: &str, content: &[u8], prepared: &serde_json::Value) {
    let upload_url = prepared["files"][0]["uploadUrl"].as_str().unwrap();
    let done = api.http.put(upload_url).body(content.to_vec()).send().await.unwrap();
    assert!(done.status().is_success(), "{}", done.status());
    let session = prepared["uploadSessionId"].clone();
    let (status, version) = api
        .call(
            reqwest::Method::POST,
            &format!("/v1/volumes/{big}/commit"),
            Some(json!({"uploadSessionId": session})),
        )
        .await;
    assert_eq!(status, 200, "{version}");
    let (_, download) =
        api.call(reqwest::Method::GET, &format!("/v1/volumes/{big}/download"), None).await;
    let bytes = api
        .http
        .get(download["files"][0]["downloadUrl"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(sha(&bytes), sha(content));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_leaves_no_run_running_or_pending() {
    let data = tempfile::tempdir().unwrap();
    let (server, token) = start(data.path(), "127.0.0.1:0").await;
    let api = Api { http: reqwest::Client::new(), url: server.url.clone(), token: token.unwrap() };
    let agent =
        json!({"name": "shell", "config": {"command": ["sh", "-c", "eval \"$VM0_PROMPT\""]}});
    assert_eq!(api.call(reqwest::Method::POST, "/v1/agents", Some(agent)).await.0, 201);
    // One slot: the first run executes, the second waits.
    // The first run leaves processes in the background, one in a session of its own.
    let prompt = "setsid sleep 30.0424501 & sleep 30.0424502 & echo started; wait";
    let (_, first) = api
        .call(reqwest::Method::POST, "/v1/runs", Some(json!({"agent": "shell", "prompt": prompt})))
        .await;
    let (_, second) = api
        .call(
            reqwest::Method::POST,
            "/v1/runs",
            Some(json!({"agent": "shell", "prompt": "echo after"})),
        )
        .await;
    let (first, second) =
        (first["id"].as_str().unwrap().to_string(), second["id"].as_str().unwrap().to_string());
    api.until_event(&first, DEADLINE, "the output \"started\"", |event, data| {
        event == "output" && data["content"] == "started"
    })
    .await;
    let address = server.url.trim_start_matches("http://").to_string();
    // "started" may come before both background shells have exec'd their sleep.
    within(DEADLINE, "both background processes running", async {
        while running("sleep 30.042450").len() < 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    drop(server); // SIGKILL
                  // Nothing of the run outlives the server.
    let gone =
        within(Duration::from_secs(5), "the run's processes ending with the server", async {
            while !running("sleep 30.042450").is_empty() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
    gone.await;

    let (server, _) = start(data.path(), address.as_str()).await;
    let api =
        Api { http: reqwest::Client::new(), url: server.url.clone(), token: api.token.clone() };
    let (_, run) = api.call(reqwest::Method::GET, &format!("/v1/runs/{first}"), None).await;
    assert_eq!(run["status"], "failed", "{run}");
    assert!(run["error"].as_str().unwrap().contains("stopped"), "{run}");
    // The pending run is picked up again and runs to the end.
    api.until_event(
        &second,
        Duration::from_secs(20),
        "the pending run picked up again and ended",
        |event, _| event == "complete",
    )
    .await;
    let (_, run) = api.call(reqwest::Method::GET, &format!("/v1/runs/{second}"), None).await;
    assert_eq!(run["status"], "completed", "{run}");
    let (_, runs) = api.call(reqwest::Method::GET, "/v1/runs", None).await;
    for run in runs["data"].as_array().unwrap() {
        assert!(run["status"] != "running" && run["status"] != "pending", "{run}");
    }
}

/// An unsandboxed run's processes, the agent's children in the background too, die with
/// a killed server, within 5 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsandboxed_run_dies_with_the_server() {
    let data = tempfile::tempdir().unwrap();
    let mut args: Vec<String> =
        ["--listen", "127.0.0.1:0", "--log", "warn", "--unsandboxed-runs", "--data-dir"]
            .map(String::from)
            .into();
    args.push(data.path().display().to_string());
    args.extend(common::backend_args(data.path()).await);
    let (server, token) = common::spawn(&args);
    let api = Api { http: reqwest::Client::new(), url: server.url.clone(), token: token.unwrap() };
    api.shell_agent().await;
    let run = api.run("sleep 300 & sleep 301 & echo started; wait").await;
    api.until_event(&run, DEADLINE, "its first line", |event, data| {
        event == "output" && data["content"] == "started"
    })
    .await;
    let before = processes_of(&run);
    assert!(before.len() >= 3, "the agent and its two sleeps: {before:?}");
    drop(server); // SIGKILL
    let left = within(Duration::from_secs(5), "the run's processes dying", async {
        loop {
            let left = processes_of(&run);
            if left.is_empty() {
                return left;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert_eq!(left, Vec::<u32>::new());
}
