//! A proxy in front of each test server that checks every response against the spec, so
//! that no drift between the server and `openapi/v1.yaml` passes the end-to-end tests.
//!
//! For a request to one of the spec's operations, the response's status must be one the
//! operation documents, its content type the documented one, and its body valid against
//! the documented schema (as strict OpenAPI 3.0.3 reads it: `xtask::spec::json_schema`).
//! A `text/event-stream` is checked event by event against `RunEvent`, as it streams. A
//! request to no operation (a wrong method, an unknown path) must get the error envelope.
//! A request whose `api-version` names a release in `openapi/released/` is checked against
//! that release instead, as a client generated from it reads the response. Requests outside
//! `/v1/` (blobs, docs, health) pass unchecked.
//!
//! The proxy records what it finds; the test server panics with the list when it stops or
//! is dropped, so a test fails on any response that breaks the spec, whatever it asserts.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::response::Builder;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use futures::StreamExt as _;
use serde_json::Value;
use xtask::spec;

/// What the proxy found wrong, one line per response.
pub type Violations = Arc<Mutex<Vec<String>>>;

/// What the proxy finds wrong with a response before its body is read, or with one event
/// of a stream; recorded, after the call, as a violation.
#[derive(Debug, thiserror::Error)]
pub enum Drift {
    #[error("no {0} header")]
    MissingHeader(&'static str),
    #[error("a status {status} ({media}) for a request to no operation of the spec")]
    NoOperation { status: u16, media: String },
    #[error("{operation} does not document status {status}, only {documented:?}")]
    UndocumentedStatus { operation: String, status: u16, documented: Vec<u16> },
    #[error("{operation} documents {documented} for {status}, the server sent {media:?}")]
    MediaType { operation: String, documented: String, status: u16, media: String },
    #[error("an event that is not UTF-8")]
    EventNotUtf8,
    #[error("the event breaks RunEvent: {errors}; the event: {event}")]
    EventSchema { errors: String, event: Value },
    #[error("an event id that is not a number: {0}")]
    EventId(String),
    #[error("event data that is not JSON ({error}): {line}")]
    EventData { error: serde_json::Error, line: String },
    #[error("an SSE field the spec does not describe: {0}")]
    EventField(String),
    #[error("an event with {field} twice: {message:?}")]
    EventFieldTwice { field: String, message: String },
}

/// The largest JSON body the proxy checks; the API's are far smaller, and a larger one is
/// recorded.
const MAX_BODY: usize = 64 * 1024 * 1024;

/// One operation as the checker needs it.
struct Operation {
    id: String,
    method: Method,
    path: regex::Regex,
    /// Each documented status, with the media type and the compiled schema of its body.
    responses: HashMap<u16, Option<(String, jsonschema::Validator)>>,
}

struct Checker {
    operations: Vec<Operation>,
    error: jsonschema::Validator,
    event: jsonschema::Validator,
}

impl Checker {
    fn new(doc: &Value) -> Checker {
        let compile = |schema: &Value| {
            spec::validator(&spec::json_schema(doc, schema)).expect("the spec's schemas compile")
        };
        let operations = spec::operations(doc)
            .into_iter()
            .map(|op| {
                let segments = op.path.split('/').map(|s| {
                    if s.starts_with('{') {
                        "[^/]+".to_string()
                    } else {
                        regex::escape(s)
                    }
                });
                let pattern = segments.collect::<Vec<_>>().join("/");
                let responses = op.op["responses"].as_object().expect("responses").iter().map(
                    |(status, response)| {
                        let response = spec::deref(doc, response).expect("the response resolves");
                        let content = response
                            .get("content")
                            .and_then(Value::as_object)
                            .and_then(|c| c.iter().next());
                        let body = content.map(|(media, media_type)| {
                            (media.clone(), compile(&media_type["schema"]))
                        });
                        (status.parse::<u16>().expect("explicit statuses"), body)
                    },
                );
                Operation {
                    id: op.id().to_string(),
                    method: op.method.to_uppercase().parse().expect("a method"),
                    path: regex::Regex::new(&format!("^{pattern}$")).expect("the path compiles"),
                    responses: responses.collect(),
                }
            })
            .collect();
        // The stream's body is text whose events are each an `x-event-schema`; releases
        // before 1.1.0 gave the event's schema as the body's.
        let sse = doc
            .pointer(concat!(
                "/paths/~1v1~1runs~1{id}~1events/get/responses/200",
                "/content/text~1event-stream/schema"
            ))
            .expect("the stream has a schema");
        let sse = sse.get("x-event-schema").unwrap_or(sse);
        Checker {
            operations,
            error: compile(&serde_json::json!({"$ref": "#/components/schemas/Error"})),
            event: compile(sse),
        }
    }
}

/// The checker of the spec, and one for each release in `openapi/released/` by its
/// version: a request that names a release in `api-version` must get a response that
/// release describes, as a client generated from it reads it.
struct Checkers {
    current: Checker,
    released: HashMap<String, Checker>,
}

static CHECKERS: LazyLock<Checkers> = LazyLock::new(|| {
    let current = Checker::new(&spec::load().expect("the spec loads"));
    let folder = spec::workspace_root().join(xtask::release::RELEASED);
    let released = std::fs::read_dir(&folder)
        .expect("the releases' folder reads")
        .map(|entry| {
            let text =
                std::fs::read_to_string(entry.expect("a release").path()).expect("a release reads");
            let doc: Value = serde_json::from_str(&text).expect("a release is JSON");
            (
                doc["info"]["version"].as_str().expect("a release has a version").to_string(),
                Checker::new(&doc),
            )
        })
        .collect();
    Checkers { current, released }
});

/// The checker for a request with `headers`: the release its `api-version` names, or
/// the spec.
fn checker(headers: &HeaderMap) -> &'static Checker {
    let named = headers.get("api-version").and_then(|v| v.to_str().ok());
    named.and_then(|version| CHECKERS.released.get(version)).unwrap_or(&CHECKERS.current)
}

/// Starts the proxy for the server at `upstream`; its URL, and where it records.
pub async fn start(upstream: String) -> (String, Violations) {
    LazyLock::force(&CHECKERS);
    let violations = Violations::default();
    let state = (
        upstream,
        reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap(),
        violations.clone(),
    );
    let app = axum::Router::new().fallback(forward).with_state(Arc::new(state));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a free port");
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    (url, violations)
}

type Proxy = Arc<(String, reqwest::Client, Violations)>;

/// Panics with every violation recorded, and clears them: what a test harness calls when
/// its server stops.
pub fn assert_clean(violations: &Violations) {
    let found = std::mem::take(&mut *violations.lock().unwrap());
    assert!(found.is_empty(), "{} responses broke the spec:\n{}", found.len(), found.join("\n"));
}

async fn forward(State(proxy): State<Proxy>, request: Request) -> Response {
    let (upstream, http, violations) = &*proxy;
    let (parts, body) = request.into_parts();
    let target = format!("{upstream}{}", parts.uri.path_and_query().map_or("/", |p| p.as_str()));
    let mut headers = parts.headers.clone();
    headers.remove(axum::http::header::HOST);
    let sent = http
        .request(parts.method.clone(), target)
        .headers(headers)
        .body(reqwest::Body::wrap_stream(body.into_data_stream()))
        .send()
        .await;
    let reply = match sent {
        Ok(reply) => reply,
        Err(error) => return bad_gateway(error),
    };
    let status = reply.status();
    let mut response = Response::builder().status(status);
    for (name, value) in reply.headers() {
        response = response.header(name, value);
    }
    let call = format!("{} {} → {}", parts.method, parts.uri.path(), status.as_u16());
    let path = parts.uri.path().to_string();
    if !path.starts_with("/v1/") {
        return response.body(Body::from_stream(reply.bytes_stream())).unwrap();
    }
    let checker = checker(&parts.headers);
    let expected = expectation(checker, &parts.method, &path, status.as_u16(), reply.headers());
    let record = Record { call, violations: violations.clone() };
    match expected {
        Err(problem) => {
            record.problem(problem);
            response.body(Body::from_stream(reply.bytes_stream())).unwrap()
        }
        Ok(None) => no_body(reply, response, &record).await,
        Ok(Some((media, _))) if media == "text/event-stream" => {
            event_stream(reply, response, checker, record)
        }
        Ok(Some((_, validator))) => json_body(reply, response, validator, &record).await,
    }
}

/// Where the problems of one response go: the proxy's violations, each after its call.
struct Record {
    call: String,
    violations: Violations,
}

impl Record {
    fn problem(&self, problem: impl std::fmt::Display) {
        self.violations.lock().unwrap().push(format!("{}: {problem}", self.call));
    }
}

/// The proxy's answer when the server's cannot be had.
fn bad_gateway(error: reqwest::Error) -> Response {
    Response::builder()
        .status(StatusCode::BAD_GATEWAY)
        .body(Body::from(format!("the test proxy: {error}")))
        .unwrap()
}

/// The whole body of `reply`; when it cannot be read, that is recorded, and the proxy's
/// answer is the error.
async fn whole_body(reply: reqwest::Response, record: &Record) -> Result<Bytes, Response> {
    reply.bytes().await.map_err(|error| {
        record.problem(format!("the body could not be read: {error}"));
        bad_gateway(error)
    })
}

/// A response the spec documents without a body: it must have none.
async fn no_body(reply: reqwest::Response, response: Builder, record: &Record) -> Response {
    let body = match whole_body(reply, record).await {
        Ok(body) => body,
        Err(answer) => return answer,
    };
    if !body.is_empty() {
        record.problem(format!(
            "a body where the spec documents none: {}",
            String::from_utf8_lossy(&body)
        ));
    }
    response.body(Body::from(body)).unwrap()
}

/// A stream of events, each checked against `RunEvent` once it is whole, so that a
/// message cut across chunks (or a character across two) reads as the client will read
/// it; a stream that breaks, or ends inside an event, is recorded too.
fn event_stream(
    reply: reqwest::Response,
    response: Builder,
    checker: &'static Checker,
    record: Record,
) -> Response {
    let state = (reply.bytes_stream(), Vec::new(), record);
    let stream =
        futures::stream::unfold(state, move |(mut upstream, mut pending, record)| async move {
            match upstream.next().await {
                Some(Ok(bytes)) => {
                    pending.extend_from_slice(&bytes);
                    while let Some(end) = event_end(&pending) {
                        let message: Vec<u8> = pending.drain(..end).collect();
                        let checked = String::from_utf8(message)
                            .map_err(|_| Drift::EventNotUtf8)
                            .and_then(|m| check_event(checker, &m));
                        if let Err(problem) = checked {
                            record.problem(problem);
                        }
                    }
                    Some((Ok(bytes), (upstream, pending, record)))
                }
                Some(Err(error)) => {
                    record.problem(format!("the stream broke: {error}"));
                    Some((Err(error), (upstream, pending, record)))
                }
                None => {
                    if !pending.iter().all(u8::is_ascii_whitespace) {
                        record.problem(format!(
                            "the stream ended inside an event: {:?}",
                            String::from_utf8_lossy(&pending)
                        ));
                    }
                    None
                }
            }
        });
    // Re-streamed, so without a length: the client then reads to the stream's end, which
    // comes after its last event is checked.
    let mut response = response.body(Body::from_stream(stream)).unwrap();
    response.headers_mut().remove(axum::http::header::CONTENT_LENGTH);
    response
}

/// A JSON body, checked against `validator`.
async fn json_body(
    reply: reqwest::Response,
    response: Builder,
    validator: &jsonschema::Validator,
    record: &Record,
) -> Response {
    let body = match whole_body(reply, record).await {
        Ok(body) => body,
        Err(answer) => return answer,
    };
    if body.len() > MAX_BODY {
        record.problem(format!("a body of {} bytes, more than the proxy checks", body.len()));
        return response.body(Body::from(body)).unwrap();
    }
    match serde_json::from_slice::<Value>(&body) {
        Err(error) => record.problem(format!(
            "a body that is not JSON ({error}): {}",
            String::from_utf8_lossy(&body)
        )),
        Ok(value) => {
            let errors: Vec<String> = validator
                .iter_errors(&value)
                .map(|e| format!("{} at {}", e, e.instance_path()))
                .collect();
            if !errors.is_empty() {
                record.problem(format!(
                    "the body breaks the schema: {}; the body: {value}",
                    errors.join("; ")
                ));
            }
        }
    }
    response.body(Body::from(body)).unwrap()
}

/// The media type and schema the spec gives this response, `None` for no body; or what
/// is wrong with it before its body is read.
fn expectation(
    checker: &'static Checker,
    method: &Method,
    path: &str,
    status: u16,
    headers: &HeaderMap,
) -> Result<Option<(String, &'static jsonschema::Validator)>, Drift> {
    let media = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    for name in ["x-request-id", "x-api-version"] {
        if !headers.contains_key(name) {
            return Err(Drift::MissingHeader(name));
        }
    }
    let Some(operation) =
        checker.operations.iter().find(|o| o.method == *method && o.path.is_match(path))
    else {
        // No operation: a wrong method or an unknown path, answered in the envelope.
        return match status {
            404 | 405 if media.starts_with("application/json") => {
                Ok(Some(("application/json".into(), &checker.error)))
            }
            _ => Err(Drift::NoOperation { status, media }),
        };
    };
    let Some(documented) = operation.responses.get(&status) else {
        let mut documented: Vec<u16> = operation.responses.keys().copied().collect();
        documented.sort();
        let operation = operation.id.clone();
        return Err(Drift::UndocumentedStatus { operation, status, documented });
    };
    match documented {
        None => Ok(None),
        Some((documented, _)) if !media.starts_with(documented.as_str()) => Err(Drift::MediaType {
            operation: operation.id.clone(),
            documented: documented.clone(),
            status,
            media,
        }),
        Some((documented, validator)) => Ok(Some((documented.clone(), validator))),
    }
}

/// Where the first whole event of `pending` ends, after its blank line (`\n\n`, `\r\n\r\n`
/// or `\r\r`, as the SSE format allows).
fn event_end(pending: &[u8]) -> Option<usize> {
    let ends = [&b"\n\n"[..], b"\r\n\r\n", b"\r\r"];
    ends.iter()
        .filter_map(|end| {
            pending.windows(end.len()).position(|w| w == *end).map(|at| at + end.len())
        })
        .min()
}

/// One SSE message against `RunEvent`. Comment lines (`:`) are skipped.
fn check_event(checker: &Checker, message: &str) -> Result<(), Drift> {
    let Some(event) = event_object(message)? else { return Ok(()) };
    let errors: Vec<String> = checker
        .event
        .iter_errors(&event)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    match errors.is_empty() {
        true => Ok(()),
        false => Err(Drift::EventSchema { errors: errors.join("; "), event }),
    }
}

/// One SSE message as the spec's `RunEvent` object: its `id:` (a number), `event:` and
/// `data:` (JSON) lines; `None` for a message of comments only.
pub fn event_object(message: &str) -> Result<Option<Value>, Drift> {
    let mut event = serde_json::Map::new();
    for line in message.lines().filter(|l| !l.is_empty() && !l.starts_with(':')) {
        let (field, value) = line
            .split_once(':')
            .map(|(f, v)| (f, v.strip_prefix(' ').unwrap_or(v)))
            .unwrap_or((line, ""));
        let value = match field {
            "id" => value
                .parse::<u64>()
                .map(Value::from)
                .map_err(|_| Drift::EventId(line.to_string()))?,
            "data" => serde_json::from_str(value)
                .map_err(|error| Drift::EventData { error, line: line.to_string() })?,
            "event" => Value::from(value),
            _ => return Err(Drift::EventField(line.to_string())),
        };
        // Clients join repeated `data:` lines with a line break, which is no longer one
        // line of JSON; the spec's events have each field once.
        if event.insert(field.to_string(), value).is_some() {
            let (field, message) = (field.to_string(), message.to_string());
            return Err(Drift::EventFieldTwice { field, message });
        }
    }
    Ok((!event.is_empty()).then_some(Value::Object(event)))
}
