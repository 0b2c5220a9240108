//! The generated router, driven through `oneshot` over `Recorder`: valid requests reach
//! the trait with typed inputs; every constraint the spec states is enforced with a 400
//! that names the parameter, before the trait is reached; every error is in the envelope
//! and every response carries both headers. The invalid inputs are derived from the spec,
//! so a new constraint is tested as soon as it is written.

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use serde_json::{json, Value};
use tower::ServiceExt;
use xtask::spec::{self, deref, Operation};

use crate::recorder::{Recorder, TOKEN};

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
    text: String,
}

fn app() -> (Recorder, Router) {
    let recorder = Recorder::default();
    (recorder.clone(), vm0_api::router(recorder))
}

async fn send(app: &Router, request: Request<Body>) -> Reply {
    let response = app.clone().oneshot(request).await.expect("the router answers");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    Reply { status, headers, body: serde_json::from_slice(&bytes).unwrap_or(Value::Null), text }
}

/// A request for `op` with `query`, `body` (JSON) and the valid token unless `token` says
/// otherwise.
fn request(
    op: &Operation<'_>,
    query: &str,
    body: Option<&Value>,
    token: Option<&str>,
) -> Request<Body> {
    let path = op.path.replace("{id}", "x_1").replace("{versionId}", "v_1");
    let uri = if query.is_empty() { path } else { format!("{path}?{query}") };
    let mut builder = Request::builder().method(op.method.to_uppercase().as_str()).uri(uri);
    if let Some(token) = token {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    match body {
        Some(body) => builder
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .unwrap(),
        None => builder.body(Body::empty()).unwrap(),
    }
}

fn success_status(op: &Operation<'_>) -> u16 {
    op.op["responses"]
        .as_object()
        .unwrap()
        .keys()
        .find(|s| s.starts_with('2'))
        .unwrap()
        .parse()
        .unwrap()
}

fn body_example(doc: &Value, op: &Operation<'_>) -> Option<Value> {
    let body = deref(doc, op.op.get("requestBody")?)?;
    body.pointer("/content/application~1json/example").cloned()
}

fn assert_headers(reply: &Reply, what: &str) {
    let id = reply.headers.get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert!(
        regex::Regex::new("^req_[0-9a-f]{32}$").unwrap().is_match(id),
        "{what}: X-Request-Id is {id:?}"
    );
    assert_eq!(
        reply.headers.get("x-api-version").map(|v| v.to_str().unwrap()),
        Some("v1"),
        "{what}: X-API-Version"
    );
}

/// The envelope of an error reply: it must validate against the spec's `Error` schema.
fn assert_envelope(doc: &Value, reply: &Reply, what: &str) {
    let errors =
        spec::validate(doc, &json!({"$ref": "#/components/schemas/Error"}), &reply.body).unwrap();
    assert!(
        errors.is_empty(),
        "{what}: the error body {} is not the envelope: {errors:?}",
        reply.text
    );
    assert_headers(reply, what);
}

#[tokio::test]
async fn a_valid_request_reaches_each_operation() {
    let doc = spec::load().unwrap();
    for op in spec::operations(&doc) {
        let (recorder, app) = app();
        let body = body_example(&doc, &op);
        let reply = send(&app, request(&op, "", body.as_ref(), Some(TOKEN))).await;
        let what = format!("{} {} ({})", op.method, op.path, op.id());
        assert_eq!(reply.status.as_u16(), success_status(&op), "{what}: {}", reply.text);
        let calls = recorder.calls.lock().unwrap().clone();
        assert_eq!(calls.iter().map(|(id, _)| *id).collect::<Vec<_>>(), vec![op.id()], "{what}");
        assert_headers(&reply, &what);
        // What the implementation returned is rendered as the spec's schema says.
        let status = success_status(&op).to_string();
        let media = op.op.pointer(&format!("/responses/{status}/content/application~1json"));
        if let Some(media) = media {
            let errors = spec::validate(&doc, &media["schema"], &reply.body).unwrap();
            assert!(
                errors.is_empty(),
                "{what}: the response does not match its schema: {errors:?}"
            );
        }
    }
}

#[tokio::test]
async fn authentication_comes_before_anything_else() {
    let doc = spec::load().unwrap();
    let unknown = "vm0_live_ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff";
    for op in spec::operations(&doc) {
        // An invalid body too: it must not be looked at before the token.
        let garbage = json!({"bogus": true});
        let body = body_example(&doc, &op).map(|_| &garbage);
        for (token, case) in [
            (None, "no token"),
            (Some("vm0_live_abc"), "a malformed token"),
            (Some(unknown), "an unknown token"),
        ] {
            let (recorder, app) = app();
            let reply = send(&app, request(&op, "limit=0", body, token)).await;
            let what = format!("{} with {case}", op.id());
            assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{what}: {}", reply.text);
            assert_eq!(reply.body["error"]["code"], "invalid_api_key", "{what}");
            assert_eq!(reply.body["error"]["type"], "authentication_error", "{what}");
            assert_envelope(&doc, &reply, &what);
            assert!(
                recorder.calls.lock().unwrap().is_empty(),
                "{what}: reached the implementation"
            );
        }
    }
    let (_, app) = app();
    let basic = Request::get("/v1/agents")
        .header(header::AUTHORIZATION, "Basic dXNlcjpwYXNz")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&app, basic).await.status, StatusCode::UNAUTHORIZED);
}

/// One invalid input and what the router must answer.
#[derive(Debug)]
struct Violation {
    what: String,
    query: String,
    header: Option<(String, String)>,
    body: Option<Value>,
    param: String,
    code: &'static str,
}

/// Values that break one constraint of `schema` (dereferenced), each with what it breaks.
fn breaking_values(schema: &Value) -> Vec<(Value, String)> {
    let mut out = Vec::new();
    match schema.get("type").and_then(Value::as_str) {
        Some("integer") | Some("number") => {
            out.push((json!("not-a-number"), "type".into()));
            if let Some(min) = schema.get("minimum").and_then(Value::as_i64) {
                out.push((json!(min - 1), format!("minimum {min}")));
            }
            if let Some(max) = schema.get("maximum").and_then(Value::as_i64) {
                out.push((json!(max + 1), format!("maximum {max}")));
            }
        }
        Some("string") => {
            out.push((json!(12345), "type".into()));
            if let Some(values) = schema.get("enum") {
                out.push((json!("bogus"), format!("enum {values}")));
            }
            if schema.get("format").and_then(Value::as_str) == Some("date-time") {
                out.push((json!("yesterday"), "format date-time".into()));
            }
            if let Some(min) = schema.get("minLength").and_then(Value::as_u64).filter(|m| *m > 0) {
                out.push((json!("a".repeat(min as usize - 1)), format!("minLength {min}")));
            }
            if let Some(max) = schema.get("maxLength").and_then(Value::as_u64) {
                out.push((json!("a".repeat(max as usize + 1)), format!("maxLength {max}")));
            }
            if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
                let regex = regex::Regex::new(pattern).unwrap();
                let candidate = ["Bad_Name!", "../escape", "/absolute", "tab\there"]
                    .into_iter()
                    .find(|c| !regex.is_match(c))
                    .unwrap();
                out.push((json!(candidate), format!("pattern {pattern}")));
            }
        }
        Some("object") => out.push((json!("not-an-object"), "type".into())),
        Some("array") => out.push((json!("not-an-array"), "type".into())),
        Some("boolean") => out.push((json!("not-a-boolean"), "type".into())),
        _ => {}
    }
    out
}

/// A query string value for a JSON value: strings as they are, numbers as digits.
fn query_text(value: &Value) -> String {
    value.as_str().map(str::to_string).unwrap_or_else(|| value.to_string())
}

fn parameter_violations(doc: &Value, op: &Operation<'_>) -> Vec<Violation> {
    let mut out = Vec::new();
    for raw in op.parameters() {
        let param = deref(doc, raw).unwrap();
        let name = param["name"].as_str().unwrap();
        let location = param["in"].as_str().unwrap();
        if location == "path" {
            continue; // an empty segment does not route; ids are opaque strings
        }
        let schema = deref(doc, &param["schema"]).unwrap();
        for (value, breaks) in breaking_values(schema) {
            // A number is a valid query string for a string parameter: only text can break it.
            if value.is_number() && schema["type"] == "string" {
                continue;
            }
            let text = query_text(&value);
            let what = format!("{} {location} {name} = {text:?} ({breaks})", op.id());
            let (query, header) = match location {
                "query" => (format!("{name}={}", urlencode(&text)), None),
                _ => (String::new(), Some((name.to_string(), text))),
            };
            out.push(Violation {
                what,
                query,
                header,
                body: None,
                param: name.to_string(),
                code: "invalid_parameter",
            });
        }
    }
    if op.parameters().any(|p| deref(doc, p).unwrap()["in"] == "query") {
        let what = format!("{} unknown query parameter", op.id());
        out.push(Violation {
            what,
            query: "bogusParam=1".into(),
            header: None,
            body: None,
            param: "bogusParam".into(),
            code: "invalid_parameter",
        });
    }
    out
}

fn urlencode(text: &str) -> String {
    serde_urlencoded::to_string([("v", text)]).unwrap().trim_start_matches("v=").to_string()
}

/// Violations of every constraint of the body schema, found by walking it beside the
/// operation's valid example.
fn body_violations(doc: &Value, op: &Operation<'_>) -> Vec<Violation> {
    let Some(example) = body_example(doc, op) else { return Vec::new() };
    let body = deref(doc, &op.op["requestBody"]).unwrap();
    let schema = deref(doc, body.pointer("/content/application~1json/schema").unwrap()).unwrap();
    // The exactly-one-of members have their own test.
    let exclusive: Vec<&str> = schema
        .get(spec::EXACTLY_ONE_OF)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let mut out = Vec::new();
    walk_body(doc, op, schema, &example, &mut Vec::new(), &exclusive, &mut out);
    out
}

/// A JSON pointer segment list as the router names a param: `files[0].hash`.
fn param_name(path: &[String]) -> String {
    let mut out = String::new();
    for segment in path {
        if segment.parse::<usize>().is_ok() {
            out.push_str(&format!("[{segment}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(segment);
        }
    }
    out
}

fn with_value(example: &Value, path: &[String], value: Option<Value>) -> Value {
    let mut body = example.clone();
    let (last, parents) = path.split_last().unwrap();
    let mut target = &mut body;
    for segment in parents {
        target = match target {
            Value::Array(items) => &mut items[segment.parse::<usize>().unwrap()],
            other => other.get_mut(segment.as_str()).unwrap(),
        };
    }
    let object = target.as_object_mut().unwrap();
    match value {
        Some(value) => object.insert(last.clone(), value),
        None => object.shift_remove(last),
    };
    body
}

fn walk_body(
    doc: &Value,
    op: &Operation<'_>,
    schema: &Value,
    example: &Value,
    at: &mut Vec<String>,
    exclusive: &[&str],
    out: &mut Vec<Violation>,
) {
    let here = |path: &[String]| example.pointer(&format!("/{}", path.join("/"))).cloned();
    let Some(properties) = schema.get("properties").and_then(Value::as_object) else { return };
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if schema.get("additionalProperties") == Some(&Value::Bool(false)) {
        let mut path = at.clone();
        path.push("bogusField".into());
        let what = format!("{} body {} (additionalProperties)", op.id(), param_name(&path));
        out.push(Violation {
            what,
            query: String::new(),
            header: None,
            body: Some(with_value(example, &path, Some(json!(1)))),
            param: param_name(&path),
            code: "invalid_parameter",
        });
    }
    for (name, property) in properties {
        if at.is_empty() && exclusive.contains(&name.as_str()) {
            continue;
        }
        at.push(name.clone());
        let property = deref(doc, property).unwrap();
        let param = param_name(at);
        if required.contains(&name.as_str()) {
            let what = format!("{} body {param} missing", op.id());
            out.push(Violation {
                what,
                query: String::new(),
                header: None,
                body: Some(with_value(example, at, None)),
                param: param.clone(),
                code: "missing_parameter",
            });
        }
        for (value, breaks) in breaking_values(property) {
            let what = format!("{} body {param} = {value} ({breaks})", op.id());
            out.push(Violation {
                what,
                query: String::new(),
                header: None,
                body: Some(with_value(example, at, Some(value))),
                param: param.clone(),
                code: "invalid_parameter",
            });
        }
        if let Some(values) = property.get("additionalProperties").filter(|s| s.is_object()) {
            // A map of strings: a value of another type is named by its key.
            if values["type"] == "string" {
                at.push("SOME_KEY".into());
                let mut body = with_value(example, &at[..at.len() - 1], Some(json!({})));
                body = with_value(&body, at, Some(json!(1)));
                let what = format!("{} body {} (map value type)", op.id(), param_name(at));
                out.push(Violation {
                    what,
                    query: String::new(),
                    header: None,
                    body: Some(body),
                    param: param_name(at),
                    code: "invalid_parameter",
                });
                at.pop();
            }
        }
        match (property.get("type").and_then(Value::as_str), here(at)) {
            (Some("object"), Some(_)) => walk_body(doc, op, property, example, at, &[], out),
            (Some("array"), Some(Value::Array(items))) if !items.is_empty() => {
                at.push("0".into());
                let item = deref(doc, &property["items"]).unwrap();
                walk_body(doc, op, item, example, at, &[], out);
                at.pop();
            }
            _ => {}
        }
        at.pop();
    }
}

#[tokio::test]
async fn each_constraint_is_a_400_naming_its_param_without_reaching_the_trait() {
    let doc = spec::load().unwrap();
    let mut failures = Vec::new();
    let mut count = 0;
    for op in spec::operations(&doc) {
        let body = body_example(&doc, &op);
        let mut violations = parameter_violations(&doc, &op);
        violations.extend(body_violations(&doc, &op));
        for violation in violations {
            count += 1;
            let (recorder, app) = app();
            let mut request = request(
                &op,
                &violation.query,
                violation.body.as_ref().or(body.as_ref()),
                Some(TOKEN),
            );
            if let Some((name, value)) = &violation.header {
                request.headers_mut().insert(
                    axum::http::HeaderName::try_from(name.as_str()).unwrap(),
                    value.parse().unwrap(),
                );
            }
            let reply = send(&app, request).await;
            let reached = !recorder.calls.lock().unwrap().is_empty();
            let error = &reply.body["error"];
            if reply.status != StatusCode::BAD_REQUEST
                || error["param"] != violation.param
                || error["code"] != violation.code
                || reached
            {
                failures.push(format!(
                    "{}: expected 400 {} param {:?}, got {} {} (reached: {reached})",
                    violation.what, violation.code, violation.param, reply.status, reply.text
                ));
            } else {
                assert_envelope(&doc, &reply, &violation.what);
            }
        }
    }
    eprintln!("{count} violations derived from the spec");
    assert!(count > 100, "only {count} violations were derived from the spec");
    assert!(
        failures.is_empty(),
        "{} of {count} violations were not rejected as expected:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn operation<'a>(doc: &'a Value, id: &str) -> Operation<'a> {
    spec::operations(doc).into_iter().find(|o| o.id() == id).unwrap()
}

#[tokio::test]
async fn create_run_takes_exactly_one_of_agent_agent_id_session_id_checkpoint_id() {
    let doc = spec::load().unwrap();
    let op = operation(&doc, "createRun");
    let cases = [
        (json!({"prompt": "hi"}), Some(("missing_parameter", "agent"))),
        (
            json!({"prompt": "hi", "agent": "a", "agentId": "ag_1"}),
            Some(("invalid_parameter", "agentId")),
        ),
        (
            json!({"prompt": "hi", "sessionId": "sess_1", "checkpointId": "chk_1"}),
            Some(("invalid_parameter", "checkpointId")),
        ),
        (json!({"prompt": "hi", "sessionId": "sess_1"}), None),
        (json!({"prompt": "hi", "checkpointId": "chk_1"}), None),
        (json!({"prompt": "hi", "agentId": "ag_1"}), None),
    ];
    for (body, expected) in cases {
        let (recorder, app) = app();
        let reply = send(&app, request(&op, "", Some(&body), Some(TOKEN))).await;
        match expected {
            Some((code, param)) => {
                assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}: {}", reply.text);
                assert_eq!(
                    (reply.body["error"]["code"].as_str(), reply.body["error"]["param"].as_str()),
                    (Some(code), Some(param)),
                    "{body}"
                );
                assert!(
                    reply.body["error"]["message"]
                        .as_str()
                        .unwrap()
                        .contains("agent, agentId, sessionId, checkpointId"),
                    "{}",
                    reply.text
                );
                assert!(recorder.calls.lock().unwrap().is_empty());
            }
            None => {
                assert_eq!(reply.status, StatusCode::ACCEPTED, "{body}: {}", reply.text);
                // The default of agentVersion reaches the implementation.
                assert!(
                    recorder.calls.lock().unwrap()[0].1.contains("\"latest\""),
                    "{:?}",
                    recorder.calls
                );
            }
        }
    }
}

#[tokio::test]
async fn bodies_that_are_not_json_objects_are_rejected_in_the_envelope() {
    let doc = spec::load().unwrap();
    let cases: [(&str, Option<&str>, &str, Option<&str>); 5] = [
        ("not JSON", Some("application/json"), "{\"name\": ", None),
        ("no content type", None, "{\"name\": \"a\", \"config\": {}}", Some("Content-Type")),
        (
            "another content type",
            Some("text/plain"),
            "{\"name\": \"a\", \"config\": {}}",
            Some("Content-Type"),
        ),
        ("an empty body", Some("application/json"), "", None),
        ("a JSON array", Some("application/json"), "[]", None),
    ];
    for (what, content_type, body, param) in cases {
        let (recorder, app) = app();
        let mut builder =
            Request::post("/v1/agents").header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
        if let Some(content_type) = content_type {
            builder = builder.header(header::CONTENT_TYPE, content_type);
        }
        let reply = send(&app, builder.body(Body::from(body)).unwrap()).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{what}: {}", reply.text);
        assert_eq!(reply.body["error"]["param"].as_str(), param, "{what}: {}", reply.text);
        assert_envelope(&doc, &reply, what);
        assert!(recorder.calls.lock().unwrap().is_empty(), "{what}");
    }
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_in_the_envelope() {
    let doc = spec::load().unwrap();
    let (_, app) = app();
    let reply = send(&app, Request::get("/v1/nothing-here").body(Body::empty()).unwrap()).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.body["error"]["type"], "not_found_error");
    assert_envelope(&doc, &reply, "unknown route");

    let request =
        Request::builder().method(Method::PATCH).uri("/v1/agents").body(Body::empty()).unwrap();
    let reply = send(&app, request).await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED, "{}", reply.text);
    assert_envelope(&doc, &reply, "wrong method");
}

#[tokio::test]
async fn defaults_and_typed_inputs_reach_the_implementation() {
    let doc = spec::load().unwrap();
    let cases = [
        ("listAgents", "", "ListAgentsParams { limit: 20, cursor: None, name: None }"),
        (
            "listAgents",
            "limit=5&name=my-agent&cursor=abc",
            "ListAgentsParams { limit: 5, cursor: \
            Some(\"abc\"), name: Some(AgentName(\"my-agent\")) }",
        ),
        (
            "listRunLogs",
            "",
            "x_1 ListRunLogsParams { limit: 20, cursor: None, type: All, since: \
            None, until: None, order: Asc, after_sequence: None }",
        ),
        (
            "listRuns",
            "status=running&since=2024-01-15T00:00:00Z",
            "ListRunsParams { limit: 20, cursor: None, agent_id: None, status: Some(Running), \
                since: Some(2024-01-15T00:00:00Z) }",
        ),
        (
            "streamRunEvents",
            "lastEventId=7",
            "x_1 StreamRunEventsParams { last_event_id: Some(7), last_event_id_header: None }",
        ),
    ];
    for (id, query, expected) in cases {
        let (recorder, app) = app();
        let reply = send(&app, request(&operation(&doc, id), query, None, Some(TOKEN))).await;
        assert!(reply.status.is_success(), "{id}?{query}: {}", reply.text);
        assert_eq!(recorder.calls.lock().unwrap()[0].1, expected, "{id}?{query}");
    }
    let (recorder, app) = app();
    let request = Request::get("/v1/runs/run_1/events")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .header("Last-Event-ID", "3")
        .body(Body::empty())
        .unwrap();
    send(&app, request).await;
    assert_eq!(
        recorder.calls.lock().unwrap()[0].1,
        "run_1 StreamRunEventsParams { last_event_id: None, last_event_id_header: Some(3) }"
    );
}

#[tokio::test]
async fn a_repeated_query_parameter_is_rejected() {
    let doc = spec::load().unwrap();
    let (recorder, app) = app();
    let reply =
        send(&app, request(&operation(&doc, "listAgents"), "limit=5&limit=6", None, Some(TOKEN)))
            .await;
    assert_eq!(
        (reply.status, reply.body["error"]["param"].as_str()),
        (StatusCode::BAD_REQUEST, Some("limit")),
        "{}",
        reply.text
    );
    assert!(recorder.calls.lock().unwrap().is_empty());
}

#[tokio::test]
async fn events_are_written_as_server_sent_events() {
    let doc = spec::load().unwrap();
    let (_, app) = app();
    let reply =
        send(&app, request(&operation(&doc, "streamRunEvents"), "", None, Some(TOKEN))).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers[header::CONTENT_TYPE], "text/event-stream");
    // Exactly the spec's example, each event as the spec's RunEvent writes it.
    let example = operation(&doc, "streamRunEvents")
        .op
        .pointer("/responses/200/content/text~1event-stream/example")
        .unwrap()
        .clone();
    assert_eq!(reply.text, example.as_str().unwrap());
    assert_headers(&reply, "streamRunEvents");
}

#[tokio::test]
async fn every_response_gets_a_fresh_request_id() {
    let (_, app) = app();
    let mut ids = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let reply = send(&app, Request::get("/v1/agents").body(Body::empty()).unwrap()).await;
        ids.insert(reply.headers["x-request-id"].to_str().unwrap().to_string());
    }
    assert_eq!(ids.len(), 20);
}

/// `request` with an `api-version` header.
fn as_version(mut request: Request<Body>, version: &str) -> Request<Body> {
    request.headers_mut().insert("api-version", version.parse().unwrap());
    request
}

#[tokio::test]
async fn a_caller_of_an_older_version_gets_no_property_added_after_it() {
    let doc = spec::load().unwrap();
    let (_, app) = app();
    let logs = operation(&doc, "listRunLogs");
    let example =
        logs.op.pointer("/responses/200/content/application~1json/example").unwrap().clone();
    // Without the header, and for a caller of this version or a later one: every property.
    for version in [None, Some("1.1.0"), Some("1.9.3")] {
        let mut request = request(&logs, "", None, Some(TOKEN));
        if let Some(version) = version {
            request = as_version(request, version);
        }
        assert_eq!(send(&app, request).await.body, example, "{version:?}");
    }
    // A caller of 1.0.0: the same entries, without the properties of 1.1.0.
    let old = send(&app, as_version(request(&logs, "", None, Some(TOKEN)), "1.0.0")).await;
    let mut expected = example.clone();
    for entry in expected["data"].as_array_mut().unwrap() {
        entry.as_object_mut().unwrap().retain(|key, _| key != "sequence" && key != "stream");
    }
    assert_eq!(old.body, expected);
    assert!(
        old.body["data"][1]["metadata"]["stream"].is_string(),
        "a free-form property of the same name stays"
    );

    let events = operation(&doc, "streamRunEvents");
    let stream = send(&app, as_version(request(&events, "", None, Some(TOKEN)), "1.0.0")).await;
    let example = events
        .op
        .pointer("/responses/200/content/text~1event-stream/example")
        .unwrap()
        .as_str()
        .unwrap();
    assert!(example.contains(r#"{"content":"Hello from my-agent","stream":"stdout"}"#));
    assert_eq!(
        stream.text,
        example.replace(r#","stream":"stdout""#, ""),
        "the output event's data without its stream"
    );
}

#[tokio::test]
async fn an_api_version_that_is_not_one_of_v1_is_a_400_naming_it() {
    let doc = spec::load().unwrap();
    let (recorder, app) = app();
    for op in spec::operations(&doc) {
        assert!(
            op.op["responses"].get("400").is_some(),
            "{} documents the 400 it can answer",
            op.id()
        );
        for bad in
            ["2.0.0", "1.1", "v1", "latest", "1.0.0-beta", "01.0.0", "1.99999999999999999999.0"]
        {
            let body = body_example(&doc, &op);
            let reply =
                send(&app, as_version(request(&op, "", body.as_ref(), Some(TOKEN)), bad)).await;
            assert_eq!(
                reply.status,
                StatusCode::BAD_REQUEST,
                "{} with api-version {bad}: {}",
                op.id(),
                reply.text
            );
            assert_eq!(reply.body["error"]["param"], "api-version", "{}", op.id());
            assert_envelope(&doc, &reply, op.id());
        }
    }
    assert!(recorder.calls.lock().unwrap().is_empty(), "no bad version reached the trait");
}
