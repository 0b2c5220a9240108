//! The proxy that checks the end-to-end tests' responses against the spec finds each kind
//! of drift: here in front of a fake server that answers wrongly on purpose.

use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::json;
use vm0_tests::conformance;
use vm0_tests::wait::{within, DEADLINE};

fn headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("x-request-id", "req_1".parse().unwrap());
    headers.insert("x-api-version", "v1".parse().unwrap());
    headers
}

/// A server that answers wrongly on purpose, but for `vol_1` and for `run_3`'s logs to a
/// caller of 1.1.0.
fn drifting_server() -> axum::Router {
    let volume = json!({
        "id": "vol_1", "name": "notes", "currentVersionId": null, "size": 0, "fileCount": 0,
        "createdAt": "2024-01-15T10:00:00Z", "updatedAt": "2024-01-15T10:00:00Z",
        "currentVersion": null,
    });
    let events = |body: &'static str| {
        get(move || async move {
            (headers(), [("content-type", "text/event-stream")], body).into_response()
        })
    };
    let teapot = || async {
        (axum::http::StatusCode::IM_A_TEAPOT, headers(), axum::Json(json!({}))).into_response()
    };
    let log_entry = json!({
        "sequence": 1, "timestamp": "2024-01-15T10:00:00Z", "type": "agent", "level": "info",
        "message": "hi", "metadata": {}, "stream": "stdout",
    });
    let logs = json!({"data": [log_entry], "pagination": {"hasMore": false, "nextCursor": null}});
    let not_allowed =
        || async { (axum::http::StatusCode::METHOD_NOT_ALLOWED, headers(), "no").into_response() };
    axum::Router::new()
        // Right: a volume without a version, `currentVersion` null.
        .route(
            "/v1/volumes/vol_1",
            get(move || async move { (headers(), axum::Json(volume)).into_response() }),
        )
        // A field of the wrong type.
        .route(
            "/v1/volumes/vol_2",
            get(|| async { (headers(), axum::Json(json!({"id": 2}))).into_response() }),
        )
        // A status getAgent does not document.
        .route("/v1/agents/ag_1", get(teapot))
        // No X-API-Version.
        .route(
            "/v1/tokens/tok_1",
            get(|| async { ([("x-request-id", "req_1")], axum::Json(json!({}))).into_response() }),
        )
        // An event whose data is not its event's shape.
        .route(
            "/v1/runs/run_1/events",
            events(concat!(
                "id: 1\nevent: status\ndata: {\"status\":\"running\"}\n\n",
                "id: 2\nevent: complete\ndata: {\"content\":\"x\"}\n\n",
            )),
        )
        // A bad event after CRLF line ends, an event with two data lines, and a stream
        // that ends inside an event.
        .route(
            "/v1/runs/run_2/events",
            events(concat!(
                "id: 1\r\nevent: status\r\ndata: {\"status\":\"nope\"}\r\n\r\n",
                "id: 2\nevent: output\ndata: {\"content\":\"a\"}\ndata: {\"content\":\"b\"}\n\n",
                "id: 3\nevent: complete",
            )),
        )
        // A log entry with the properties of 1.1.0: right for the spec, wrong for a
        // request that names the release 1.0.0.
        .route(
            "/v1/runs/run_3/logs",
            get(move || async move { (headers(), axum::Json(logs)).into_response() }),
        )
        // A method the path does not have, answered outside the envelope.
        .route("/v1/runs", axum::routing::delete(not_allowed))
}

#[tokio::test]
async fn each_kind_of_drift_is_recorded() {
    let fake = drifting_server();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, fake).await.ok() });
    let (url, violations) = conformance::start(upstream).await;

    let http = reqwest::Client::new();
    let calls = async {
        for path in [
            "/v1/volumes/vol_1",
            "/v1/volumes/vol_2",
            "/v1/agents/ag_1",
            "/v1/tokens/tok_1",
            "/v1/runs/run_1/events",
            "/v1/runs/run_2/events",
        ] {
            http.get(format!("{url}{path}")).send().await.unwrap().bytes().await.unwrap();
        }
        http.delete(format!("{url}/v1/runs")).send().await.unwrap().bytes().await.unwrap();
        http.get(format!("{url}/v1/runs/run_3/logs")).send().await.unwrap().bytes().await.unwrap();
        http.get(format!("{url}/v1/runs/run_3/logs"))
            .header("api-version", "1.1.0")
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        http.get(format!("{url}/v1/runs/run_3/logs"))
            .header("api-version", "1.0.0")
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
    };
    within(DEADLINE, "every call through the proxy", calls).await;
    let found = violations.lock().unwrap().clone();
    let expect = [
        "GET /v1/volumes/vol_2 → 200: the body breaks the schema",
        "GET /v1/agents/ag_1 → 418: getAgent does not document status 418",
        "GET /v1/tokens/tok_1 → 200: no x-api-version header",
        "GET /v1/runs/run_1/events → 200: the event breaks RunEvent",
        "GET /v1/runs/run_2/events → 200: the event breaks RunEvent",
        "GET /v1/runs/run_2/events → 200: an event with data twice",
        "GET /v1/runs/run_2/events → 200: the stream ended inside an event",
        "DELETE /v1/runs → 405: a status 405",
        concat!(
            "GET /v1/runs/run_3/logs → 200: the body breaks the schema: ",
            "Additional properties are not allowed ('sequence', 'stream' were unexpected)"
        ),
    ];
    for line in expect {
        assert!(
            found.iter().any(|f| f.starts_with(line)),
            "{line:?} is not among:\n{}",
            found.join("\n")
        );
    }
    assert_eq!(
        found.len(),
        expect.len(),
        "only those, and nothing for the right answers (vol_1, run_3 to 1.1.0):\n{}",
        found.join("\n")
    );
}
