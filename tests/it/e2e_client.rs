//! The client's extras end to end against the reference server: pagination streams, run
//! events and waiting, pushing and pulling directories, and errors.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use serde_json::json;
use vm0_client::{Error, Paginate, RunEvent, Transfer};
use vm0_tests::server::TestServer;
use vm0_types::{self as types, RunStatus};

fn config(value: serde_json::Value) -> types::AgentConfig {
    types::AgentConfig(value.as_object().unwrap().clone())
}

#[tokio::test]
async fn list_operations_stream_every_item_across_pages() {
    let server = TestServer::start().await;
    let c = server.client();
    for i in 0..23 {
        let name = format!("agent-{i:02}");
        c.create_agent()
            .body_map(|b| b.name(name.as_str()).config(config(json!({"command": ["true"]}))))
            .send()
            .await
            .unwrap();
    }
    let names: Vec<String> = c
        .list_agents()
        .limit(5)
        .stream()
        .map_ok(|a| a.name.to_string())
        .try_collect()
        .await
        .unwrap();
    let expected: Vec<String> = (0..23).rev().map(|i| format!("agent-{i:02}")).collect();
    assert_eq!(names, expected, "23 agents over five pages of five, newest first");
    let filtered: Vec<types::Agent> =
        c.list_agents().limit(5).name("agent-07").stream().try_collect().await.unwrap();
    assert_eq!(filtered.len(), 1, "filters are kept");
    let tokens: Vec<types::Token> = c.list_tokens().limit(1).stream().try_collect().await.unwrap();
    assert_eq!(tokens.len(), 1);
}

#[tokio::test]
async fn a_run_is_followed_through_typed_events() {
    let server = TestServer::start().await;
    let c = server.client();
    c.create_agent()
        .body_map(|b| {
            b.name("echo")
                .config(config(json!({"command": ["sh", "-c", "echo \"$VM0_PROMPT\"; echo bye"]})))
        })
        .send()
        .await
        .unwrap();
    let run = c
        .create_run()
        .body(
            types::CreateRunRequest::builder()
                .agent(Some("echo".parse().unwrap()))
                .prompt("hi there"),
        )
        .send()
        .await
        .unwrap()
        .into_inner();
    let events: Vec<RunEvent> = c.run_events(&run.id).try_collect().await.unwrap();
    let outputs: Vec<&str> = events
        .iter()
        .filter_map(|e| {
            if let RunEvent::Output { content, .. } = e {
                Some(content.as_str())
            } else {
                None
            }
        })
        .collect();
    assert_eq!(outputs, vec!["hi there", "bye"]);
    assert!(matches!(events.last(), Some(RunEvent::Complete { status: RunStatus::Completed, .. })));
    let after: Vec<RunEvent> =
        c.run_events_after(&run.id, events[1].id()).try_collect().await.unwrap();
    assert_eq!(after, events[2..].to_vec());
    let finished = c.wait_for_run(&run.id).await.unwrap();
    assert_eq!(finished.status, RunStatus::Completed);

    let error = c.run_events("run_missing").next().await.unwrap().unwrap_err();
    assert_eq!(error.status(), Some(404));
    assert!(error.request_id().is_some_and(|id| error.to_string().contains(id)), "{error}");
}

#[tokio::test]
async fn a_directory_pushed_and_pulled_comes_back_byte_for_byte() {
    let server = TestServer::start().await;
    let c = server.client();
    let source = tempfile::tempdir().unwrap();
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("a.txt", b"alpha".to_vec()),
        ("nested/deeper/b.bin", (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect()),
        ("nested/empty", Vec::new()),
    ];
    for (path, bytes) in &files {
        let target = source.path().join(path);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(target, bytes).unwrap();
    }
    let volume = c.create_volume().body_map(|b| b.name("dir")).send().await.unwrap().into_inner();
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    let options = Transfer::default()
        .concurrency(2)
        .on_progress(move |p| counter.store(p.bytes, Ordering::SeqCst));
    let version =
        c.push_volume(&volume.id, source.path(), Some("from a dir"), &options).await.unwrap();
    let total: u64 = files.iter().map(|(_, b)| b.len() as u64).sum();
    assert_eq!((version.file_count, version.size as u64), (3, total));
    assert_eq!(sent.load(Ordering::SeqCst), total, "progress reached every byte");

    let target = tempfile::tempdir().unwrap();
    let pulled =
        c.pull_volume(&volume.id, None, target.path(), &Transfer::default()).await.unwrap();
    assert_eq!(pulled.version_id, version.id);
    for (path, bytes) in &files {
        assert_eq!(&std::fs::read(target.path().join(path)).unwrap(), bytes, "{path}");
    }
    // Pushing the same directory again is the same version.
    assert_eq!(
        c.push_volume(&volume.id, source.path(), None, &Transfer::default()).await.unwrap().id,
        version.id
    );

    let artifact =
        c.create_artifact().body_map(|b| b.name("out")).send().await.unwrap().into_inner();
    let pushed =
        c.push_artifact(&artifact.id, source.path(), None, &Transfer::default()).await.unwrap();
    let again = tempfile::tempdir().unwrap();
    c.pull_artifact(&artifact.id, Some(pushed.id.as_str()), again.path(), &Transfer::default())
        .await
        .unwrap();
    assert_eq!(std::fs::read(again.path().join("a.txt")).unwrap(), b"alpha");

    // A version without files still makes its directory.
    let empty = tempfile::tempdir().unwrap();
    let hollow =
        c.create_volume().body_map(|b| b.name("hollow")).send().await.unwrap().into_inner();
    c.push_volume(&hollow.id, empty.path(), None, &Transfer::default()).await.unwrap();
    let new_dir = empty.path().join("new");
    let pulled = c.pull_volume(&hollow.id, None, &new_dir, &Transfer::default()).await.unwrap();
    assert!(pulled.files.is_empty() && new_dir.is_dir());
}

#[tokio::test]
async fn api_errors_carry_their_envelope_and_request_id() {
    let server = TestServer::start().await;
    let error: Error = server.client().get_agent().id("ag_nope").send().await.unwrap_err().into();
    let api = error.api().expect("an API error");
    assert_eq!(
        (api.status, api.kind.to_string().as_str(), api.code.to_string().as_str()),
        (404, "not_found_error", "resource_not_found")
    );
    assert_eq!(api.message, "No such agent: 'ag_nope'");
    let id = api.request_id.clone().expect("the response's request id");
    assert!(id.starts_with("req_") && error.to_string().contains(&id), "{error}");
}
