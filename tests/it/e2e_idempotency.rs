//! `Idempotency-Key` against a fresh server: a retry answers the first answer, byte for
//! byte, and takes effect once; another request under the key is 422; a key in use is
//! 409 with `Retry-After`; a bad key is 400 naming the header.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use vm0_tests::server::{http_client, TestServer};

const KEY: &str = "Idempotency-Key";

/// One request with `key`, and its status, `Idempotent-Replayed` header and body.
async fn send(
    http: &reqwest::Client,
    method: Method,
    url: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, bool, Vec<u8>) {
    let mut request = http.request(method, url);
    if let Some(key) = key {
        request = request.header(KEY, key);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let replayed = response.headers().get("idempotent-replayed").is_some_and(|v| v == "true");
    (response.status(), replayed, response.bytes().await.unwrap().to_vec())
}

fn json_of(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap()
}

#[tokio::test]
async fn a_retried_create_answers_its_first_answer_and_creates_once() {
    let server = TestServer::start().await;
    let http = http_client(&server.token);
    let agents = format!("{}/v1/agents", server.url);
    let agent = json!({"name": "once", "config": {"command": ["true"]}});
    let post = |key: Option<&'static str>, body: Value| {
        send(&http, Method::POST, &agents, key, Some(body))
    };

    let (status, replayed, first) = post(Some("k-1"), agent.clone()).await;
    assert_eq!((status, replayed), (StatusCode::CREATED, false));
    let (status, replayed, again) = post(Some("k-1"), agent.clone()).await;
    assert_eq!((status, replayed), (StatusCode::CREATED, true));
    assert_eq!(first, again, "the first answer, byte for byte");
    // The draft's quoted form is the same key.
    let (status, replayed, quoted) = post(Some("\"k-1\""), agent.clone()).await;
    assert_eq!((status, replayed, &quoted), (StatusCode::CREATED, true, &first));

    let other = json!({"name": "other", "config": {"command": ["true"]}});
    let (status, _, other) = post(Some("k-1"), other).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let error = &json_of(&other)["error"];
    assert_eq!(error["code"], "idempotency_key_reused", "{error}");
    assert_eq!((&error["type"], &error["param"]), (&json!("invalid_request_error"), &json!(KEY)));

    // A client of 1.1.0 knows nothing of keys: its key is not read, and its request runs.
    let older = http.post(&agents).header(KEY, "k-1").header("api-version", "1.1.0");
    let older: Value = older.json(&agent).send().await.unwrap().json().await.unwrap();
    assert_eq!(older["error"]["code"], "resource_already_exists", "{older}");

    for bad in ["k".repeat(300), "tab\tkey".to_string(), String::new()] {
        let (status, _, refused) =
            send(&http, Method::POST, &agents, Some(&bad), Some(agent.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad:?}");
        assert_eq!(json_of(&refused)["error"]["param"], KEY);
    }

    // A request refused for its input keeps nothing: the key is free for the right one.
    let (status, _, _) = post(Some("k-2"), json!({"name": "Not A Name"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, replayed, _) =
        post(Some("k-2"), json!({"name": "second", "config": {"command": ["true"]}})).await;
    assert_eq!((status, replayed), (StatusCode::CREATED, false));

    let (_, _, list) = send(&http, Method::GET, &agents, None, None).await;
    let names: Vec<Value> = json_of(&list)["data"].as_array().unwrap().clone();
    assert_eq!(names.len(), 2, "{names:?}");

    // A delete replayed answers 204 again rather than 404.
    let id = json_of(&first)["id"].as_str().unwrap().to_string();
    let agent_url = format!("{agents}/{id}");
    for replay in [false, true] {
        let (status, replayed, _) =
            send(&http, Method::DELETE, &agent_url, Some("d-1"), None).await;
        assert_eq!((status, replayed), (StatusCode::NO_CONTENT, replay));
    }
}

/// Ten createRun requests with one key at once make one run; each answer is that run or
/// 409 `idempotency_key_in_use` with `Retry-After`.
#[tokio::test]
async fn one_key_sent_ten_times_at_once_makes_one_run() {
    let server = TestServer::start().await;
    let http = http_client(&server.token);
    let agent = json!({"name": "slow", "config": {"command": ["sh", "-c", "sleep 1"]}});
    let made = http.post(format!("{}/v1/agents", server.url)).json(&agent).send().await.unwrap();
    assert_eq!(made.status(), StatusCode::CREATED);
    let runs = format!("{}/v1/runs", server.url);
    let body = json!({"agent": "slow", "prompt": "go"});
    let answers = futures::future::join_all((0..10).map(|_| {
        let request = http.post(&runs).header(KEY, "run-once").json(&body);
        async move {
            let response = request.send().await.unwrap();
            let retry_after = response.headers().get("retry-after").cloned();
            (response.status(), retry_after, response.json::<Value>().await.unwrap())
        }
    }))
    .await;
    let mut ids = std::collections::BTreeSet::new();
    for (status, retry_after, body) in &answers {
        match *status {
            StatusCode::ACCEPTED => {
                ids.insert(body["id"].as_str().unwrap().to_string());
            }
            StatusCode::CONFLICT => {
                assert_eq!(body["error"]["code"], "idempotency_key_in_use", "{body}");
                assert!(retry_after.is_some(), "{body}");
            }
            other => panic!("{other}: {body}"),
        }
    }
    assert_eq!(ids.len(), 1, "{answers:?}");
    let (_, _, list) = send(&http, Method::GET, &runs, None, None).await;
    assert_eq!(json_of(&list)["data"].as_array().unwrap().len(), 1, "one run exists");
}
