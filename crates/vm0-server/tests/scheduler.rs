//! The scheduler and a run's life against a store that fails: a run whose start keeps
//! failing is given up and ends `failed` without holding up the runs behind it; a run whose
//! end cannot be stored for a while still ends as it did; and a session runs one run at a
//! time by the database's word. The failures are triggers that refuse the store's updates.

use std::time::Duration;

use serde_json::{json, Value};

mod common;
use common::{within, Api};

/// A run's last event id and log sequence number.
const RECORDS: &str = "SELECT (SELECT COALESCE(MAX(id), 0) FROM run_events WHERE run_id = $1), \
                              (SELECT COALESCE(MAX(seq), 0) FROM run_logs WHERE run_id = $1)";

/// How long a run that cannot start may take to end: the retries take 1.55 s.
const DEADLINE: Duration = Duration::from_secs(20);

/// Follows the run's event stream until its `complete` event, within [`DEADLINE`], and
/// returns the run as it then reads.
async fn until_complete(api: &Api, run: &str) -> Value {
    api.until_event(run, DEADLINE, "its complete event", |event, _| event == "complete").await;
    api.call(reqwest::Method::GET, &format!("/v1/runs/{run}"), None).await.1
}

/// A reference server serving in this process, with a shell agent, and a way around it
/// to its database.
struct Running {
    api: Api,
    database_url: Option<String>,
    sqlite: Option<sqlx::SqlitePool>,
    stop: tokio::sync::oneshot::Sender<()>,
    serving: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// A server on `dir`, and on PostgreSQL when the tests are.
    async fn start(dir: &std::path::Path) -> Running {
        let database_url = vm0_server::testing::database_url(dir).await.unwrap();
        let server = vm0_server::bind(vm0_server::Config {
            sandbox: vm0_server::Sandbox::Helper(env!("CARGO_BIN_EXE_vm0-server").into()),
            database_url: database_url.clone(),
            blob_store: vm0_server::testing::blob_store(dir).await.unwrap(),
            ..vm0_server::Config::local(dir)
        })
        .await
        .expect("the server starts");
        let api = Api {
            http: reqwest::Client::new(),
            url: server.url.clone(),
            token: server.first_token.clone().expect("a first token"),
        };
        let sqlite = server.app.store.sqlite().cloned();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(server.serve(async {
            stopped.await.ok();
        }));
        api.shell_agent().await;
        Running { api, database_url, sqlite, stop, serving }
    }

    /// Executes `sql`, with `bind` as its one parameter when given, on the server's
    /// database behind its back.
    async fn write(&self, sql: &str, bind: Option<&str>) -> Result<(), sqlx::Error> {
        match (&self.sqlite, &self.database_url) {
            (Some(pool), _) => {
                let query = sqlx::query(sql);
                let query = match bind {
                    Some(value) => query.bind(value),
                    None => query,
                };
                query.execute(pool).await.map(drop)
            }
            (None, Some(url)) => {
                let pool = sqlx::PgPool::connect(url).await?;
                let query = sqlx::query(sql);
                let query = match bind {
                    Some(value) => query.bind(value),
                    None => query,
                };
                query.execute(&pool).await.map(drop)
            }
            (None, None) => unreachable!("a server is on SQLite or PostgreSQL"),
        }
    }

    /// Makes the database refuse every change of a run's status to `status`, until
    /// `allow(status)`.
    async fn refuse(&self, status: &str) {
        let when = format!("NEW.status = '{status}'");
        self.refuse_on(status, "UPDATE OF status ON runs", Some(&when)).await;
    }

    /// Lifts `refuse(status)`.
    async fn allow(&self, status: &str) {
        self.allow_on(status, "runs").await;
    }

    /// A trigger `no_NAME` that refuses the statements `on` (such as `INSERT ON run_logs`),
    /// those whose rows satisfy `when` if given, until `allow_on`.
    async fn refuse_on(&self, name: &str, on: &str, when: Option<&str>) {
        let statements = match &self.database_url {
            None => vec![format!(
                "CREATE TRIGGER no_{name} BEFORE {on} {} \
                 BEGIN SELECT RAISE(ABORT, 'no {name}'); END;",
                when.map(|w| format!("WHEN {w}")).unwrap_or_default()
            )],
            Some(_) => vec![
                format!(
                    "CREATE FUNCTION no_{name}() RETURNS trigger LANGUAGE plpgsql \
                     AS $$ BEGIN RAISE EXCEPTION 'no {name}'; END $$"
                ),
                format!(
                    "CREATE TRIGGER no_{name} BEFORE {on} FOR EACH ROW {} \
                     EXECUTE FUNCTION no_{name}()",
                    when.map(|w| format!("WHEN ({w})")).unwrap_or_default()
                ),
            ],
        };
        for sql in statements {
            self.write(&sql, None).await.unwrap();
        }
    }

    /// Lifts `refuse_on(name, …)`, whose trigger is on `table`.
    async fn allow_on(&self, name: &str, table: &str) {
        let sql = match &self.database_url {
            None => format!("DROP TRIGGER no_{name}"),
            Some(_) => format!("DROP TRIGGER no_{name} ON {table}"),
        };
        self.write(&sql, None).await.unwrap();
    }

    /// The last event id and log sequence number the store holds for `run`.
    async fn records(&self, run: &str) -> (i64, i64) {
        match (&self.sqlite, &self.database_url) {
            (Some(pool), _) => sqlx::query_as(RECORDS).bind(run).fetch_one(pool).await.unwrap(),
            (None, Some(url)) => {
                let pool = sqlx::PgPool::connect(url).await.unwrap();
                sqlx::query_as(RECORDS).bind(run).fetch_one(&pool).await.unwrap()
            }
            (None, None) => unreachable!("a server is on SQLite or PostgreSQL"),
        }
    }

    /// Ends `run` behind the server's back, as another instance would after claiming it
    /// again: failed, with a new epoch and none of an end's events; what the store held
    /// for it then (`records`), read in the same transaction.
    async fn end_elsewhere(&self, run: &str) -> (i64, i64) {
        const END: &str = "UPDATE runs SET status = 'failed', error = 'Ended elsewhere', \
                           completed_at = CURRENT_TIMESTAMP, epoch = epoch + 1 WHERE id = $1";
        match (&self.sqlite, &self.database_url) {
            (Some(pool), _) => {
                let mut tx = pool.begin().await.unwrap();
                sqlx::query(END).bind(run).execute(&mut *tx).await.unwrap();
                let held = sqlx::query_as(RECORDS).bind(run).fetch_one(&mut *tx).await.unwrap();
                tx.commit().await.unwrap();
                held
            }
            (None, Some(url)) => {
                let pool = sqlx::PgPool::connect(url).await.unwrap();
                let mut tx = pool.begin().await.unwrap();
                sqlx::query(END).bind(run).execute(&mut *tx).await.unwrap();
                let held = sqlx::query_as(RECORDS).bind(run).fetch_one(&mut *tx).await.unwrap();
                tx.commit().await.unwrap();
                held
            }
            (None, None) => unreachable!("a server is on SQLite or PostgreSQL"),
        }
    }

    /// Stops the server, within 30 s.
    async fn stop(self) {
        self.stop.send(()).ok();
        tokio::time::timeout(Duration::from_secs(30), self.serving)
            .await
            .expect("the server stops")
            .unwrap()
            .unwrap();
    }
}

#[tokio::test]
async fn a_run_that_cannot_start_fails_and_does_not_block_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let server = Running::start(dir.path()).await;
    let api = &server.api;
    // Starting a run made impossible, and possible again, by a trigger.
    server.refuse("running").await;
    let stuck = api.run("echo never").await;
    let run = until_complete(api, &stuck).await;
    assert_eq!(run["status"], "failed", "{run}");
    let error = run["error"].as_str().unwrap_or_default();
    assert!(error.starts_with("The run could not be started"), "{run}");
    assert!(run["completedAt"].is_string(), "{run}");

    // With starts possible again, the next run is not held up behind the failed one.
    server.allow("running").await;
    let next = api.run("echo after").await;
    let run = until_complete(api, &next).await;
    assert_eq!(run["status"], "completed", "{run}");
    server.stop().await;
}

/// A session runs one run at a time, and the database itself holds it so: a second run of
/// a session that has one running cannot be written as running, whoever tries.
#[tokio::test]
async fn the_database_holds_a_session_to_one_running_run() {
    let dir = tempfile::tempdir().unwrap();
    let server = Running::start(dir.path()).await;
    let api = &server.api;
    let first = api.run("echo started; sleep 60").await;
    let (_, run) = api.call(reqwest::Method::GET, &format!("/v1/runs/{first}"), None).await;
    let body = json!({"sessionId": run["sessionId"], "prompt": "true"});
    let (status, second) = api.call(reqwest::Method::POST, "/v1/runs", Some(body)).await;
    assert_eq!(status, 202, "{second}");
    let second = second["id"].as_str().unwrap().to_string();
    until_running(api, &first).await;

    // The write the scheduler's claim makes, without its look at the session first.
    let sql = "UPDATE runs SET status = 'running' WHERE id = $1";
    let written = server.write(sql, Some(&second)).await;
    match written {
        Err(sqlx::Error::Database(error)) => {
            assert!(error.is_unique_violation(), "refused, but not by the index: {error}")
        }
        other => panic!("a second running run of one session was written: {other:?}"),
    }

    // The second runs once the first has ended.
    api.call(reqwest::Method::POST, &format!("/v1/runs/{first}/cancel"), None).await;
    let run = until_complete(api, &second).await;
    assert_eq!(run["status"], "completed", "{run}");
    server.stop().await;
}

/// Waits, within [`DEADLINE`], until `run` is running.
async fn until_running(api: &Api, run: &str) {
    within(DEADLINE, &format!("run {run} running"), async {
        loop {
            let (_, detail) =
                api.call(reqwest::Method::GET, &format!("/v1/runs/{run}"), None).await;
            if detail["status"] == "running" {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

/// A run whose end the store refuses for a second still ends as it did, `completed`: its
/// end is tried again, within the lease that its instance keeps renewing.
#[tokio::test]
async fn a_run_whose_end_is_refused_for_a_while_still_ends_as_it_did() {
    let dir = tempfile::tempdir().unwrap();
    let server = Running::start(dir.path()).await;
    server.refuse("completed").await;
    let run = server.api.run("echo done").await;
    // The agent is done well before this, and its end has been refused a few times.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, detail) = server.api.call(reqwest::Method::GET, &format!("/v1/runs/{run}"), None).await;
    assert_eq!(detail["status"], "running", "the end is refused meanwhile: {detail}");
    server.allow("completed").await;
    let detail = until_complete(&server.api, &run).await;
    assert_eq!(detail["status"], "completed", "{detail}");
    server.stop().await;
}

/// A run printing 300 lines while the database refuses what runs record, for 8 s: the run
/// waits and then completes, its log holds every line once and in order, and its event
/// stream ends with `complete`.
#[tokio::test]
async fn a_run_whose_records_are_refused_for_8_s_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Running::start(dir.path()).await;
    // Created first: createRun stores the run's first records itself, and would fail.
    let run = server.api.run("sleep 1; for i in $(seq 1 300); do echo line $i; done").await;
    server.refuse_on("logs", "INSERT ON run_logs", None).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    let (_, detail) = server.api.call(reqwest::Method::GET, &format!("/v1/runs/{run}"), None).await;
    assert_eq!(detail["status"], "running", "the run waits for its records: {detail}");
    server.allow_on("logs", "run_logs").await;
    let detail = until_complete(&server.api, &run).await;
    assert_eq!(detail["status"], "completed", "{detail}");
    let mut lines = Vec::new();
    let mut page = format!("/v1/runs/{run}/logs?type=agent&limit=100");
    loop {
        let (status, logs) = server.api.call(reqwest::Method::GET, &page, None).await;
        assert_eq!(status, 200, "{logs}");
        let messages = logs["data"].as_array().unwrap().iter();
        lines.extend(messages.map(|l| l["message"].as_str().unwrap().to_string()));
        match logs["pagination"]["nextCursor"].as_str() {
            Some(cursor) => {
                page = format!("/v1/runs/{run}/logs?type=agent&limit=100&cursor={cursor}")
            }
            None => break,
        }
    }
    let wanted: Vec<String> = (1..=300).map(|i| format!("line {i}")).collect();
    assert_eq!(lines, wanted, "every line once, in order");
    server.stop().await;
}

/// Reads the run's event stream to its end, within [`DEADLINE`]: the names of its events
/// but heartbeats.
async fn events_to_the_end(api: &Api, run: &str) -> Vec<String> {
    let response = api
        .http
        .get(format!("{}/v1/runs/{run}/events", api.url))
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap();
    let body = within(DEADLINE, "the event stream's end", response.text()).await.unwrap();
    let names = body.lines().filter_map(|l| l.strip_prefix("event: ")).map(String::from);
    names.filter(|name| name != "heartbeat").collect()
}

/// A run ended behind its executor's back, with a new epoch and without the events of an
/// end (as another instance's claim, or an older version's end, would leave it): its
/// followers' streams end, live or opened after, with no `complete` event; its executor
/// stops its agent, and writes nothing more for it, neither the lines the agent was still
/// printing nor an end of its own.
#[tokio::test]
async fn a_run_ended_elsewhere_ends_its_followers_and_takes_nothing_more() {
    let dir = tempfile::tempdir().unwrap();
    let server = Running::start(dir.path()).await;
    let run = server.api.run("echo started; while true; do echo tick; sleep 0.02; done").await;
    server
        .api
        .until_event(&run, DEADLINE, "its first line", |event, data| {
            event == "output" && data["content"] == "started"
        })
        .await;
    let live = {
        let api = server.api.clone();
        let run = run.clone();
        tokio::spawn(async move { events_to_the_end(&api, &run).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let at_the_end = server.end_elsewhere(&run).await;
    let live = within(DEADLINE, "the live stream's end", live).await.unwrap();
    assert!(!live.contains(&"complete".to_string()), "no end was recorded: {live:?}");
    let opened_after = events_to_the_end(&server.api, &run).await;
    assert!(!opened_after.contains(&"complete".to_string()), "{opened_after:?}");
    // The executor's next looks (every 200 ms) found the run gone and stopped its agent,
    // whose last lines were refused.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(server.records(&run).await, at_the_end, "nothing written for the run after its end");
    let (_, detail) = server.api.call(reqwest::Method::GET, &format!("/v1/runs/{run}"), None).await;
    assert_eq!(
        (detail["status"].as_str(), detail["error"].as_str()),
        (Some("failed"), Some("Ended elsewhere"))
    );
    server.stop().await;
}

/// A checkpoint whose id is a host path, put into the database by hand (a crafted backup,
/// a shared database written by someone else), made its session's head: the session's
/// next run fails naming it, and nothing of the host is copied.
#[tokio::test]
async fn a_checkpoint_id_that_is_a_path_fails_the_run_and_copies_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Running::start(dir.path()).await;
    let first = server.api.run("echo one > note").await;
    let detail = until_complete(&server.api, &first).await;
    let session = detail["sessionId"].as_str().unwrap().to_string();
    server
        .write(
            &format!(
                "INSERT INTO checkpoints (id, session_id, run_id, created_at) \
                 VALUES ('/etc', '{session}', $1, CURRENT_TIMESTAMP)"
            ),
            Some(&first),
        )
        .await
        .unwrap();
    server
        .write("UPDATE sessions SET head_checkpoint_id = '/etc' WHERE id = $1", Some(&session))
        .await
        .unwrap();
    let (status, run) = server
        .api
        .call(
            reqwest::Method::POST,
            "/v1/runs",
            Some(json!({"sessionId": session, "prompt": "ls"})),
        )
        .await;
    assert_eq!(status, 202, "{run}");
    let detail = until_complete(&server.api, run["id"].as_str().unwrap()).await;
    assert_eq!(detail["status"], "failed", "{detail}");
    let error = detail["error"].as_str().unwrap_or_default();
    assert!(error.contains("checkpoint id as '/etc', which is not one"), "{error}");
    let workdir = dir.path().join("sessions").join(&session);
    for copied in ["passwd", "shadow", "hostname"] {
        assert!(!workdir.join(copied).exists(), "{copied} was copied from the host");
    }
    assert!(workdir.join("note").exists(), "the session's folder is as the first run left it");
    server.stop().await;
}
