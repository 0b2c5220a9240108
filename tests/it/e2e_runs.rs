//! Runs end to end: real processes executed by the reference server, followed through the
//! generated client and the event stream. The agent is `sh -c 'eval "$VM0_PROMPT"'`, so
//! each prompt is a small shell script.

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use serde_json::{json, Value};
use vm0_client::{Paginate, RunEvent};
use vm0_server::testing;
use vm0_tests::processes;
use vm0_tests::server::{api_error, TestServer};
use vm0_tests::wait::{until_run_event, within, DEADLINE};
use vm0_types::{self as types, RunStatus};

pub(crate) async fn agent(c: &vm0_client::Client, name: &str, config: Value) -> types::Agent {
    let config = types::AgentConfig(config.as_object().unwrap().clone());
    c.create_agent().body_map(|b| b.name(name).config(config)).send().await.unwrap().into_inner()
}

async fn shell_agent(c: &vm0_client::Client) -> types::Agent {
    agent(
        c,
        "shell",
        json!({"command": ["sh", "-c", "eval \"$VM0_PROMPT\""], "timeoutSeconds": 60}),
    )
    .await
}

pub(crate) fn body(agent: &str, prompt: &str) -> types::builder::CreateRunRequest {
    types::CreateRunRequest::builder().agent(Some(agent.parse().unwrap())).prompt(prompt)
}

pub(crate) async fn start(
    c: &vm0_client::Client,
    request: types::builder::CreateRunRequest,
) -> types::RunDetail {
    c.create_run().body(request).send().await.unwrap().into_inner()
}

/// Follows the run's events until it ends; the run as it ended.
pub(crate) async fn wait(c: &vm0_client::Client, id: &str) -> types::RunDetail {
    let run = match tokio::time::timeout(DEADLINE, c.wait_for_run(id)).await {
        Ok(run) => run.unwrap_or_else(|e| panic!("following run {id}: {e}")),
        Err(_) => {
            let run = c.get_run().id(id).send().await.unwrap().into_inner();
            panic!("run {id} did not end within {DEADLINE:?}: {run:?}")
        }
    };
    assert!(run.completed_at.is_some(), "run {id} sent `complete` before it had ended: {run:?}");
    run
}

/// One SSE message: id, event, data.
type Message = (u64, String, Value);

/// Reads the run's event stream from `last` until it closes, or until `stop_after`
/// messages have been read, within [`DEADLINE`].
async fn events(
    server: &TestServer,
    run: &str,
    last: Option<u64>,
    stop_after: Option<usize>,
) -> (Vec<Message>, String) {
    within(
        DEADLINE,
        &format!("the event stream of run {run} closing or giving {stop_after:?} messages"),
        read_events(server, run, last, stop_after),
    )
    .await
}

async fn read_events(
    server: &TestServer,
    run: &str,
    last: Option<u64>,
    stop_after: Option<usize>,
) -> (Vec<Message>, String) {
    let mut request = reqwest::Client::new()
        .get(format!("{}/v1/runs/{run}/events", server.url))
        .bearer_auth(&server.token);
    if let Some(last) = last {
        request = request.header("Last-Event-ID", last.to_string());
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut stream = response.bytes_stream();
    let (mut text, mut messages) = (String::new(), Vec::new());
    while let Some(chunk) = stream.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            let field = |name: &str| {
                block
                    .lines()
                    .find_map(|l| l.strip_prefix(&format!("{name}: ")))
                    .unwrap_or_default()
                    .to_string()
            };
            messages.push((
                field("id").parse().unwrap(),
                field("event"),
                serde_json::from_str(&field("data")).unwrap(),
            ));
            if stop_after == Some(messages.len()) {
                return (messages, text);
            }
        }
    }
    (messages, text)
}

fn outputs(messages: &[Message]) -> Vec<String> {
    messages
        .iter()
        .filter(|(_, e, _)| e == "output")
        .map(|(_, _, d)| d["content"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_run_echoes_its_prompt_into_events_and_logs() {
    let server = TestServer::start().await;
    let c = server.client();
    agent(&c, "echo", json!({"command": ["sh", "-c", "echo \"$VM0_PROMPT\"; cat; echo oops >&2"]}))
        .await;
    let created = start(&c, body("echo", "hello world")).await;
    assert_eq!(created.status, RunStatus::Pending);
    assert!(
        created.started_at.is_none()
            && created.completed_at.is_none()
            && created.execution_time_ms.is_none()
    );
    let run = wait(&c, &created.id).await;
    assert_eq!(run.status, RunStatus::Completed, "{run:?}");
    assert!(
        run.started_at.is_some() && run.execution_time_ms.is_some() && run.checkpoint_id.is_some()
    );

    let (messages, _) = events(&server, &run.id, None, None).await;
    echoed_events(&messages);
    let logs = echoed_logs(&c, &run.id).await;
    logs_by_sequence(&c, &run.id, &logs).await;
}

/// The events of the echo run: both lines on standard output, one on standard error, each
/// naming its stream, between statuses, with ids that count up.
fn echoed_events(messages: &[Message]) {
    // Standard output and error are two pipes: order holds within each, not across them.
    let mut lines = outputs(messages);
    lines.sort();
    assert_eq!(
        lines,
        vec!["hello world", "hello world", "oops"],
        "from the environment, then standard input"
    );
    let streams: Vec<(&str, &str)> = messages
        .iter()
        .filter(|m| m.1 == "output")
        .map(|m| (m.2["content"].as_str().unwrap(), m.2["stream"].as_str().unwrap()))
        .collect();
    assert_eq!(
        streams.iter().filter(|s| s.1 == "stderr").collect::<Vec<_>>(),
        [&("oops", "stderr")],
        "each line names its stream"
    );
    assert_eq!(streams.iter().filter(|s| s.1 == "stdout").count(), 2);
    let ids: Vec<u64> = messages.iter().map(|m| m.0).collect();
    assert_eq!(ids, (1..=ids.len() as u64).collect::<Vec<_>>(), "ids increase by one");
    let statuses: Vec<&str> = messages
        .iter()
        .filter(|m| m.1 == "status")
        .map(|m| m.2["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, vec!["pending", "running", "completed"]);
    let last = messages.last().unwrap();
    assert_eq!((last.1.as_str(), last.2["status"].as_str()), ("complete", Some("completed")));
}

/// The logs of the echo run: each line at its level, naming its stream, with sequences
/// that count the entries.
async fn echoed_logs(c: &vm0_client::Client, run_id: &str) -> Vec<types::LogEntry> {
    let logs = c.list_run_logs().id(run_id).send().await.unwrap().into_inner().data;
    let stream = |name: &str| -> Vec<(String, String)> {
        logs.iter()
            .filter(|l| l.type_ == types::LogType::Agent && l.metadata["stream"] == name)
            .map(|l| (l.message.clone(), l.level.to_string()))
            .collect()
    };
    assert_eq!(
        stream("stdout"),
        vec![("hello world".into(), "info".into()), ("hello world".into(), "info".into())]
    );
    assert_eq!(
        stream("stderr"),
        vec![("oops".to_string(), "warn".to_string())],
        "standard error is logged at warn"
    );
    assert!(logs.iter().any(|l| l.type_ == types::LogType::System));
    for entry in &logs {
        let expected = (entry.type_ == types::LogType::Agent)
            .then(|| entry.metadata["stream"].as_str().unwrap().parse().unwrap());
        assert_eq!(
            entry.stream, expected,
            "an agent entry names its stream, others none: {entry:?}"
        );
    }
    let sequences: Vec<u64> = logs.iter().map(|l| l.sequence.get()).collect();
    assert_eq!(
        sequences,
        (1..=logs.len() as u64).collect::<Vec<_>>(),
        "sequences count the entries in order"
    );
    logs
}

/// Paging the echo run's `logs` after a sequence, each way, and its errors.
async fn logs_by_sequence(c: &vm0_client::Client, run_id: &str, logs: &[types::LogEntry]) {
    let sequences: Vec<u64> = logs.iter().map(|l| l.sequence.get()).collect();
    let after = c
        .list_run_logs()
        .id(run_id)
        .after_sequence(sequences[1])
        .send()
        .await
        .unwrap()
        .into_inner()
        .data;
    assert_eq!(after, logs[2..], "afterSequence gives the entries after it");
    let paged: Vec<types::LogEntry> = c
        .list_run_logs()
        .id(run_id)
        .after_sequence(sequences[1])
        .limit(1)
        .stream()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(paged, logs[2..], "pages of one, each cursor with the same afterSequence");
    let paged: Vec<types::LogEntry> = c
        .list_run_logs()
        .id(run_id)
        .after_sequence(sequences[1])
        .order(types::SortOrder::Desc)
        .limit(1)
        .stream()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(
        paged,
        logs[2..].iter().rev().cloned().collect::<Vec<_>>(),
        "newest first, down to afterSequence"
    );
    let first = c.list_run_logs().id(run_id).limit(1).send().await.unwrap().into_inner();
    let cursor = first.pagination.next_cursor.expect("more than one entry");
    let (status, error) = api_error(
        c.list_run_logs()
            .id(run_id)
            .limit(1)
            .after_sequence(sequences[1])
            .cursor(cursor)
            .send()
            .await,
    );
    assert_eq!(
        (status, error.param.as_deref()),
        (400, Some("cursor")),
        "a cursor belongs to the query it came from"
    );
    let (status, error) = api_error(c.list_run_logs().id(run_id).after_sequence(-1).send().await);
    assert_eq!((status, error.param.as_deref()), (400, Some("afterSequence")));
    let only_system = c
        .list_run_logs()
        .id(run_id)
        .type_(types::LogTypeFilter::System)
        .send()
        .await
        .unwrap()
        .into_inner()
        .data;
    assert!(only_system.iter().all(|l| l.type_ == types::LogType::System));
    let newest_first = c
        .list_run_logs()
        .id(run_id)
        .order(types::SortOrder::Desc)
        .limit(1)
        .send()
        .await
        .unwrap()
        .into_inner();
    assert_eq!(newest_first.data[0].message, logs.last().unwrap().message);
    assert!(newest_first.pagination.has_more);
}

#[tokio::test]
async fn failures_timeouts_and_cancels_end_as_they_should() {
    let server = TestServer::start().await;
    let c = server.client();
    shell_agent(&c).await;
    let failed = wait(&c, &start(&c, body("shell", "exit 3")).await.id).await;
    assert_eq!(failed.status, RunStatus::Failed);
    assert!(failed.error.as_deref().unwrap().contains("status 3"), "{failed:?}");

    agent(&c, "sleepy", json!({"command": ["sh", "-c", "sleep 10"], "timeoutSeconds": 1})).await;
    let timed_out = wait(&c, &start(&c, body("sleepy", "zz")).await.id).await;
    assert_eq!(timed_out.status, RunStatus::Timeout, "{timed_out:?}");
    assert!(timed_out.execution_time_ms.unwrap() < 5000);

    // The agent says when it has started its processes, and then runs until cancelled;
    // one of them has left its process group.
    let long =
        start(&c, body("shell", "sleep 30.0424201 & setsid sleep 30.0424202 & echo started; wait"))
            .await;
    until_run_event(
        &c,
        &long.id,
        "the output \"started\"",
        |e| matches!(e, RunEvent::Output { content, .. } if content == "started"),
    )
    .await;
    assert_eq!(
        c.get_run().id(&long.id).send().await.unwrap().into_inner().status,
        RunStatus::Running
    );
    let asked = Instant::now();
    let cancelled = c.cancel_run().id(&long.id).send().await.unwrap().into_inner();
    assert_eq!(cancelled.status, RunStatus::Cancelled);
    assert!(asked.elapsed() < Duration::from_secs(1), "cancelled in {:?}", asked.elapsed());
    processes::until_gone(&["30.0424201", "30.0424202"]).await;
    let (status, error) = api_error(c.cancel_run().id(&long.id).send().await);
    assert_eq!((status, error.code.to_string().as_str()), (400, "invalid_state"));
}

#[tokio::test]
async fn sessions_continue_and_checkpoints_are_snapshots() {
    let server = TestServer::start().await;
    let c = server.client();
    shell_agent(&c).await;
    let first = wait(&c, &start(&c, body("shell", "echo one > note")).await.id).await;
    let session: types::CreateRunRequestSessionId = first.session_id.parse().unwrap();
    let continued = |prompt: &str| {
        types::CreateRunRequest::builder().session_id(Some(session.clone())).prompt(prompt)
    };
    let second = wait(&c, &start(&c, continued("echo two >> note; cat note")).await.id).await;
    assert_eq!(second.session_id, first.session_id);
    let third = wait(&c, &start(&c, continued("cat note")).await.id).await;
    let (messages, _) = events(&server, &third.id, None, None).await;
    assert_eq!(outputs(&messages), vec!["one", "two"], "the session saw both earlier runs");

    // A new session from the first checkpoint sees the state as it was then.
    let checkpoint: types::CreateRunRequestCheckpointId =
        first.checkpoint_id.clone().unwrap().parse().unwrap();
    let from = wait(
        &c,
        &start(
            &c,
            types::CreateRunRequest::builder().checkpoint_id(Some(checkpoint)).prompt("cat note"),
        )
        .await
        .id,
    )
    .await;
    assert_ne!(from.session_id, first.session_id);
    let (messages, _) = events(&server, &from.id, None, None).await;
    assert_eq!(outputs(&messages), vec!["one"]);
    let (status, _) = api_error(
        c.create_run()
            .body(
                types::CreateRunRequest::builder()
                    .session_id(Some("sess_nope".parse().unwrap()))
                    .prompt("x"),
            )
            .send()
            .await,
    );
    assert_eq!(status, 404);
}

/// A checkpoint restored elsewhere (a new session from it, in a directory of its own)
/// keeps an executable's mode, a symbolic link and an empty folder; a link that leads
/// outside the working directory is left out, and the run's log says so.
#[tokio::test]
async fn a_checkpoint_keeps_modes_links_and_empty_folders() {
    let server = TestServer::start().await;
    let c = server.client();
    shell_agent(&c).await;
    let first = wait(&c, &start(&c, body("shell", testing::SHAPES)).await.id).await;
    assert_eq!(first.status, RunStatus::Completed, "{first:?}");
    let logs = c.list_run_logs().id(&first.id).send().await.unwrap().into_inner().data;
    assert!(
        logs.iter().any(|l| l.message.contains("outside leads outside the working directory")),
        "{logs:?}"
    );
    let checkpoint: types::CreateRunRequestCheckpointId =
        first.checkpoint_id.clone().unwrap().parse().unwrap();
    let request = types::CreateRunRequest::builder()
        .checkpoint_id(Some(checkpoint))
        .prompt(testing::SHAPES_KEPT);
    let restored = wait(&c, &start(&c, request).await.id).await;
    let (messages, _) = events(&server, &restored.id, None, None).await;
    assert_eq!(outputs(&messages), vec!["kept"]);
}

#[tokio::test]
async fn volumes_are_readable_and_the_artifact_is_downloadable() {
    let server = TestServer::start().await;
    let c = server.client();
    shell_agent(&c).await;
    let volume = c.create_volume().body_map(|b| b.name("notes")).send().await.unwrap().into_inner();
    let content = b"from the volume\n";
    let hash: String =
        sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(content))
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
    let file = types::UploadFile {
        path: "dir/hello.txt".parse().unwrap(),
        size: content.len() as i64,
        hash: hash.parse().unwrap(),
    };
    let prepared = c
        .prepare_volume_upload()
        .id(&volume.id)
        .body_map(|b| b.files(vec![file]))
        .send()
        .await
        .unwrap()
        .into_inner();
    reqwest::Client::new()
        .put(&prepared.files[0].upload_url)
        .body(content.to_vec())
        .send()
        .await
        .unwrap();
    let session =
        prepared.upload_session_id.parse::<types::CommitUploadRequestUploadSessionId>().unwrap();
    let version = c
        .commit_volume_upload()
        .id(&volume.id)
        .body_map(|b| b.upload_session_id(session))
        .send()
        .await
        .unwrap()
        .into_inner();

    let request = body(
        "shell",
        "cat volumes/notes/dir/hello.txt; mkdir -p artifact/sub; echo made > artifact/sub/out.txt",
    )
    .volumes(std::collections::HashMap::from([("notes".to_string(), "latest".to_string())]))
    .artifact_name(Some("results".parse().unwrap()));
    let run = wait(&c, &start(&c, request).await.id).await;
    assert_eq!(run.status, RunStatus::Completed, "{run:?}");
    assert_eq!(run.volumes.get("notes"), Some(&version.id));
    let (messages, _) = events(&server, &run.id, None, None).await;
    assert_eq!(outputs(&messages), vec!["from the volume"]);

    let artifact = c
        .list_artifacts()
        .send()
        .await
        .unwrap()
        .into_inner()
        .data
        .into_iter()
        .find(|a| a.name.to_string() == "results")
        .unwrap();
    assert_eq!(run.artifact_version.as_deref(), artifact.current_version_id.as_deref());
    let versions =
        c.list_artifact_versions().id(&artifact.id).send().await.unwrap().into_inner().data;
    assert_eq!(versions[0].created_by, run.id);
    let download = c.download_artifact().id(&artifact.id).send().await.unwrap().into_inner();
    assert_eq!(download.files[0].path.to_string(), "sub/out.txt");
    let bytes = reqwest::get(&download.files[0].download_url).await.unwrap().bytes().await.unwrap();
    assert_eq!(bytes.as_ref(), b"made\n");

    let missing = body("shell", "true")
        .volumes(std::collections::HashMap::from([("nope".to_string(), "latest".to_string())]));
    let (status, error) = api_error(c.create_run().body(missing).send().await);
    assert_eq!((status, error.param.as_deref()), (404, Some("volumes.nope")));
}

#[tokio::test]
async fn secrets_never_appear_in_any_response_event_or_log() {
    let server = TestServer::start().await;
    let c = server.client();
    shell_agent(&c).await;
    let secret = "s3cr3t-VALUE-0042";
    // The secret whole, on both streams, and cut in two by a line break.
    let script = "echo \"token=$API_KEY\"; echo \"$API_KEY\" >&2; echo \"$API_KEY\" | cut -c1-9; \
        echo \"$API_KEY\" | cut -c10-; echo \"$LANG_HINT\"; exit 7";
    let request = body("shell", script)
        .secrets(std::collections::HashMap::from([("API_KEY".to_string(), secret.to_string())]))
        .variables(std::collections::HashMap::from([("LANG_HINT".to_string(), "en".to_string())]));
    let created = c.create_run().body(request).send().await.unwrap();
    let mut seen = vec![serde_json::to_string(&created.into_inner()).unwrap()];
    let id = serde_json::from_str::<Value>(&seen[0]).unwrap()["id"].as_str().unwrap().to_string();
    let run = wait(&c, &id).await;
    assert_eq!(run.status, RunStatus::Failed);
    let http = reqwest::Client::new();
    for path in [
        format!("/v1/runs/{id}"),
        "/v1/runs".into(),
        format!("/v1/runs/{id}/logs?limit=100"),
        format!("/v1/runs/{id}/metrics"),
        format!("/v1/runs/{id}/events"),
    ] {
        let text = http
            .get(format!("{}{path}", server.url))
            .bearer_auth(&server.token)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        seen.push(text);
    }
    for text in &seen {
        for part in [secret, "s3cr3t-VA", "LUE-0042"] {
            assert!(!text.contains(part), "the secret leaked: {text}");
        }
    }
    let (messages, _) = events(&server, &id, None, None).await;
    let mut lines = outputs(&messages);
    lines.sort();
    assert_eq!(lines, vec!["***", "***", "***", "en", "token=***"]);
    // Nor is it in the database's files: sealed while the run waited and ran, erased after.
    for entry in std::fs::read_dir(server.data_dir.path()).unwrap().flatten() {
        if entry.file_name().to_string_lossy().starts_with("vm0.db") {
            let bytes = std::fs::read(entry.path()).unwrap();
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "the secret is in {:?} in clear",
                entry.file_name()
            );
        }
    }
}

#[tokio::test]
async fn a_subscriber_that_reconnects_gets_every_event_exactly_once() {
    let server = TestServer::start().await;
    let c = server.client();
    shell_agent(&c).await;
    let run = start(
        &c,
        body("shell", "for i in 1 2 3 4 5 6 7 8 9 10 11 12; do echo line $i; sleep 0.05; done"),
    )
    .await;
    let (first, _) = events(&server, &run.id, None, Some(6)).await;
    let resume = first.last().unwrap().0;
    let (rest, _) = events(&server, &run.id, Some(resume), None).await;
    let all: Vec<Message> = first.into_iter().chain(rest).filter(|m| m.1 != "heartbeat").collect();
    let ids: Vec<u64> = all.iter().map(|m| m.0).collect();
    assert_eq!(ids, (1..=ids.len() as u64).collect::<Vec<_>>(), "no event lost or repeated");
    let lines: Vec<String> = (1..=12).map(|i| format!("line {i}")).collect();
    assert_eq!(outputs(&all), lines);
    assert_eq!(all.last().unwrap().1, "complete");
    // A replay of the finished run is the same.
    let (replay, _) = events(&server, &run.id, None, None).await;
    assert_eq!(replay, all);
    // lastEventId as a query parameter resumes too.
    let tail = reqwest::Client::new()
        .get(format!("{}/v1/runs/{}/events?lastEventId={}", server.url, run.id, ids.len() - 1))
        .bearer_auth(&server.token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(tail.starts_with(&format!("id: {}\nevent: complete\n", ids.len())), "{tail}");
}

/// A stream sends a heartbeat after 15 s without an event, counted from its last event
/// (the timer is set once per stream and moved on as it sends), none before, and the next
/// one 15 s after it.
#[tokio::test]
async fn a_quiet_stream_gets_a_heartbeat_15_s_after_its_last_event() {
    let server = TestServer::start().await;
    let c = server.client();
    shell_agent(&c).await;
    let run = start(&c, body("shell", "echo first; sleep 8; echo second; sleep 60")).await;
    let response = reqwest::Client::new()
        .get(format!("{}/v1/runs/{}/events", server.url, run.id))
        .bearer_auth(&server.token)
        .send()
        .await
        .unwrap();
    let mut stream = response.bytes_stream();
    let (mut text, mut seen) = (String::new(), Vec::new());
    let read = async {
        while let Some(chunk) = stream.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            while let Some(end) = text.find("\n\n") {
                let block: String = text.drain(..end + 2).collect();
                let event = block.lines().find_map(|l| l.strip_prefix("event: ")).unwrap();
                seen.push((event.to_string(), block.contains("second"), Instant::now()));
                if seen.iter().filter(|(event, _, _)| event == "heartbeat").count() == 2 {
                    return;
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(50), read).await.expect("two heartbeats in 50 s");
    let second = seen.iter().position(|(_, second, _)| *second).expect("the second line");
    let names: Vec<&str> = seen[second + 1..].iter().map(|(event, _, _)| &event[..]).collect();
    assert_eq!(names, ["heartbeat", "heartbeat"], "after the second line: {seen:?}");
    for (before, after) in [(second, second + 1), (second + 1, second + 2)] {
        let quiet = seen[after].2 - seen[before].2;
        assert!(
            quiet >= Duration::from_millis(14_500) && quiet < Duration::from_secs(17),
            "a heartbeat came {quiet:?} after what was sent before it"
        );
    }
    c.cancel_run().id(&run.id).send().await.unwrap();
}

#[tokio::test]
async fn metrics_are_sampled_and_summarised() {
    let server = TestServer::start().await;
    let c = server.client();
    shell_agent(&c).await;
    let run =
        start(&c, body("shell", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; sleep 0.5"))
            .await;
    until_run_event(&c, &run.id, "status running", |e| {
        matches!(e, RunEvent::Status { status: RunStatus::Running, .. })
    })
    .await;
    let live = c.get_run_metrics().id(&run.id).send().await.unwrap().into_inner();
    assert!(live.summary.total_duration_ms.is_none(), "null while running");
    let done = wait(&c, &run.id).await;
    let metrics = c.get_run_metrics().id(&run.id).send().await.unwrap().into_inner();
    assert!(!metrics.data.is_empty(), "sampled every 200 ms");
    assert!(metrics.data.iter().all(|s| s.memory_total_mb > 0.0 && s.disk_total_mb > 0.0));
    assert!(metrics.summary.max_memory_used_mb > 0.0, "{metrics:?}");
    assert_eq!(metrics.summary.total_duration_ms, done.execution_time_ms);
}

#[tokio::test]
async fn runs_are_listed_newest_first_with_filters() {
    let server = TestServer::start().await;
    let c = server.client();
    let shell = shell_agent(&c).await;
    let a = wait(&c, &start(&c, body("shell", "true")).await.id).await;
    let b = wait(&c, &start(&c, body("shell", "false")).await.id).await;
    let all = c.list_runs().send().await.unwrap().into_inner().data;
    assert_eq!(
        all.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
        vec![b.id.clone(), a.id.clone()]
    );
    let failed = c.list_runs().status(RunStatus::Failed).send().await.unwrap().into_inner().data;
    assert_eq!(failed.iter().map(|r| r.id.clone()).collect::<Vec<_>>(), vec![b.id.clone()]);
    assert_eq!(
        c.list_runs().agent_id(shell.id.as_str()).send().await.unwrap().into_inner().data.len(),
        2
    );
    assert!(c.list_runs().agent_id("ag_other").send().await.unwrap().into_inner().data.is_empty());
    let later = b.created_at + chrono::Duration::seconds(1);
    assert!(c.list_runs().since(later).send().await.unwrap().into_inner().data.is_empty());
    let page = c.list_runs().limit(1).send().await.unwrap().into_inner();
    let next = c
        .list_runs()
        .limit(1)
        .cursor(page.pagination.next_cursor.unwrap().as_str())
        .send()
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next.data[0].id, a.id);
    let theirs = server.client_with(&server.user_token("other").await);
    assert_eq!(api_error(theirs.get_run().id(&a.id).send().await).0, 404);
    assert!(theirs.list_runs().send().await.unwrap().into_inner().data.is_empty());
}

#[tokio::test]
async fn agent_configurations_are_checked_against_the_executor_schema() {
    let server = TestServer::start().await;
    let http = reqwest::Client::new();
    for (config, param) in [
        (json!({}), "config.command"),
        (json!({"command": []}), "config.command"),
        (json!({"command": "sh"}), "config.command"),
        (json!({"command": ["sh"], "timeoutSeconds": 0}), "config.timeoutSeconds"),
        (json!({"command": ["sh"], "bogus": 1}), "config.bogus"),
        (json!({"command": ["sh"], "files": {"../x": "y"}}), "config.files.../x"),
    ] {
        let response = http
            .post(format!("{}/v1/agents", server.url))
            .bearer_auth(&server.token)
            .json(&json!({"name": "checked", "config": config}))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let error: Value = response.json().await.unwrap();
        assert_eq!(
            (status, error["error"]["param"].as_str()),
            (400, Some(param)),
            "{config}: {error}"
        );
    }
    let schema: Value = reqwest::get(format!("{}/executors/local/config.schema.json", server.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(schema["required"], json!(["command"]));
}

#[tokio::test]
async fn a_refused_run_leaves_no_new_artifact_behind() {
    let server = TestServer::start().await;
    let c = server.client();
    shell_agent(&c).await;
    let artifacts = || async {
        c.list_artifacts()
            .send()
            .await
            .unwrap()
            .into_inner()
            .data
            .into_iter()
            .map(|a| a.name.to_string())
            .collect::<Vec<_>>()
    };
    // A version of an artifact that does not exist yet: the run is refused, and the
    // artifact it named is not made.
    let refused = body("shell", "true")
        .artifact_name(Some("fresh".parse().unwrap()))
        .artifact_version(Some("nope".parse().unwrap()));
    let (status, error) = api_error(c.create_run().body(refused).send().await);
    assert_eq!((status, error.param.as_deref()), (404, Some("artifactVersion")), "{error:?}");
    assert_eq!(artifacts().await, Vec::<String>::new(), "the refused run left an artifact behind");
    assert!(
        c.list_runs().send().await.unwrap().into_inner().data.is_empty(),
        "the refused run was stored"
    );

    // The same new name on a run that is accepted makes the artifact with the run.
    let accepted = start(
        &c,
        body("shell", "mkdir -p artifact; echo made > artifact/out.txt")
            .artifact_name(Some("fresh".parse().unwrap())),
    )
    .await;
    let run = c.get_run().id(&accepted.id).send().await.unwrap().into_inner();
    assert_eq!(
        run.artifact_name.as_ref().map(|n| n.to_string()).as_deref(),
        Some("fresh"),
        "{run:?}"
    );
    assert_eq!(artifacts().await, vec!["fresh".to_string()]);
    let run = wait(&c, &accepted.id).await;
    assert_eq!(run.status, RunStatus::Completed, "{run:?}");
}

/// The pid of a process an agent took out of its run's process group, which the server
/// does not end: killed when the test ends, however it ends.
struct Escaped(String);

impl Drop for Escaped {
    fn drop(&mut self) {
        std::process::Command::new("kill").arg(&self.0).status().ok();
    }
}

#[tokio::test]
async fn a_cancel_answers_cancelled_while_an_escaped_process_holds_the_output_open() {
    let server = TestServer::start().await;
    let c = server.client();
    shell_agent(&c).await;
    // `setsid` takes the background sleep out of the run's process group: killing the
    // group leaves it alive, holding the run's standard output and error open.
    let run =
        start(&c, body("shell", "setsid sleep 30 & echo $! > escaped; echo started; sleep 30"))
            .await;
    until_run_event(
        &c,
        &run.id,
        "the output \"started\"",
        |e| matches!(e, RunEvent::Output { content, .. } if content == "started"),
    )
    .await;
    let pid_file = server.data_dir.path().join("sessions").join(&run.session_id).join("escaped");
    let _escaped = Escaped(std::fs::read_to_string(&pid_file).unwrap().trim().to_string());
    let cancelled = c.cancel_run().id(&run.id).send().await.unwrap().into_inner();
    assert_eq!(cancelled.status, RunStatus::Cancelled, "the cancel answered {cancelled:?}");
    assert!(
        cancelled.completed_at.is_some(),
        "the cancelled run has no completedAt: {cancelled:?}"
    );
}

#[tokio::test]
async fn a_runs_cursor_is_bound_to_its_status_filter() {
    let server = TestServer::start().await;
    let c = server.client();
    shell_agent(&c).await;
    let older = wait(&c, &start(&c, body("shell", "false")).await.id).await;
    let newer = wait(&c, &start(&c, body("shell", "false")).await.id).await;
    wait(&c, &start(&c, body("shell", "true")).await.id).await;
    let first = c.list_runs().status(RunStatus::Failed).limit(1).send().await.unwrap().into_inner();
    assert_eq!(first.data.iter().map(|r| r.id.clone()).collect::<Vec<_>>(), vec![newer.id.clone()]);
    let cursor = first.pagination.next_cursor.expect("a second page of failed runs");

    let next = c
        .list_runs()
        .status(RunStatus::Failed)
        .limit(1)
        .cursor(cursor.as_str())
        .send()
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        next.data.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
        vec![older.id.clone()],
        "the same filter resumes"
    );
    let (status, error) = api_error(
        c.list_runs().status(RunStatus::Completed).limit(1).cursor(cursor.as_str()).send().await,
    );
    assert_eq!(
        (status, error.param.as_deref()),
        (400, Some("cursor")),
        "another status filter: {error:?}"
    );
    let (status, error) = api_error(c.list_runs().limit(1).cursor(cursor.as_str()).send().await);
    assert_eq!(
        (status, error.param.as_deref()),
        (400, Some("cursor")),
        "no status filter: {error:?}"
    );
}

/// A client that resumes an ended run's stream after its last event gets the end of the
/// stream, not heartbeats forever; one that resumes earlier gets exactly the rest.
#[tokio::test]
async fn resuming_an_ended_runs_stream_gives_the_rest_then_the_end() {
    let server = TestServer::start().await;
    let c = server.client();
    shell_agent(&c).await;
    let run = wait(&c, &start(&c, body("shell", "echo one; echo two")).await.id).await;
    let (all, _) = events(&server, &run.id, None, None).await;
    let last = all.last().unwrap();
    assert_eq!(last.1, "complete");

    let (after_last, rest) = events(&server, &run.id, Some(last.0), None).await;
    assert!(
        after_last.is_empty() && rest.is_empty(),
        "after the complete event: {after_last:?} {rest:?}"
    );
    let (after_first, _) = events(&server, &run.id, Some(all[0].0), None).await;
    assert_eq!(after_first, all[1..].to_vec());
}

/// A run whose artifact holds a file no version may hold fails, naming the file, rather
/// than making a version whose download breaks.
#[tokio::test]
async fn an_artifact_file_that_breaks_the_path_rules_fails_the_run_naming_it() {
    let server = TestServer::start().await;
    let c = server.client();
    shell_agent(&c).await;
    let run = wait(
        &c,
        &start(
            &c,
            body("shell", "echo x > 'artifact/back\\slash'")
                .artifact_name(Some("odd".parse().unwrap())),
        )
        .await
        .id,
    )
    .await;
    assert_eq!(run.status, RunStatus::Failed);
    assert!(run.error.as_deref().is_some_and(|e| e.contains("back\\slash")), "{:?}", run.error);
    let artifacts = c.list_artifacts().send().await.unwrap().into_inner();
    let odd = artifacts
        .data
        .iter()
        .find(|a| a.name.as_str() == "odd")
        .expect("the artifact the run named");
    assert!(odd.current_version_id.is_none(), "a version was made of it");
}

/// A line longer than 64 KiB is kept up to there, the cut marked, and the next line
/// comes through whole: no line a run prints grows the server's memory.
#[tokio::test]
async fn a_long_line_is_cut_at_64_kib_and_marked() {
    let server = TestServer::start().await;
    let c = server.client();
    shell_agent(&c).await;
    let run = wait(
        &c,
        &start(&c, body("shell", "head -c 1000000 /dev/zero | tr '\\0' x; echo; echo after"))
            .await
            .id,
    )
    .await;
    assert_eq!(run.status, RunStatus::Completed, "{:?}", run.error);
    let logs = c
        .list_run_logs()
        .id(&run.id)
        .type_(types::LogTypeFilter::Agent)
        .send()
        .await
        .unwrap()
        .into_inner();
    let messages: Vec<&str> = logs.data.iter().map(|l| l.message.as_str()).collect();
    assert_eq!(messages.len(), 2, "{:?}", messages.iter().map(|m| m.len()).collect::<Vec<_>>());
    assert_eq!(messages[0], format!("{} [line cut at 64 KiB]", "x".repeat(64 * 1024)));
    assert_eq!(messages[1], "after");
}

/// A run that prints more than its configuration's maxOutputBytes is stopped and fails,
/// naming the limit, with no more than the limit stored.
#[tokio::test]
async fn a_run_past_its_output_limit_fails_naming_it() {
    let server = TestServer::start().await;
    let c = server.client();
    let config = json!({
        "command": ["sh", "-c", "yes hello | head -c 10000000; echo done"],
        "maxOutputBytes": 10000
    });
    agent(&c, "chatty", config).await;
    let run = wait(&c, &start(&c, body("chatty", "go")).await.id).await;
    assert_eq!(run.status, RunStatus::Failed);
    assert!(
        run.error.as_deref().is_some_and(|e| e.contains("limit of 10000 bytes")),
        "{:?}",
        run.error
    );
    let mut stored = 0;
    let mut logs =
        c.list_run_logs().id(&run.id).type_(types::LogTypeFilter::Agent).limit(100).stream();
    while let Some(entry) = futures::TryStreamExt::try_next(&mut logs).await.unwrap() {
        stored += entry.message.len() + 1;
    }
    assert!(stored <= 10000, "{stored} bytes stored");
}

/// Each line costs what storing it takes, so empty lines are no way around the limit.
#[tokio::test]
async fn short_lines_count_what_they_cost_to_store() {
    let server = TestServer::start().await;
    let c = server.client();
    let config = json!({
        "command": ["sh", "-c", "yes '' | head -n 50000; echo done"],
        "maxOutputBytes": 100000
    });
    agent(&c, "blank", config).await;
    let run = wait(&c, &start(&c, body("blank", "go")).await.id).await;
    assert_eq!(run.status, RunStatus::Failed, "{run:?}");
    assert!(run.error.as_deref().is_some_and(|e| e.contains("maxOutputBytes")), "{:?}", run.error);
    let logs: Vec<_> = futures::TryStreamExt::try_collect(
        c.list_run_logs().id(&run.id).type_(types::LogTypeFilter::Agent).limit(100).stream(),
    )
    .await
    .unwrap();
    assert!(logs.len() < 400, "{} lines stored", logs.len());
}

/// A client written against 1.0.0, which refuses properties its schemas do not list, gets
/// none of those added since: the proxy checks every response against the 1.0.0 release.
#[tokio::test]
async fn a_client_of_1_0_0_gets_what_1_0_0_describes() {
    let server = TestServer::start().await;
    let c = server.client();
    agent(&c, "echo", json!({"command": ["sh", "-c", "echo out; echo err >&2"]})).await;
    let old = |request: reqwest::RequestBuilder| {
        request.bearer_auth(&server.token).header("api-version", "1.0.0")
    };
    let http = reqwest::Client::new();
    let created: Value = old(http.post(format!("{}/v1/runs", server.url)))
        .json(&json!({"agent": "echo", "prompt": "go"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    wait(&c, &id).await;

    let stream = old(http.get(format!("{}/v1/runs/{id}/events", server.url)))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let outputs: Vec<Value> = stream
        .split("\n\n")
        .filter(|block| block.contains("event: output"))
        .map(|block| {
            serde_json::from_str(block.lines().find_map(|l| l.strip_prefix("data: ")).unwrap())
                .unwrap()
        })
        .collect();
    assert_eq!(outputs.len(), 2, "{stream}");
    assert!(
        outputs.iter().all(|data| data.as_object().unwrap().keys().eq(["content"])),
        "{outputs:?}"
    );

    let logs: Value = old(http.get(format!("{}/v1/runs/{id}/logs", server.url)))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let entries = logs["data"].as_array().unwrap();
    assert!(entries.len() >= 4, "{logs}");
    assert!(
        entries.iter().all(|e| e.get("sequence").is_none() && e.get("stream").is_none()),
        "{logs}"
    );
    for path in [
        format!("/v1/runs/{id}"),
        "/v1/runs".into(),
        format!("/v1/runs/{id}/metrics"),
        "/v1/agents".into(),
    ] {
        let reply = old(http.get(format!("{}{path}", server.url))).send().await.unwrap();
        assert_eq!(reply.status(), 200, "{path}");
    }
    // The current client, which sends its own version, gets them.
    let logs = c.list_run_logs().id(&id).send().await.unwrap().into_inner().data;
    assert!(logs.iter().any(|l| l.stream == Some(types::OutputStream::Stderr)));
    server.stop().await;
}

/// What a run leaves is held to the server's limits as an upload is: a 50 MiB file in its
/// artifact on a server whose --max-file-size is 10 MiB fails the run naming the file and
/// the limit, and the artifact gets no version; three sparse files of 300 MB under
/// `maxDiskMib: 16` fail the run naming its disk limit, though they take few blocks.
#[tokio::test]
async fn what_a_run_leaves_is_held_to_the_servers_file_and_disk_limits() {
    let server = TestServer::start_with(tempfile::tempdir().unwrap(), |config| {
        vm0_server::Config { max_file_size: 10 << 20, ..config }
    })
    .await;
    let c = server.client();
    shell_agent(&c).await;
    let big = "head -c 52428800 /dev/zero > artifact/big.bin";
    let request = body("shell", big).artifact_name(Some("large".parse().unwrap()));
    let run = wait(&c, &start(&c, request).await.id).await;
    assert_eq!(run.status, RunStatus::Failed);
    let error = run.error.clone().unwrap_or_default();
    assert!(error.contains("artifact/big.bin") && error.contains("--max-file-size"), "{error}");
    let artifacts = c.list_artifacts().send().await.unwrap().into_inner().data;
    let large = artifacts.iter().find(|a| a.name.as_str() == "large").expect("the artifact");
    assert!(large.current_version_id.is_none(), "a version was made of it");

    let limited = json!({
        "command": ["sh", "-c", "eval \"$VM0_PROMPT\""],
        "timeoutSeconds": 60,
        "maxDiskMib": 16
    });
    agent(&c, "sparse", limited).await;
    let sparse = "truncate -s 300M a b c; sleep 3";
    let run = wait(&c, &start(&c, body("sparse", sparse)).await.id).await;
    assert_eq!(run.status, RunStatus::Failed);
    let error = run.error.unwrap_or_default();
    assert!(error.contains("maxDiskMib"), "{error}");
}
