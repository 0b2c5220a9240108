//! Three instances on one PostgreSQL database and one S3 bucket are one service: requests
//! spread round-robin, a directory pushed through one and pulled through another, a run
//! created on one, streamed from a second and cancelled from a third, and the runs of a
//! killed instance ended by the others. It needs the second pass of `cargo xtask ci`
//! (`VM0_TEST_DATABASE_URL` and `VM0_TEST_BLOB_STORE`), and says so when skipped.

use std::time::{Duration, Instant};

use serde_json::json;

mod common;
use common::{within, Api, Server, DEADLINE};
use vm0_server::testing::{SHAPES, SHAPES_KEPT};

/// How long the others may take to end a killed instance's run.
const LOST_WITHIN: Duration = Duration::from_secs(60);

/// One instance: its process, its data directory and its id (the executor runs name).
struct Instance {
    server: Server,
    dir: tempfile::TempDir,
    id: String,
}

impl Instance {
    fn api(&self, token: &str) -> Api {
        Api { http: reqwest::Client::new(), url: self.server.url.clone(), token: token.to_string() }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_instances_serve_one_api() {
    if std::env::var(vm0_server::testing::TEST_DATABASE_URL).is_err()
        || std::env::var(vm0_server::testing::TEST_BLOB_STORE).is_err()
    {
        return eprintln!(
            "skipped: several instances need PostgreSQL and an S3 bucket (the second pass of \
             cargo xtask ci)"
        );
    }
    // One database, bucket prefix and secrets key for all three.
    let shared = tempfile::tempdir().unwrap();
    let mut backend = common::backend_args(shared.path()).await;
    backend.extend([
        "--secrets-key".to_string(),
        shared.path().join("secrets.key").display().to_string(),
    ]);
    let database_url =
        backend[backend.iter().position(|a| a == "--database-url").unwrap() + 1].clone();
    let db = sqlx::PgPool::connect(&database_url).await.unwrap();

    let (mut instances, token) = start_together(3, &backend, &db).await;
    let apis: Vec<Api> = instances.iter().map(|i| i.api(&token)).collect();
    agents_round_robin(&apis).await;
    push_and_pull_across(&instances, &token, &apis[0]).await;
    a_session_on_each(&apis, &db, &instances).await;
    common::continuations_at_once(&apis, "agent-0", &db).await;
    one_key_on_two_instances(&apis, &db).await;
    strangers_refused(&backend, &instances[0]);
    cancelled_from_a_third(&apis, &db, &instances, &token).await;
    killed_runs_end(&mut instances, &apis, &db, &token).await;
}

/// Two instances with `--rate-limit 100`: one token's 180 requests in one window, sent to
/// both in turn, are answered 200 no more than 100 times between them (and no fewer than
/// 96: each instance may hold up to a chunk it reserved and did not use), each refusal a
/// 429 `rate_limit_exceeded` with `Retry-After`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_share_one_rate_limit() {
    if std::env::var(vm0_server::testing::TEST_DATABASE_URL).is_err()
        || std::env::var(vm0_server::testing::TEST_BLOB_STORE).is_err()
    {
        return eprintln!("skipped: several instances need PostgreSQL and an S3 bucket");
    }
    let shared = tempfile::tempdir().unwrap();
    let mut backend = common::backend_args(shared.path()).await;
    backend.extend(["--rate-limit", "100", "--secrets-key"].map(String::from));
    backend.push(shared.path().join("secrets.key").display().to_string());
    let url = backend[backend.iter().position(|a| a == "--database-url").unwrap() + 1].clone();
    let db = sqlx::PgPool::connect(&url).await.unwrap();
    let (instances, token) = start_together(2, &backend, &db).await;
    let apis: Vec<Api> = instances.iter().map(|i| i.api(&token)).collect();
    let get = |api: &Api| api.http.get(format!("{}/v1/agents", api.url)).bearer_auth(&api.token);
    // Started far enough from the window's end for 180 requests to fall in one; the probe
    // counts when it fell in that window.
    let first = get(&apis[0]).send().await.unwrap();
    let state = first.headers()["ratelimit"].to_str().unwrap().to_string();
    let t: u64 = state.rsplit("t=").next().unwrap().parse().unwrap();
    let mut answered = 1;
    if t < 20 {
        tokio::time::sleep(Duration::from_secs(t + 1)).await;
        answered = 0;
    }
    let mut refused = 0;
    for i in 0..180 {
        let response = get(&apis[i % 2]).send().await.unwrap();
        assert!(response.headers().contains_key("ratelimit-policy"));
        match response.status().as_u16() {
            200 => answered += 1,
            429 => {
                assert!(response.headers().contains_key("retry-after"));
                let body: serde_json::Value = response.json().await.unwrap();
                assert_eq!(body["error"]["code"], "rate_limit_exceeded", "{body}");
                refused += 1;
            }
            other => panic!("answered {other}"),
        }
    }
    eprintln!(
        "one token's requests on two instances in one window: {answered} answered, \
         {refused} refused"
    );
    assert!((96..=100).contains(&answered), "{answered} answered under a quota of 100");
}

/// An Idempotency-Key used on one instance is replayed by another, byte for byte; ten
/// createRun requests with one key sent at once to two instances make one run, and each
/// answer is that run or 409 `idempotency_key_in_use`.
async fn one_key_on_two_instances(apis: &[Api], db: &sqlx::PgPool) {
    let send = |api: &Api, path: &str, key: &str, body: &serde_json::Value| {
        let request = api.http.post(format!("{}{path}", api.url)).bearer_auth(&api.token);
        request.header("Idempotency-Key", key).json(body).send()
    };
    let agent = json!({"name": "keyed", "config": {"command": ["sh", "-c", "sleep 1"]}});
    let first = send(&apis[0], "/v1/agents", "agent-key", &agent).await.unwrap();
    assert_eq!(first.status(), 201);
    let first = first.bytes().await.unwrap();
    let again = send(&apis[1], "/v1/agents", "agent-key", &agent).await.unwrap();
    let replayed = again.headers().get("idempotent-replayed").cloned();
    assert_eq!((again.status().as_u16(), replayed), (201, Some("true".parse().unwrap())));
    assert_eq!(again.bytes().await.unwrap(), first, "the first answer, from another instance");

    let run = json!({"agent": "keyed", "prompt": "once"});
    let answers = futures_util::future::join_all((0..10).map(|i| {
        let request = send(&apis[i % 2], "/v1/runs", "run-key", &run);
        async move {
            let response = request.await.unwrap();
            (response.status().as_u16(), response.json::<serde_json::Value>().await.unwrap())
        }
    }))
    .await;
    let mut made = std::collections::BTreeSet::new();
    for (status, body) in &answers {
        match status {
            202 => {
                made.insert(body["id"].as_str().unwrap().to_string());
            }
            409 => assert_eq!(body["error"]["code"], "idempotency_key_in_use", "{body}"),
            _ => panic!("{status}: {body}"),
        }
    }
    assert_eq!(made.len(), 1, "{answers:?}");
    let runs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM runs WHERE prompt = 'once'")
        .fetch_one(db)
        .await
        .unwrap();
    let in_use = answers.iter().filter(|(status, _)| *status == 409).count();
    eprintln!("one key on two instances: {runs} run from 10 requests, {in_use} answered 409");
    assert_eq!(runs, 1);
}

/// Three instances started together on an empty database: one first user, whose token
/// one of them shows.
async fn start_together(
    count: usize,
    backend: &[String],
    db: &sqlx::PgPool,
) -> (Vec<Instance>, String) {
    let starts: Vec<_> = (0..count)
        .map(|_| {
            let dir = tempfile::tempdir().unwrap();
            let args = instance_args(dir.path(), backend);
            (dir, std::thread::spawn(move || common::spawn(&args)))
        })
        .collect();
    let mut instances = Vec::new();
    let mut tokens = Vec::new();
    for (dir, start) in starts {
        let (server, token) = start.join().unwrap();
        tokens.extend(token);
        let id = std::fs::read_to_string(dir.path().join("instance-id")).unwrap();
        instances.push(Instance { server, dir, id });
    }
    assert_eq!(tokens.len(), 1, "one instance made the first user and showed its token");
    let users: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users").fetch_one(db).await.unwrap();
    assert_eq!(users, 1);
    (instances, tokens.remove(0))
}

/// Created, read and listed round-robin; each page of the list from the next instance.
async fn agents_round_robin(apis: &[Api]) {
    let config = json!({"command": ["sh", "-c", "eval \"$VM0_PROMPT\""], "timeoutSeconds": 120});
    let agent = |name: &str| json!({"name": name, "config": config});
    let mut ids = Vec::new();
    for i in 0..7 {
        let (status, created) = apis[i % 3]
            .call(reqwest::Method::POST, "/v1/agents", Some(agent(&format!("agent-{i}"))))
            .await;
        assert_eq!(status, 201, "{created}");
        ids.push(created["id"].as_str().unwrap().to_string());
    }
    for (i, id) in ids.iter().enumerate() {
        let (status, read) =
            apis[(i + 1) % 3].call(reqwest::Method::GET, &format!("/v1/agents/{id}"), None).await;
        assert_eq!((status, read["name"].clone()), (200, json!(format!("agent-{i}"))));
    }
    let (mut listed, mut query, mut page) = (Vec::new(), "limit=2".to_string(), 0);
    loop {
        let (status, body) =
            apis[page % 3].call(reqwest::Method::GET, &format!("/v1/agents?{query}"), None).await;
        assert_eq!(status, 200, "{body}");
        listed.extend(
            body["data"].as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap().to_string()),
        );
        page += 1;
        match body["pagination"]["nextCursor"].as_str() {
            Some(cursor) => query = format!("limit=2&cursor={cursor}"),
            None => break,
        }
    }
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
    assert_eq!(
        (listed, page),
        (newest_first, 4),
        "seven agents in four pages from three instances"
    );
}

/// A directory pushed through one instance and pulled through another: the bytes go
/// between the client and the bucket.
async fn push_and_pull_across(instances: &[Instance], token: &str, api: &Api) {
    let client = |i: usize| vm0_client::Client::new(&instances[i].server.url, token).unwrap();
    let pushed = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(pushed.path().join("data")).unwrap();
    std::fs::write(pushed.path().join("data/a.txt"), "alpha\n").unwrap();
    std::fs::write(
        pushed.path().join("b.bin"),
        (0..200_000u32).map(|i| (i % 251) as u8).collect::<Vec<u8>>(),
    )
    .unwrap();
    let (status, volume) =
        api.call(reqwest::Method::POST, "/v1/volumes", Some(json!({"name": "shared"}))).await;
    assert_eq!(status, 201, "{volume}");
    let volume = volume["id"].as_str().unwrap().to_string();
    let transfer = vm0_client::Transfer::default();
    client(0)
        .push_volume(&volume, pushed.path(), Some("from instance 0"), &transfer)
        .await
        .unwrap();
    let pulled = tempfile::tempdir().unwrap();
    client(1).pull_volume(&volume, None, pulled.path(), &transfer).await.unwrap();
    for file in ["data/a.txt", "b.bin"] {
        assert_eq!(
            std::fs::read(pulled.path().join(file)).unwrap(),
            std::fs::read(pushed.path().join(file)).unwrap(),
            "{file}"
        );
    }
}

/// A session continued on each instance in turn starts from its latest checkpoint, also
/// on an instance whose copy of the session's directory is older, with its files' modes,
/// its links and its empty folders.
async fn a_session_on_each(apis: &[Api], db: &sqlx::PgPool, instances: &[Instance]) {
    let mut session = None;
    for (turn, i) in [0, 1, 0, 2].into_iter().enumerate() {
        let shapes = if turn == 0 { SHAPES } else { SHAPES_KEPT };
        let prompt =
            format!("{{ {shapes}; }} > shapes; echo {turn} >> state.txt; tr '\\n' ' ' < state.txt");
        let mut body = json!({ "prompt": prompt });
        match &session {
            None => body["agent"] = json!("agent-0"),
            Some(id) => body["sessionId"] = json!(id),
        }
        let (status, run) = apis[i].call(reqwest::Method::POST, "/v1/runs", Some(body)).await;
        assert_eq!(status, 202, "{run}");
        let run = run["id"].as_str().unwrap().to_string();
        let wanted = (0..=turn).map(|t| format!("{t} ")).collect::<String>();
        let output = apis[(i + 1) % 3]
            .until_event(&run, DEADLINE, "its output", |event, _| event == "output")
            .await;
        let executor = executor_of(db, &run, instances).await;
        eprintln!("session turn {turn} executes on instance {executor}");
        assert_eq!(
            output["content"].as_str().map(str::trim_end),
            Some(wanted.trim_end()),
            "turn {turn}, on instance {executor}"
        );
        apis[i].until_event(&run, DEADLINE, "its end", |event, _| event == "complete").await;
        let (_, detail) =
            apis[i].call(reqwest::Method::GET, &format!("/v1/runs/{run}"), None).await;
        assert_eq!(detail["status"], "completed", "{detail}");
        session = Some(detail["sessionId"].as_str().unwrap().to_string());
        if turn > 0 {
            let shapes = "cat shapes";
            let body = json!({"sessionId": session, "prompt": shapes});
            let (_, run) = apis[i].call(reqwest::Method::POST, "/v1/runs", Some(body)).await;
            let run = run["id"].as_str().unwrap();
            let kept = apis[i].until_event(run, DEADLINE, "its output", |e, _| e == "output").await;
            assert_eq!(kept["content"], "kept", "turn {turn}, on instance {executor}");
        }
    }
}

/// An instance with another secrets key refuses to start on the database, and so does one
/// on a copy of a live instance's data directory.
fn strangers_refused(backend: &[String], live: &Instance) {
    let stranger = tempfile::tempdir().unwrap();
    let without_key: Vec<String> =
        backend.iter().take_while(|a| *a != "--secrets-key").cloned().collect();
    let stderr = refusal(&instance_args(stranger.path(), &without_key));
    assert!(stderr.contains("every instance on one database needs the same key file"), "{stderr}");
    // And so does one on a copy of a live instance's data directory, which would end that
    // instance's runs as its own left over.
    let copy = tempfile::tempdir().unwrap();
    std::fs::copy(live.dir.path().join("instance-id"), copy.path().join("instance-id")).unwrap();
    let stderr = refusal(&instance_args(copy.path(), backend));
    assert!(stderr.contains("has the instance id"), "{stderr}");
}

/// A run created on one instance, streamed from a second and cancelled from a third.
async fn cancelled_from_a_third(
    apis: &[Api],
    db: &sqlx::PgPool,
    instances: &[Instance],
    token: &str,
) {
    let run = create_run(&apis[0], "echo started; sleep 100").await;
    let executor = executor_of(db, &run, instances).await;
    eprintln!("run {run} executes on instance {executor}");
    let (streamer, canceller) = ((executor + 1) % 3, (executor + 2) % 3);
    apis[streamer]
        .until_event(&run, DEADLINE, "its output, on another instance", |event, data| {
            event == "output" && data["content"] == "started"
        })
        .await;
    let complete = {
        let api = instances[streamer].api(token);
        let run = run.clone();
        tokio::spawn(async move {
            api.until_event(&run, DEADLINE, "its end", |event, _| event == "complete").await
        })
    };
    let asked = Instant::now();
    let (status, cancelled) =
        apis[canceller].call(reqwest::Method::POST, &format!("/v1/runs/{run}/cancel"), None).await;
    eprintln!("cancelled from another instance in {:?}", asked.elapsed());
    assert_eq!((status, cancelled["status"].clone()), (200, json!("cancelled")), "{cancelled}");
    let complete = within(DEADLINE, "the complete event", complete).await.unwrap();
    assert_eq!(complete["status"], "cancelled", "{complete}");
}

/// The executing instance killed: another ends its run as lost.
async fn killed_runs_end(
    instances: &mut Vec<Instance>,
    apis: &[Api],
    db: &sqlx::PgPool,
    token: &str,
) {
    let run = create_run(&apis[1], "echo started; sleep 100").await;
    let executor = executor_of(db, &run, instances).await;
    let witness = (executor + 1) % 3;
    apis[witness]
        .until_event(&run, DEADLINE, "its output", |event, data| {
            event == "output" && data["content"] == "started"
        })
        .await;
    let killed = instances.remove(executor);
    let dir = killed.dir.path().display().to_string();
    drop(killed.server); // SIGKILL
    let survivors: Vec<Api> = instances.iter().map(|i| i.api(token)).collect();
    let killed_at = Instant::now();
    let ended = within(LOST_WITHIN, "the killed instance's run ending", async {
        loop {
            let (_, detail) =
                survivors[0].call(reqwest::Method::GET, &format!("/v1/runs/{run}"), None).await;
            if detail["status"] != "running" {
                return detail;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
    .await;
    eprintln!("the killed instance's run ended after {:?}", killed_at.elapsed());
    assert_eq!(ended["status"], "failed", "{ended}");
    assert!(ended["error"].as_str().unwrap_or_default().contains("lost"), "{ended}");
    for api in &survivors {
        let (_, running) = api.call(reqwest::Method::GET, "/v1/runs?status=running", None).await;
        assert_eq!(running["data"], json!([]), "no run stays running");
    }
    let running: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM runs WHERE status = 'running'")
        .fetch_one(db)
        .await
        .unwrap();
    assert_eq!(running, 0, "no run of {dir} stays running");
}

/// The arguments of an instance over `dir` on the shared `backend`.
fn instance_args(dir: &std::path::Path, backend: &[String]) -> Vec<String> {
    let mut args: Vec<String> =
        ["--listen", "127.0.0.1:0", "--log", "warn", "--data-dir"].map(String::from).into();
    args.push(dir.display().to_string());
    args.extend(backend.iter().cloned());
    args
}

/// What the server binary says on its standard error when it refuses to start with
/// `args`; panics if it starts or exits successfully.
fn refusal(args: &[String]) -> String {
    let output =
        std::process::Command::new(env!("CARGO_BIN_EXE_vm0-server")).args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "vm0-server {args:?} started: {stderr}");
    stderr
}

async fn create_run(api: &Api, prompt: &str) -> String {
    let (status, run) = api
        .call(
            reqwest::Method::POST,
            "/v1/runs",
            Some(json!({"agent": "agent-0", "prompt": prompt})),
        )
        .await;
    assert_eq!(status, 202, "{run}");
    run["id"].as_str().unwrap().to_string()
}

/// Which of `instances` executes `run`, once one has claimed it.
async fn executor_of(db: &sqlx::PgPool, run: &str, instances: &[Instance]) -> usize {
    within(DEADLINE, "an instance claiming the run", async {
        loop {
            let executor: Option<String> =
                sqlx::query_scalar("SELECT executor FROM runs WHERE id = $1")
                    .bind(run)
                    .fetch_one(db)
                    .await
                    .unwrap();
            if let Some(i) = executor.and_then(|e| instances.iter().position(|i| i.id == e)) {
                return i;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}
