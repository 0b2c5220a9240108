//! The client's extras against a small fault-injecting server on loopback: retries,
//! Retry-After, no retry of a POST that reached the server, an event stream that drops and
//! resumes, and a download whose bytes do not match their hash.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures::StreamExt;
use serde_json::json;
use vm0_client::{Client, Error, RunEvent, Transfer};
use vm0_tests::wait::{within, DEADLINE};

const TOKEN: &str = "vm0_live_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// Serves `router` on a free loopback port; its base URL.
async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    url
}

fn client(url: &str) -> Client {
    Client::builder().base_url(url).token(TOKEN).retries(2).build().unwrap()
}

fn empty_page() -> serde_json::Value {
    json!({"data": [], "pagination": {"hasMore": false, "nextCursor": null}})
}

fn error_body(status: StatusCode) -> Response {
    let body = json!({"error": {"type": "api_error", "code": "internal_error", "message": "boom"}});
    (status, [("x-request-id", "req_fault")], axum::Json(body)).into_response()
}

/// A server whose agent listing answers `first()` once, then empty pages; and how many
/// calls it has had.
async fn agents_failing_once(first: fn() -> Response) -> (String, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let listing = get(move || {
        let seen = seen.clone();
        async move {
            match seen.fetch_add(1, Ordering::SeqCst) {
                0 => first(),
                _ => axum::Json(empty_page()).into_response(),
            }
        }
    });
    (serve(Router::new().route("/v1/agents", listing)).await, calls)
}

#[tokio::test]
async fn a_503_then_a_200_is_retried_and_succeeds() {
    let (url, calls) = agents_failing_once(|| error_body(StatusCode::SERVICE_UNAVAILABLE)).await;
    let page = client(&url).list_agents().send().await.unwrap().into_inner();
    assert!(page.data.is_empty());
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_429_with_retry_after_waits_about_that_long() {
    let (url, calls) = agents_failing_once(|| {
        (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")], "slow down").into_response()
    })
    .await;
    let started = Instant::now();
    client(&url).list_agents().send().await.unwrap();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(950) && waited < Duration::from_secs(3),
        "waited {waited:?}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_post_that_got_a_500_is_not_retried_and_the_error_says_everything() {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let url = serve(Router::new().route(
        "/v1/agents",
        post(move || {
            let seen = seen.clone();
            async move {
                seen.fetch_add(1, Ordering::SeqCst);
                error_body(StatusCode::INTERNAL_SERVER_ERROR)
            }
        }),
    ))
    .await;
    let config = vm0_client::types::AgentConfig(serde_json::Map::new());
    let error: Error = client(&url)
        .create_agent()
        .body_map(|b| b.name("a").config(config))
        .send()
        .await
        .unwrap_err()
        .into();
    assert_eq!(calls.load(Ordering::SeqCst), 1, "not retried");
    let api = error.api().unwrap();
    assert_eq!(
        (api.status, api.code.to_string().as_str(), api.request_id.as_deref()),
        (500, "internal_error", Some("req_fault"))
    );
    assert!(error.to_string().contains("req_fault"), "{error}");
    // The key the POST carried, a fresh UUID v4, to send again with a retry.
    let key = api.idempotency_key.as_deref().expect("a POST carries a key");
    assert_eq!(key.parse::<uuid::Uuid>().map(|k| k.get_version_num()), Ok(4), "{key}");
    assert!(error.to_string().contains(key), "{error}");
}

#[tokio::test]
async fn a_connection_refused_is_retried_even_for_a_post_and_then_reported() {
    // Nothing listens here: the server never received anything, so retrying is safe.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let config = vm0_client::types::AgentConfig(serde_json::Map::new());
    let started = Instant::now();
    let error: Error = client(&url)
        .create_agent()
        .body_map(|b| b.name("a").config(config))
        .send()
        .await
        .unwrap_err()
        .into();
    assert!(matches!(error, Error::Transport { .. }), "{error}");
    assert!(started.elapsed() >= Duration::from_millis(300), "two backoffs before giving up");
}

#[tokio::test]
async fn a_dropped_event_stream_resumes_without_losing_or_repeating_an_event() {
    let connections = Arc::new(Mutex::new(Vec::<Option<String>>::new()));
    let seen = connections.clone();
    let message = |id: u64, event: &str, data: serde_json::Value| {
        format!("id: {id}\nevent: {event}\ndata: {data}\n\n")
    };
    let url = serve(Router::new().route(
        "/v1/runs/{id}/events",
        get(move |headers: HeaderMap| {
            let seen = seen.clone();
            async move {
                let last = headers.get("last-event-id").map(|v| v.to_str().unwrap().to_string());
                let first = seen.lock().unwrap().is_empty();
                seen.lock().unwrap().push(last);
                let chunks: Vec<Result<String, std::io::Error>> = if first {
                    // Three events, then the connection breaks mid-message.
                    vec![
                        Ok(message(1, "status", json!({"status": "running"}))),
                        Ok(message(2, "output", json!({"content": "one", "stream": "stdout"}))),
                        Ok(message(3, "output", json!({"content": "two", "stream": "stdout"}))),
                        Ok("id: 4\nevent: out".into()),
                        Err(std::io::Error::other("connection reset")),
                    ]
                } else {
                    // The server replays from the id it was given; an old one is skipped by
                    // the client.
                    vec![
                        Ok(message(3, "output", json!({"content": "two", "stream": "stdout"}))),
                        Ok(message(4, "output", json!({"content": "three", "stream": "stdout"}))),
                        Ok(message(5, "heartbeat", json!({}))),
                        Ok(message(6, "status", json!({"status": "completed"}))),
                        Ok(message(
                            7,
                            "complete",
                            json!({"status": "completed", "executionTimeMs": 12}),
                        )),
                    ]
                };
                // Paced, so that each chunk is on the wire before the connection breaks.
                let paced = futures::stream::iter(chunks).then(|chunk| async move {
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    chunk
                });
                ([("content-type", "text/event-stream")], Body::from_stream(paced))
            }
        }),
    ))
    .await;
    let events: Vec<RunEvent> = within(
        DEADLINE,
        "the whole event stream",
        client(&url).run_events("run_1").map(|e| e.unwrap()).collect(),
    )
    .await;
    let ids: Vec<u64> = events.iter().map(RunEvent::id).collect();
    assert_eq!(ids, vec![1, 2, 3, 4, 6, 7], "each event once, heartbeats left out");
    assert_eq!(
        events[3],
        RunEvent::Output {
            id: 4,
            content: "three".into(),
            stream: vm0_client::types::OutputStream::Stdout
        }
    );
    assert!(matches!(events.last(), Some(RunEvent::Complete { execution_time_ms: Some(12), .. })));
    assert_eq!(
        *connections.lock().unwrap(),
        vec![None, Some("3".to_string())],
        "resumed after the last event received"
    );
}

#[tokio::test]
async fn a_download_whose_bytes_do_not_match_their_hash_fails_and_leaves_nothing() {
    // The SHA-256 of "hello", which the blob is not.
    const HASH: &str = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
    let url_cell = Arc::new(Mutex::new(String::new()));
    let base = url_cell.clone();
    let router = Router::new()
        .route(
            "/v1/volumes/{id}/download",
            get(move || {
                let base = base.lock().unwrap().clone();
                async move {
                    axum::Json(json!({
                        "versionId": "v",
                        "files": [{
                            "path": "dir/file.txt", "size": 5,
                            "hash": HASH,
                            "downloadUrl": format!("{base}/blob"),
                        }],
                        "expiresAt": "2030-01-01T00:00:00Z",
                    }))
                }
            }),
        )
        .route("/blob", get(|| async { "HELLO" }));
    let url = serve(router).await;
    *url_cell.lock().unwrap() = url.clone();
    let target = tempfile::tempdir().unwrap();
    let error = client(&url)
        .pull_volume("vol_1", None, target.path(), &Transfer::default())
        .await
        .unwrap_err();
    match &error {
        Error::Integrity { path, message } => {
            assert_eq!(path, "dir/file.txt");
            assert!(message.contains("SHA-256"), "{message}");
        }
        other => panic!("expected an integrity error, got {other}"),
    }
    let left: Vec<_> = walk(target.path());
    assert!(left.is_empty(), "nothing is left behind: {left:?}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .flat_map(
            |e| if e.file_type().unwrap().is_dir() { walk(&e.path()) } else { vec![e.path()] },
        )
        .collect()
}

#[tokio::test]
async fn a_path_that_would_leave_the_target_is_refused() {
    let router = Router::new().route(
        "/v1/volumes/{id}/download",
        get(|| async {
            axum::Json(json!({
                "versionId": "v",
                "files": [{
                    "path": "../escape",
                    "size": 1,
                    "hash": "0".repeat(64),
                    "downloadUrl": "http://127.0.0.1:9/x"
                }],
                "expiresAt": "2030-01-01T00:00:00Z",
            }))
        }),
    );
    let url = serve(router).await;
    let target = tempfile::tempdir().unwrap();
    let error = client(&url)
        .pull_volume("vol_1", None, target.path(), &Transfer::default())
        .await
        .unwrap_err();
    // The generated types refuse the path before the transfer code sees it, or the
    // transfer code refuses it: either way nothing is written.
    assert!(matches!(error, Error::Invalid(_) | Error::Transport { .. }), "{error}");
    assert!(walk(target.path()).is_empty());
    assert!(!target.path().parent().unwrap().join("escape").exists());
}

#[test]
fn a_malformed_token_is_refused_locally_and_a_token_never_shows_in_debug() {
    let error = Client::new("http://127.0.0.1:1", "vm0_live_nothex").unwrap_err();
    assert!(matches!(error, Error::Invalid(_)));
    assert!(!error.to_string().contains("nothex"));
    let client = Client::new("http://127.0.0.1:1", TOKEN).unwrap();
    let debug = format!("{client:?}");
    assert!(!debug.contains(&TOKEN[9..]), "{debug}");
}

#[test]
fn a_base_url_that_is_not_an_absolute_http_url_is_refused_locally() {
    for url in ["127.0.0.1:8080", "localhost", "/v1", "ftp://api.vm0.ai", ""] {
        let error = Client::new(url, TOKEN).unwrap_err();
        assert!(
            matches!(&error, Error::Invalid(m) if m.contains("http:// or https://")),
            "{url:?}: {error}"
        );
    }
    Client::new("https://api.vm0.ai/", TOKEN).unwrap();
}

/// A pull never writes through a symbolic link in the target, with or without the CLI's
/// `--force`: a linked folder is refused, and a linked file is replaced by the file, its
/// link's target left as it was.
#[tokio::test]
async fn a_pull_never_writes_through_a_symbolic_link() {
    let server = vm0_tests::server::TestServer::start().await;
    let c = server.client();
    let source = tempfile::tempdir().unwrap();
    std::fs::create_dir(source.path().join("sub")).unwrap();
    std::fs::write(source.path().join("sub").join("inner.txt"), b"inner").unwrap();
    std::fs::write(source.path().join("top.txt"), b"top").unwrap();
    let volume =
        c.create_volume().body_map(|b| b.name("linked")).send().await.unwrap().into_inner();
    c.push_volume(&volume.id, source.path(), None, &Transfer::default()).await.unwrap();

    let outside = tempfile::tempdir().unwrap();
    let target = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), target.path().join("sub")).unwrap();
    let error =
        c.pull_volume(&volume.id, None, target.path(), &Transfer::default()).await.unwrap_err();
    assert!(matches!(&error, Error::Invalid(m) if m.contains("symbolic link")), "{error}");
    assert!(walk(outside.path()).is_empty(), "the pull wrote through the linked folder");

    let target = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim.txt");
    std::fs::write(&victim, b"untouched").unwrap();
    std::os::unix::fs::symlink(&victim, target.path().join("top.txt")).unwrap();
    std::os::unix::fs::symlink(&victim, target.path().join(".top.txt.vm0-partial")).unwrap();
    c.pull_volume(&volume.id, None, target.path(), &Transfer::default()).await.unwrap();
    assert_eq!(std::fs::read(&victim).unwrap(), b"untouched");
    assert!(!std::fs::symlink_metadata(target.path().join("top.txt"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(std::fs::read(target.path().join("top.txt")).unwrap(), b"top");
    assert_eq!(std::fs::read(target.path().join("sub").join("inner.txt")).unwrap(), b"inner");
}

/// createRun through a proxy that loses its first answer: the client sends it again under
/// the same Idempotency-Key, the server answers the first answer, and one run exists.
#[tokio::test]
async fn a_create_run_whose_answer_was_lost_starts_one_run() {
    let server = vm0_tests::server::TestServer::start().await;
    let direct = server.client();
    let config =
        vm0_client::types::AgentConfig(json!({"command": ["true"]}).as_object().unwrap().clone());
    direct.create_agent().body_map(|b| b.name("once").config(config)).send().await.unwrap();
    let (proxy, swallowed) =
        vm0_tests::proxy::swallowing_answer(&server.url, "POST /v1/runs ").await;
    let proxied =
        Client::builder().base_url(&proxy).token(&server.token).retries(3).build().unwrap();
    let created = proxied
        .create_run()
        .body_map(|b| b.agent(Some("once".parse().unwrap())).prompt("go"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        created.headers().get("idempotent-replayed").map(|v| v.to_str().unwrap()),
        Some("true"),
        "the retry got the first answer"
    );
    assert!(swallowed.happened());
    let runs = direct.list_runs().send().await.unwrap().into_inner().data;
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].id, created.into_inner().id);
}
