//! Checkpoints hold only what runs changed, sessions survive the loss of their working
//! directory, and both go once their retention is over, as do ended runs' logs.

use std::path::Path;
use std::time::Duration;

use serde_json::json;
use vm0_tests::server::{api_error, TestServer};
use vm0_tests::wait::{within, DEADLINE};
use vm0_types::{self as types, RunStatus};

async fn shell_agent(c: &vm0_client::Client) {
    let config = types::AgentConfig(
        json!({"command": ["sh", "-c", "eval \"$VM0_PROMPT\""]}).as_object().unwrap().clone(),
    );
    c.create_agent().body_map(|b| b.name("shell").config(config)).send().await.unwrap();
}

/// Runs `request` to its end.
async fn run(
    c: &vm0_client::Client,
    request: types::builder::CreateRunRequest,
) -> types::RunDetail {
    let id = c.create_run().body(request).send().await.unwrap().into_inner().id;
    within(DEADLINE, "the run ends", c.wait_for_run(&id)).await.unwrap()
}

/// What the agent of run `id` printed, line by line.
async fn agent_lines(c: &vm0_client::Client, id: &str) -> Vec<String> {
    let logs = c
        .list_run_logs()
        .id(id)
        .type_(types::LogTypeFilter::Agent)
        .send()
        .await
        .unwrap()
        .into_inner();
    logs.data.into_iter().map(|l| l.message).collect()
}

fn prompt(text: &str) -> types::builder::CreateRunRequest {
    types::CreateRunRequest::builder().prompt(text)
}

/// The bytes of the files under `dir`, but its top-level folders `skip`.
fn bytes_under(dir: &Path, skip: &[&str]) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| !skip.iter().any(|s| e.file_name() == *s))
        .map(|e| {
            if e.file_type().unwrap().is_dir() {
                bytes_under(&e.path(), &[])
            } else {
                e.metadata().unwrap().len()
            }
        })
        .sum()
}

#[tokio::test]
async fn checkpoints_store_only_what_runs_changed() {
    let server = TestServer::start().await;
    let c = server.client();
    shell_agent(&c).await;
    let source = tempfile::tempdir().unwrap();
    std::fs::write(source.path().join("big.bin"), vec![3u8; 2 * 1024 * 1024]).unwrap();
    let volume =
        c.create_volume().body_map(|b| b.name("inputs")).send().await.unwrap().into_inner();
    c.push_volume(&volume.id, source.path(), None, &Default::default()).await.unwrap();
    let stored =
        bytes_under(server.data_dir.path(), &["sessions", "vm0.db", "vm0.db-wal", "vm0.db-shm"]);

    let volumes = std::collections::HashMap::from([("inputs".to_string(), "latest".to_string())]);
    let first = run(
        &c,
        prompt("wc -c volumes/inputs/big.bin > size; echo kept > note")
            .agent(Some("shell".parse().unwrap()))
            .volumes(volumes.clone()),
    )
    .await;
    assert_eq!(first.status, RunStatus::Completed, "{:?}", first.error);
    let session: types::CreateRunRequestSessionId = first.session_id.parse().unwrap();
    for i in 0..3 {
        let next = run(
            &c,
            prompt(&format!("echo {i} >> note"))
                .session_id(Some(session.clone()))
                .volumes(volumes.clone()),
        )
        .await;
        assert_eq!(next.status, RunStatus::Completed, "{:?}", next.error);
        assert!(next.checkpoint_id.is_some());
    }
    // Four checkpoints of a session that mounts 2 MiB: the volume's bytes are stored once,
    // as its own version, and the checkpoints add only the small files the runs wrote.
    let after =
        bytes_under(server.data_dir.path(), &["sessions", "vm0.db", "vm0.db-wal", "vm0.db-shm"]);
    assert!(after - stored < 64 * 1024, "the checkpoints stored {} bytes", after - stored);
}

#[tokio::test]
async fn a_session_whose_directory_is_gone_continues_from_its_checkpoint() {
    let server = TestServer::start().await;
    let c = server.client();
    shell_agent(&c).await;
    let first = run(
        &c,
        prompt("mkdir -p deep/er && echo remembered > deep/er/note")
            .agent(Some("shell".parse().unwrap())),
    )
    .await;
    assert_eq!(first.status, RunStatus::Completed);
    std::fs::remove_dir_all(server.data_dir.path().join("sessions").join(&first.session_id))
        .unwrap();

    let next =
        run(&c, prompt("cat deep/er/note").session_id(Some(first.session_id.parse().unwrap())))
            .await;
    assert_eq!(next.status, RunStatus::Completed, "{:?}", next.error);
    assert_eq!(agent_lines(&c, &next.id).await, ["remembered"]);
}

#[tokio::test]
async fn sessions_and_checkpoints_go_when_their_retention_is_over() {
    let server = TestServer::start().await;
    let c = server.client();
    shell_agent(&c).await;
    let done =
        run(&c, prompt("echo only-in-the-checkpoint > kept").agent(Some("shell".parse().unwrap())))
            .await;
    let checkpoint = done.checkpoint_id.clone().unwrap();
    let blob = b"only-in-the-checkpoint\n";
    assert!(server.has_blob(blob).await, "the checkpoint's file is a blob");

    // A long retention keeps everything.
    let kept = server.app.engine.expire(Duration::from_secs(3600)).await.unwrap();
    assert_eq!((kept.checkpoints, kept.sessions.len()), (0, 0));

    let expired = server.app.engine.expire(Duration::ZERO).await.unwrap();
    assert_eq!((expired.checkpoints, expired.sessions.clone()), (1, vec![done.session_id.clone()]));
    assert!(
        !server.data_dir.path().join("sessions").join(&done.session_id).exists(),
        "the session's directory is removed"
    );
    assert!(!server.has_blob(blob).await, "the checkpoint's blob is collected");

    let from_checkpoint = c
        .create_run()
        .body(prompt("true").checkpoint_id(Some(checkpoint.parse().unwrap())))
        .send()
        .await;
    let (status, error) = api_error(from_checkpoint);
    assert_eq!((status, error.param.as_deref()), (404, Some("checkpointId")));
    let continued = c
        .create_run()
        .body(prompt("true").session_id(Some(done.session_id.parse().unwrap())))
        .send()
        .await;
    let (status, error) = api_error(continued);
    assert_eq!(
        (status, error.code, error.param.as_deref()),
        (400, types::ErrorCode::InvalidState, Some("sessionId")),
        "{}",
        error.message
    );
}

#[tokio::test]
async fn a_live_sessions_head_checkpoint_outlives_the_retention() {
    let server = TestServer::start().await;
    let c = server.client();
    shell_agent(&c).await;
    let first =
        run(&c, prompt("echo remembered > note").agent(Some("shell".parse().unwrap()))).await;
    assert_eq!(first.status, RunStatus::Completed);
    let session: types::CreateRunRequestSessionId = first.session_id.parse().unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    // A run that fails records no checkpoint, and keeps the session live.
    let failed = run(&c, prompt("exit 3").session_id(Some(session.clone()))).await;
    assert_eq!(failed.status, RunStatus::Failed);

    // A retention over for the first run's checkpoint, not for the session's last run.
    let (made, used) = (first.completed_at.unwrap(), failed.completed_at.unwrap());
    let between = made + (used - made) / 2;
    let retention = (chrono::Utc::now() - between).to_std().unwrap();
    let expired = server.app.engine.expire(retention).await.unwrap();
    assert_eq!((expired.checkpoints, expired.sessions.len()), (0, 0), "the head is kept");

    let next = run(&c, prompt("cat note").session_id(Some(session))).await;
    assert_eq!(next.status, RunStatus::Completed, "{:?}", next.error);
    assert_eq!(agent_lines(&c, &next.id).await, ["remembered"]);
}

/// An ended run's logs, events and metrics go once their retention is over; the run stays,
/// saying when they went, and following it still ends.
#[tokio::test]
async fn an_ended_runs_logs_go_when_their_retention_is_over() {
    let server = TestServer::start().await;
    let c = server.client();
    shell_agent(&c).await;
    let done = run(&c, prompt("echo one; echo two").agent(Some("shell".parse().unwrap()))).await;
    let kept = server.app.engine.expire(Duration::from_secs(3600)).await.unwrap();
    assert_eq!(kept.logs, 0);
    assert_eq!(agent_lines(&c, &done.id).await, ["one", "two"]);
    let run_now = c.get_run().id(&done.id).send().await.unwrap().into_inner();
    assert_eq!(run_now.logs_expired_at, None);

    let expired = server.app.engine.expire(Duration::ZERO).await.unwrap();
    assert_eq!(expired.logs, 1, "one ended run's logs");
    let run_now = c.get_run().id(&done.id).send().await.unwrap().into_inner();
    assert!(run_now.logs_expired_at.is_some(), "{run_now:?}");
    assert_eq!((run_now.status, run_now.completed_at), (RunStatus::Completed, done.completed_at));
    let logs = c.list_run_logs().id(&done.id).send().await.unwrap().into_inner();
    assert!(logs.data.is_empty(), "{:?}", logs.data);
    let metrics = c.get_run_metrics().id(&done.id).send().await.unwrap().into_inner();
    assert!(metrics.data.is_empty(), "{:?}", metrics.data);
    let followed = within(DEADLINE, "following the run", c.wait_for_run(&done.id)).await.unwrap();
    assert_eq!(followed.status, RunStatus::Completed);
    let again = server.app.engine.expire(Duration::ZERO).await.unwrap();
    assert_eq!(again.logs, 0, "each run's logs go once");
}
