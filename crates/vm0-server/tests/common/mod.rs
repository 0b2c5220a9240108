//! What the server's own integration tests share: a JSON client of one token, and the
//! server binary as a process. Each test binary uses part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// The SHA-256 of `bytes` in hex, as the API names files.
pub(crate) fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The API at `url`, as the holder of `token` calls it.
#[derive(Clone)]
pub(crate) struct Api {
    pub(crate) http: reqwest::Client,
    pub(crate) url: String,
    pub(crate) token: String,
}

impl Api {
    /// One call: its status and JSON body, or status 0 when the server did not answer
    /// (it may have been killed on purpose).
    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request =
            self.http.request(method, format!("{}{path}", self.url)).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                (status, response.json().await.unwrap_or(Value::Null))
            }
            Err(_) => (0, Value::Null),
        }
    }

    /// Prepare, upload and commit `files`; stops quietly at the first failure (the server
    /// may be killed at any point). Whether the commit succeeded.
    pub(crate) async fn push(&self, volume: &str, files: &[(String, Vec<u8>)]) -> bool {
        let list: Vec<Value> = files
            .iter()
            .map(|(p, b)| json!({"path": p, "size": b.len(), "hash": sha(b)}))
            .collect();
        let (status, prepared) = self
            .call(
                reqwest::Method::POST,
                &format!("/v1/volumes/{volume}/upload"),
                Some(json!({"files": list})),
            )
            .await;
        if status != 200 {
            return false;
        }
        for (target, (_, bytes)) in prepared["files"].as_array().unwrap().iter().zip(files) {
            if self
                .http
                .put(target["uploadUrl"].as_str().unwrap())
                .body(bytes.clone())
                .send()
                .await
                .is_err()
            {
                return false;
            }
        }
        let session = prepared["uploadSessionId"].clone();
        self.call(
            reqwest::Method::POST,
            &format!("/v1/volumes/{volume}/commit"),
            Some(json!({"uploadSessionId": session})),
        )
        .await
        .0 == 200
    }

    /// Creates the agent `shell`, which evaluates its prompt with `sh`.
    pub(crate) async fn shell_agent(&self) {
        let config =
            json!({"command": ["sh", "-c", "eval \"$VM0_PROMPT\""], "timeoutSeconds": 120});
        let agent = json!({"name": "shell", "config": config});
        assert_eq!(self.call(reqwest::Method::POST, "/v1/agents", Some(agent)).await.0, 201);
    }

    /// Creates a run of the agent `shell`; its id.
    pub(crate) async fn run(&self, prompt: &str) -> String {
        let (status, run) = self
            .call(
                reqwest::Method::POST,
                "/v1/runs",
                Some(json!({"agent": "shell", "prompt": prompt})),
            )
            .await;
        assert_eq!(status, 202, "createRun: {run}");
        run["id"].as_str().unwrap().to_string()
    }

    /// Reads the run's event stream until an event for which `wanted(name, data)` holds,
    /// within `deadline`, and returns its data; panics naming `what` if the stream fails
    /// or closes first.
    pub(crate) async fn until_event(
        &self,
        run: &str,
        deadline: Duration,
        what: &str,
        wanted: impl Fn(&str, &Value) -> bool,
    ) -> Value {
        let what = format!("run {run}: {what}");
        let response = self
            .http
            .get(format!("{}/v1/runs/{run}/events", self.url))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{what}: the event stream answered {}",
            response.status()
        );
        let mut stream = response.bytes_stream();
        let mut text = String::new();
        let found = within(deadline, &what, async {
            while let Some(chunk) = stream.next().await {
                text.push_str(&String::from_utf8_lossy(&chunk.expect("the event stream reads")));
                while let Some(end) = text.find("\n\n") {
                    let block: String = text.drain(..end + 2).collect();
                    let field = |name: &str| {
                        block
                            .lines()
                            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
                            .unwrap_or_default()
                            .to_string()
                    };
                    let data: Value = serde_json::from_str(&field("data")).unwrap_or(Value::Null);
                    if wanted(&field("event"), &data) {
                        return Some(data);
                    }
                }
            }
            None
        })
        .await;
        found.unwrap_or_else(|| panic!("{what}: the event stream closed first"))
    }
}

/// How long the test waits for anything before it fails.
pub(crate) const DEADLINE: Duration = Duration::from_secs(30);

/// The output of `future`, or a panic naming `what` if it takes longer than `deadline`.
pub(crate) async fn within<T>(
    deadline: Duration,
    what: &str,
    future: impl std::future::Future<Output = T>,
) -> T {
    match tokio::time::timeout(deadline, future).await {
        Ok(value) => value,
        Err(_) => panic!("{what}: not within {deadline:?}"),
    }
}

/// A `vm0-server` process, killed (SIGKILL) when dropped.
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) url: String,
    /// The lines of its banner after the first.
    pub(crate) banner: Vec<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// The arguments that put a server over `data_dir` on the test's database and blob store
/// (`vm0_server::testing`).
pub(crate) async fn backend_args(data_dir: &std::path::Path) -> Vec<String> {
    let mut args = Vec::new();
    if let Some(url) = vm0_server::testing::database_url(data_dir).await.unwrap() {
        args.extend(["--database-url".to_string(), url]);
    }
    if let vm0_server::BlobLocation::S3 { bucket, prefix, endpoint } =
        vm0_server::testing::blob_store(data_dir).await.unwrap()
    {
        args.extend(["--blob-store".to_string(), format!("s3://{bucket}/{prefix}")]);
        args.extend(endpoint.map(|e| ["--s3-endpoint".to_string(), e]).into_iter().flatten());
    }
    args
}

/// Starts the server binary with `args`, and reads its banner: its URL, and the first
/// token when this start created the first user.
pub(crate) fn spawn(args: &[String]) -> (Server, Option<String>) {
    spawn_with(args, Stdio::inherit())
}

/// `spawn`, with the server's standard error (its log) going to `stderr`.
pub(crate) fn spawn_with(args: &[String], stderr: impl Into<Stdio>) -> (Server, Option<String>) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vm0-server"));
    command.args(args).stderr(stderr);
    spawn_command(command)
}

/// Starts the server binary as `command` says, and reads its banner as `spawn` does.
pub(crate) fn spawn_command(mut command: Command) -> (Server, Option<String>) {
    let args: Vec<_> = command.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
    let mut child = command.stdout(Stdio::piped()).spawn().unwrap();
    let (lines, banner) = std::sync::mpsc::channel();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    // Read to the end, so that the server never blocks on a full pipe.
    std::thread::spawn(move || {
        stdout.lines().map_while(Result::ok).for_each(|line| drop(lines.send(line)))
    });
    let next = |wait: Duration| banner.recv_timeout(wait).ok();
    let first = next(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("vm0-server {args:?} printed nothing"));
    let url = first
        .strip_prefix("vm0-server listening on ")
        .unwrap_or_else(|| panic!("not the banner: {first}"))
        .to_string();
    // The banner is one write: a token, when there is one, comes with the rest of it.
    let banner: Vec<String> = std::iter::from_fn(|| next(Duration::from_secs(1))).collect();
    let token = banner.iter().find_map(|l| {
        l.split_whitespace().find(|w| w.starts_with("vm0_live_")).map(str::to_string)
    });
    (Server { child, url, banner }, token)
}

/// Six continuations of one session of `agent` (which evaluates its prompt with `sh`) sent
/// at once to the first two of `apis` run one after another, each from the checkpoint of
/// the one before: a counter kept in a file reaches 7, and no two of the runs were ever
/// running together, by the database's history (`db`).
pub(crate) async fn continuations_at_once(apis: &[Api], agent: &str, db: &sqlx::PgPool) {
    let count = "n=$(cat counter 2>/dev/null || echo 0); echo $((n + 1)) > counter; cat counter";
    let body = json!({"agent": agent, "prompt": count});
    let (status, first) = apis[0].call(reqwest::Method::POST, "/v1/runs", Some(body)).await;
    assert_eq!(status, 202, "{first}");
    let first = first["id"].as_str().unwrap();
    apis[0].until_event(first, DEADLINE, "its end", |event, _| event == "complete").await;
    let (_, detail) = apis[0].call(reqwest::Method::GET, &format!("/v1/runs/{first}"), None).await;
    let session = detail["sessionId"].clone();
    let body = json!({"sessionId": session, "prompt": count});
    let created = futures_util::future::join_all((0..6).map(|i| {
        let body = body.clone();
        async move { apis[i % 2].call(reqwest::Method::POST, "/v1/runs", Some(body)).await }
    }))
    .await;
    let mut counts = Vec::new();
    for (status, run) in created {
        assert_eq!(status, 202, "{run}");
        let run = run["id"].as_str().unwrap();
        let wait = Duration::from_secs(60);
        let output =
            apis[1].until_event(run, wait, "its output", |event, _| event == "output").await;
        apis[1].until_event(run, wait, "its end", |event, _| event == "complete").await;
        counts.push(output["content"].as_str().unwrap().trim().to_string());
    }
    counts.sort_by_key(|c| c.parse::<u32>().unwrap_or(0));
    assert_eq!(counts, ["2", "3", "4", "5", "6", "7"], "each continued from the one before");
    // The database's history of the session: every run completed, none started before the
    // one before it ended.
    let history: Vec<(String, chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)> =
        sqlx::query_as(
            "SELECT status, started_at, completed_at FROM runs WHERE session_id = $1 \
             ORDER BY started_at",
        )
        .bind(session.as_str().unwrap())
        .fetch_all(db)
        .await
        .unwrap();
    assert_eq!(history.len(), 7);
    assert!(history.iter().all(|(status, ..)| status == "completed"), "{history:?}");
    for pair in history.windows(2) {
        assert!(pair[0].2 <= pair[1].1, "two runs of one session overlapped: {history:?}");
    }
}

/// The processes whose environment holds `VM0_RUN_ID=run`: a run's, wherever they went.
pub(crate) fn processes_of(run: &str) -> Vec<u32> {
    let wanted = format!("VM0_RUN_ID={run}");
    let pids = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok());
    pids.filter(|pid: &u32| {
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        environ.split(|b| *b == 0).any(|var| var == wanted.as_bytes())
    })
    .collect()
}
