//! Hostile requests: bodies too large, or of millions of tiny values, are refused in the
//! error envelope before they are built, and a legal file list of 10,000 entries of the
//! longest paths still fits; too many headers get the envelope too.

use serde_json::{json, Value};
use vm0_tests::server::TestServer;

/// POSTs `body` as JSON to `path`, straight to the server: the checking proxy would read
/// these hostile bodies itself. The status and the JSON answer.
async fn post(server: &TestServer, path: &str, body: Vec<u8>) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}{path}", server.direct_url))
        .bearer_auth(&server.token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn message(answer: &Value) -> &str {
    answer["error"]["message"].as_str().unwrap_or_else(|| panic!("not the envelope: {answer}"))
}

/// `[0,0,...]` of `bytes` bytes: half a value a byte.
fn tiny_values(bytes: usize) -> String {
    let mut text = String::with_capacity(bytes + 2);
    text.push('[');
    while text.len() < bytes {
        text.push_str("0,");
    }
    text.push('0');
    text.push(']');
    text
}

#[tokio::test]
async fn bodies_past_the_limits_are_refused_in_the_envelope() {
    let server = TestServer::start().await;
    // 2 MiB of configuration: past the default 1 MiB.
    let large = json!({
        "name": "large",
        "config": {"command": ["true"], "files": {"a": "x".repeat(2 << 20)}}
    });
    let (status, answer) = post(&server, "/v1/agents", serde_json::to_vec(&large).unwrap()).await;
    assert_eq!(status, 400, "{answer}");
    assert!(message(&answer).contains("limit of 1048576 bytes"), "{answer}");

    // 14 MB of tiny values, where a file list may be 16 MB: counted, not built.
    let volume = server
        .client()
        .create_volume()
        .body_map(|b| b.name("v"))
        .send()
        .await
        .unwrap()
        .into_inner();
    let values = format!(r#"{{"files": {}}}"#, tiny_values(14_000_000));
    let (status, answer) =
        post(&server, &format!("/v1/volumes/{}/upload", volume.id), values.into_bytes()).await;
    assert_eq!(status, 400, "{answer}");
    assert!(message(&answer).contains("JSON values"), "{answer}");
    // And as the same values under an agent's configuration, past the byte limit first.
    let (status, answer) = post(
        &server,
        "/v1/agents",
        format!(r#"{{"name": "n", "config": {{"x": {}}}}}"#, tiny_values(900_000)).into_bytes(),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert!(message(&answer).contains("JSON values"), "{answer}");
}

#[tokio::test]
async fn the_largest_legal_file_list_fits() {
    let server = TestServer::start().await;
    let volume = server
        .client()
        .create_volume()
        .body_map(|b| b.name("big"))
        .send()
        .await
        .unwrap()
        .into_inner();
    // 10,000 files, each with a path of 1,024 bytes (in segments of at most 255): about
    // 11 MB.
    let segment = "p".repeat(254);
    let file = |i| {
        let path = format!("{i:05}/{segment}/{segment}/{segment}/{}", "q".repeat(253));
        json!({"path": path, "size": 1, "hash": "0".repeat(64)})
    };
    let files: Vec<Value> = (0..10_000).map(file).collect();
    assert_eq!(files[0]["path"].as_str().unwrap().len(), 1024);
    let body = serde_json::to_vec(&json!({"files": files})).unwrap();
    assert!(body.len() > 10_000_000);
    let (status, answer) = post(&server, &format!("/v1/volumes/{}/upload", volume.id), body).await;
    assert_eq!(status, 200, "{}", message(&answer));
    assert_eq!(answer["files"].as_array().map(Vec::len), Some(10_000));
}

#[tokio::test]
async fn the_body_limit_is_the_servers_to_set() {
    let small = |config| vm0_server::Config { max_body_bytes: 4096, ..config };
    let server = TestServer::start_with(tempfile::tempdir().unwrap(), small).await;
    let agent =
        json!({"name": "a", "config": {"command": ["true"], "files": {"a": "x".repeat(5000)}}});
    let (status, answer) = post(&server, "/v1/agents", serde_json::to_vec(&agent).unwrap()).await;
    assert_eq!(status, 400, "{answer}");
    assert!(message(&answer).contains("limit of 4096 bytes"), "{answer}");
    let agent = json!({"name": "a", "config": {"command": ["true"]}});
    assert_eq!(post(&server, "/v1/agents", serde_json::to_vec(&agent).unwrap()).await.0, 201);
}

#[tokio::test]
async fn too_many_headers_get_the_envelope_and_a_request_id() {
    let server = TestServer::start().await;
    let mut request = reqwest::Client::new()
        .get(format!("{}/v1/agents", server.direct_url))
        .bearer_auth(&server.token);
    for i in 0..150 {
        request = request.header(format!("x-filler-{i}"), "1");
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 431);
    assert!(response.headers()["x-request-id"].to_str().unwrap().starts_with("req_"));
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["error"]["type"], "invalid_request_error", "{answer}");
    assert!(message(&answer).contains("at most 100"), "{answer}");
}
