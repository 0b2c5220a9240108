//! The fault suite: three instances on one PostgreSQL database and one S3 bucket, driven
//! the way deployments fail, and then a checker that reads the whole recorded history.
//!
//! The instances reach the database through a proxy the suite can cut, as a database that
//! stops or fails over looks to them: every connection reset, new ones refused. The faults:
//! one session's continuations sent to two instances at once; the database away for 8 s
//! while a run prints 300 lines; an instance paused (SIGSTOP) past its lease and resumed;
//! an instance killed, and its run cancelled on another; an instance whose wall clock is a
//! minute fast; an instance killed in the middle of a run's end. The checker then asserts
//! the promises over every run: it ended exactly once, its events and log entries are
//! numbered without a gap and end with its end (nothing written after it), each artifact
//! version a run made belongs to a run that completed with it, and no two runs of a session
//! ever started from the same checkpoint.
//!
//! It needs PostgreSQL and S3 (`VM0_TEST_DATABASE_URL`, `VM0_TEST_BLOB_STORE`) and the
//! server built with fault points: `cargo test -p vm0-server --features failpoints --test
//! faults`, which the second pass of `cargo xtask ci` runs.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

mod common;
use common::{processes_of, within, Api, Server, DEADLINE};

/// How long the others may take to end the runs of a lost instance: its 20 s lease, and
/// their look every 3 s.
const LOST_WITHIN: Duration = Duration::from_secs(30);

/// A TCP proxy in front of PostgreSQL that the suite can cut.
struct Proxy {
    port: u16,
    down: Arc<watch::Sender<bool>>,
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let down = Arc::new(watch::channel(false).0);
        let watched = down.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else { continue };
                // Refused while down: dropped at once.
                if *watched.borrow() {
                    continue;
                }
                let mut cut = watched.subscribe();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&upstream).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.wait_for(|down| *down) => {}
                    }
                });
            }
        });
        Proxy { port, down }
    }

    /// Resets every connection and refuses new ones for `outage`.
    async fn cut_for(&self, outage: Duration) {
        self.down.send_replace(true);
        tokio::time::sleep(outage).await;
        self.down.send_replace(false);
    }
}

/// One instance: its process (none while it is down), its data directory and id.
struct Instance {
    server: Option<Server>,
    dir: tempfile::TempDir,
    id: String,
}

/// The three instances, their shared backend (the database through the proxy), and the
/// database itself for the checker.
struct Cluster {
    instances: Vec<Instance>,
    backend: Vec<String>,
    token: String,
    db: sqlx::PgPool,
    proxy: Proxy,
    /// Where the shared secrets key lives.
    _shared: tempfile::TempDir,
}

impl Cluster {
    async fn start() -> Cluster {
        let shared = tempfile::tempdir().unwrap();
        let mut backend = common::backend_args(shared.path()).await;
        let at = backend.iter().position(|a| a == "--database-url").unwrap() + 1;
        let direct = backend[at].clone();
        let db = sqlx::PgPool::connect(&direct).await.unwrap();
        // postgres://user@host:port/name, with the proxy's address for host:port.
        let authority_start = direct.find('@').map_or(direct.find("://").unwrap() + 3, |i| i + 1);
        let authority_end = authority_start + direct[authority_start..].find('/').unwrap();
        let proxy = Proxy::start(direct[authority_start..authority_end].to_string()).await;
        backend[at] = format!(
            "{}127.0.0.1:{}{}",
            &direct[..authority_start],
            proxy.port,
            &direct[authority_end..]
        );
        let key = shared.path().join("secrets.key").display().to_string();
        backend.extend(["--secrets-key".to_string(), key]);
        let mut cluster = Cluster {
            instances: Vec::new(),
            backend,
            token: String::new(),
            db,
            proxy,
            _shared: shared,
        };
        for _ in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            let (server, token) = cluster.spawn(dir.path(), None);
            cluster.token = token.unwrap_or(cluster.token);
            let id = std::fs::read_to_string(dir.path().join("instance-id")).unwrap();
            cluster.instances.push(Instance { server: Some(server), dir, id });
        }
        cluster.api(0).shell_agent().await;
        cluster
    }

    /// Starts an instance over `dir`, with the fault points `faults` (FAILPOINTS).
    fn spawn(&self, dir: &std::path::Path, faults: Option<&str>) -> (Server, Option<String>) {
        let mut command = Command::new(env!("CARGO_BIN_EXE_vm0-server"));
        command.args(["--listen", "127.0.0.1:0", "--log", "warn", "--data-dir"]);
        command.arg(dir).args(&self.backend);
        if let Some(faults) = faults {
            command.env("FAILPOINTS", faults);
        }
        common::spawn_command(command)
    }

    /// Kills instance `i` (SIGKILL) and starts it again over its data directory, with the
    /// fault points `faults`.
    fn restart(&mut self, i: usize, faults: Option<&str>) {
        self.instances[i].server.take();
        let (server, _) = self.spawn(self.instances[i].dir.path(), faults);
        self.instances[i].server = Some(server);
    }

    fn api(&self, i: usize) -> Api {
        let url = self.instances[i].server.as_ref().expect("the instance is up").url.clone();
        Api { http: reqwest::Client::new(), url, token: self.token.clone() }
    }

    fn apis(&self) -> Vec<Api> {
        (0..self.instances.len()).map(|i| self.api(i)).collect()
    }

    fn pid(&self, i: usize) -> libc::pid_t {
        self.instances[i].server.as_ref().unwrap().child.id() as libc::pid_t
    }

    /// Which instance executes `run`, once one has claimed it.
    async fn executor_of(&self, run: &str) -> usize {
        within(DEADLINE, "an instance claiming the run", async {
            loop {
                let executor: Option<String> =
                    sqlx::query_scalar("SELECT executor FROM runs WHERE id = $1")
                        .bind(run)
                        .fetch_one(&self.db)
                        .await
                        .unwrap();
                if let Some(i) =
                    executor.and_then(|e| self.instances.iter().position(|i| i.id == e))
                {
                    return i;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
    }

    /// The run as the database holds it: status and error.
    async fn status(&self, run: &str) -> (String, Option<String>) {
        sqlx::query_as("SELECT status, error FROM runs WHERE id = $1")
            .bind(run)
            .fetch_one(&self.db)
            .await
            .unwrap()
    }

    /// Waits up to `deadline` for `run` to end; its status and error.
    async fn until_ended(&self, run: &str, deadline: Duration) -> (String, Option<String>) {
        within(deadline, &format!("run {run} ending"), async {
            loop {
                let status = self.status(run).await;
                if status.0 != "running" && status.0 != "pending" {
                    return status;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await
    }

    /// What the store holds of `run`: its last event id and log sequence, and the artifact
    /// versions it made.
    async fn records(&self, run: &str) -> (i64, i64, i64) {
        sqlx::query_as(
            "SELECT (SELECT COALESCE(MAX(id), 0) FROM run_events WHERE run_id = $1), \
                    (SELECT COALESCE(MAX(seq), 0) FROM run_logs WHERE run_id = $1), \
                    (SELECT COUNT(*) FROM storage_versions WHERE created_by = $1)",
        )
        .bind(run)
        .fetch_one(&self.db)
        .await
        .unwrap()
    }

    /// Creates runs of `prompt` on instance `on` until one executes there (an instance's
    /// own runs usually do: the others look every second); the run.
    async fn run_on(&self, on: usize, prompt: &str, artifact: Option<&str>) -> String {
        for _ in 0..10 {
            let mut body = json!({"agent": "shell", "prompt": prompt});
            if let Some(name) = artifact {
                body["artifactName"] = json!(name);
            }
            let (status, run) =
                self.api(on).call(reqwest::Method::POST, "/v1/runs", Some(body)).await;
            assert_eq!(status, 202, "{run}");
            let run = run["id"].as_str().unwrap().to_string();
            if self.executor_of(&run).await == on {
                return run;
            }
            self.api(on).call(reqwest::Method::POST, &format!("/v1/runs/{run}/cancel"), None).await;
        }
        panic!("no run of 10 executed on instance {on}")
    }
}

fn signal(pid: libc::pid_t, signal: libc::c_int) {
    // SAFETY: kill(2) touches no memory.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "kill({pid}, {signal})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn runs_happen_exactly_once_whatever_fails() {
    if std::env::var(vm0_server::testing::TEST_DATABASE_URL).is_err()
        || std::env::var(vm0_server::testing::TEST_BLOB_STORE).is_err()
    {
        return eprintln!(
            "skipped: the fault suite needs PostgreSQL and an S3 bucket (the second pass of \
             cargo xtask ci)"
        );
    }
    let mut cluster = Cluster::start().await;
    common::continuations_at_once(&cluster.apis(), "shell", &cluster.db).await;
    database_away_for_8_s(&cluster).await;
    paused_past_its_lease(&cluster).await;
    killed_then_cancelled(&mut cluster).await;
    a_clock_a_minute_fast(&mut cluster).await;
    killed_in_the_middle_of_an_end(&mut cluster).await;
    check_history(&cluster.db).await;
}

/// The database away for 8 s while a run prints 300 lines: the run completes, its log
/// holds every line once and in order, and its event stream ends with `complete`.
async fn database_away_for_8_s(cluster: &Cluster) {
    let lines = "sleep 1; for i in $(seq 1 300); do echo line $i; sleep 0.01; done";
    let run = cluster.run_on(0, lines, None).await;
    let api = cluster.api(0);
    api.until_event(&run, DEADLINE, "its first line", |event, data| {
        event == "output" && data["content"] == "line 1"
    })
    .await;
    cluster.proxy.cut_for(Duration::from_secs(8)).await;
    let complete = api.until_event(&run, DEADLINE, "its end", |event, _| event == "complete").await;
    assert_eq!(complete["status"], "completed", "{complete}");
    let logged: Vec<String> = sqlx::query_scalar(
        "SELECT message FROM run_logs WHERE run_id = $1 AND type = 'agent' ORDER BY seq",
    )
    .bind(&run)
    .fetch_all(&cluster.db)
    .await
    .unwrap();
    let wanted: Vec<String> = (1..=300).map(|i| format!("line {i}")).collect();
    assert_eq!(logged, wanted, "every line once, in order");
    eprintln!("database away for 8 s: run {run} completed with its 300 lines");
}

/// The instance executing two runs paused for 40 s, then resumed: another instance ends
/// both within 30 s; after the resume nothing more is written for them (log entries,
/// events, artifact versions, status), though one of them finished during the pause, and
/// the other's processes are gone within 5 s.
async fn paused_past_its_lease(cluster: &Cluster) {
    let forever =
        cluster.run_on(1, "echo started; while true; do echo tick; sleep 0.1; done", None).await;
    let finishing =
        cluster.run_on(1, "echo started; sleep 20; echo made > artifact/out", Some("paused")).await;
    for run in [&forever, &finishing] {
        cluster
            .api(1)
            .until_event(run, DEADLINE, "its first line", |event, _| event == "output")
            .await;
    }
    let paused = Instant::now();
    signal(cluster.pid(1), libc::SIGSTOP);
    let mut ended = Vec::new();
    for run in [&forever, &finishing] {
        let (status, error) = cluster.until_ended(run, LOST_WITHIN).await;
        assert_eq!(status, "failed", "{run}: {error:?}");
        ended.push((cluster.records(run).await, (status, error)));
    }
    eprintln!("the paused instance's runs ended elsewhere {:?} after the pause", paused.elapsed());
    tokio::time::sleep(Duration::from_secs(40).saturating_sub(paused.elapsed())).await;
    signal(cluster.pid(1), libc::SIGCONT);
    let resumed = Instant::now();
    within(Duration::from_secs(5), "the forever run's processes dying", async {
        while !processes_of(&forever).is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    eprintln!("its processes were gone {:?} after the resume", resumed.elapsed());
    // Long enough for the resumed instance to have written anything it held.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (run, (records, status)) in [&forever, &finishing].into_iter().zip(ended) {
        assert_eq!(cluster.records(run).await, records, "{run}: nothing written after its end");
        assert_eq!(cluster.status(run).await, status, "{run}: its end stays");
    }
}

/// The instance executing a run killed: a cancel on another instance answers within a
/// second, with `cancelled`.
async fn killed_then_cancelled(cluster: &mut Cluster) {
    let run = cluster.run_on(2, "echo started; sleep 300", None).await;
    cluster
        .api(2)
        .until_event(&run, DEADLINE, "its first line", |event, _| event == "output")
        .await;
    cluster.instances[2].server.take(); // SIGKILL
    let asked = Instant::now();
    let (status, cancelled) =
        cluster.api(0).call(reqwest::Method::POST, &format!("/v1/runs/{run}/cancel"), None).await;
    let took = asked.elapsed();
    eprintln!("a cancel of a killed instance's run answered in {took:?}");
    assert_eq!((status, cancelled["status"].clone()), (200, json!("cancelled")), "{cancelled}");
    assert!(took < Duration::from_secs(1), "the cancel took {took:?}");
    let (status, _) = cluster.until_ended(&run, DEADLINE).await;
    assert_eq!(status, "cancelled");
}

/// An instance whose wall clock is a minute fast ends no run of the others' as lost, and
/// its own runs are not ended by them: leases are the database's clock.
async fn a_clock_a_minute_fast(cluster: &mut Cluster) {
    cluster.restart(2, Some("clock=return(60)"));
    let elsewhere = cluster.run_on(0, "sleep 8; echo done", None).await;
    let skewed = cluster.run_on(2, "sleep 8; echo done", None).await;
    let ahead: f64 = sqlx::query_scalar(
        "SELECT EXTRACT(EPOCH FROM created_at - now())::FLOAT8 FROM runs WHERE id = $1",
    )
    .bind(&skewed)
    .fetch_one(&cluster.db)
    .await
    .unwrap();
    assert!(ahead > 50.0, "the instance's clock is {ahead} s ahead of the database's");
    for run in [&elsewhere, &skewed] {
        let (status, error) = cluster.until_ended(run, DEADLINE).await;
        assert_eq!(status, "completed", "{run}: {error:?}");
    }
    eprintln!("a clock a minute fast: runs on it and beside it completed");
}

/// An instance killed in the middle of a run's end, its transaction open: the run ends
/// once, as lost, with no checkpoint and no artifact version.
async fn killed_in_the_middle_of_an_end(cluster: &mut Cluster) {
    // The fault point sleeps in the thread of the end's transaction, open: long enough for
    // the kill. (It blocks one of the instance's threads, which may hold up its answers,
    // so the suite watches the database rather than the instance.)
    cluster.restart(2, Some("end-run-commit=sleep(10000)"));
    let run = cluster.run_on(2, "echo made > artifact/out; echo done", Some("interrupted")).await;
    // The end's transaction is open once it has held the run's row for 300 ms on end (a
    // batch's fence holds it for a moment only).
    within(DEADLINE, "the run's end holding its row", async {
        let mut held_since: Option<Instant> = None;
        while held_since.is_none_or(|since| since.elapsed() < Duration::from_millis(300)) {
            let mut tx = cluster.db.begin().await.unwrap();
            let free = sqlx::query("SELECT 1 FROM runs WHERE id = $1 FOR UPDATE NOWAIT")
                .bind(&run)
                .execute(&mut *tx)
                .await
                .is_ok();
            tx.rollback().await.ok();
            held_since = if free { None } else { held_since.or(Some(Instant::now())) };
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    cluster.instances[2].server.take(); // SIGKILL
    let (status, error) = cluster.until_ended(&run, LOST_WITHIN).await;
    assert_eq!(status, "failed", "{error:?}");
    let (_, _, versions) = cluster.records(&run).await;
    assert_eq!(versions, 0, "no artifact version from a run that did not end with it");
    let checkpoint: Option<String> =
        sqlx::query_scalar("SELECT checkpoint_id FROM runs WHERE id = $1")
            .bind(&run)
            .fetch_one(&cluster.db)
            .await
            .unwrap();
    assert_eq!(checkpoint, None);
    cluster.restart(2, None);
    eprintln!("killed in the middle of an end: the run ended once, {status}");
}

/// Reads every run's recorded history and asserts what the suite promises.
async fn check_history(db: &sqlx::PgPool) {
    type Run = (String, String, String, Option<String>, Option<String>, Option<String>);
    let runs: Vec<Run> = sqlx::query_as(
        "SELECT id, status, session_id, checkpoint_id, base_checkpoint_id, artifact_version \
         FROM runs ORDER BY id",
    )
    .fetch_all(db)
    .await
    .unwrap();
    let mut bases = std::collections::HashMap::new();
    for (id, status, session, checkpoint, base, artifact) in &runs {
        assert!(!["pending", "running"].contains(&status.as_str()), "{id} is still {status}");
        let events: Vec<(i64, String, String)> =
            sqlx::query_as("SELECT id, event, data FROM run_events WHERE run_id = $1 ORDER BY id")
                .bind(id)
                .fetch_all(db)
                .await
                .unwrap();
        let numbers: Vec<i64> = events.iter().map(|e| e.0).collect();
        assert_eq!(numbers, (1..=events.len() as i64).collect::<Vec<_>>(), "{id}: event ids");
        let completes: Vec<&(i64, String, String)> =
            events.iter().filter(|e| e.1 == "complete").collect();
        assert_eq!(completes.len(), 1, "{id}: one complete event");
        assert_eq!(events.last().map(|e| e.1.as_str()), Some("complete"), "{id}: complete last");
        let data: Value = serde_json::from_str(&completes[0].2).unwrap();
        assert_eq!(data["status"], status.as_str(), "{id}: complete says how it ended");
        let logs: Vec<(i64, String, String)> = sqlx::query_as(
            "SELECT seq, type, message FROM run_logs WHERE run_id = $1 ORDER BY seq",
        )
        .bind(id)
        .fetch_all(db)
        .await
        .unwrap();
        let numbers: Vec<i64> = logs.iter().map(|l| l.0).collect();
        assert_eq!(numbers, (1..=logs.len() as i64).collect::<Vec<_>>(), "{id}: log sequence");
        let last = logs.last().unwrap();
        assert!(
            last.1 == "system" && last.2.starts_with(&format!("Run {status}")),
            "{id}: the log ends with its end: {last:?}"
        );
        assert_eq!(status == "completed", checkpoint.is_some(), "{id}: a checkpoint if completed");
        if let (Some(base), "completed") = (base, status.as_str()) {
            let forked = bases.insert(base.clone(), id.clone());
            assert_eq!(forked, None, "{id} and another run of {session} both started from {base}");
        }
        let made: Vec<String> =
            sqlx::query_scalar("SELECT id FROM storage_versions WHERE created_by = $1")
                .bind(id)
                .fetch_all(db)
                .await
                .unwrap();
        for version in made {
            assert_eq!(
                (status.as_str(), artifact.as_deref()),
                ("completed", Some(version.as_str())),
                "{id}: artifact version {version} from a run that did not end with it"
            );
        }
    }
    eprintln!("the history of {} runs holds", runs.len());
}
