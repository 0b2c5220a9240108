//! `Idempotency-Key`: a POST or DELETE that a client sends again, after an answer it lost,
//! takes effect once (Stripe's API and the IETF httpapi working group's draft are the
//! anchors).
//!
//! The generated handler of such an operation reads and checks its input, then asks the
//! implementation's [`KeyStore`] to [`begin`](KeyStore::begin) the key with the request's
//! fingerprint (its method, path, `api-version` and body). A fresh key runs the operation
//! in a task of its own, which a client that goes away does not cancel, and stores its
//! answer; a key seen before answers what the store holds: the first answer again
//! (`Idempotent-Replayed: true`), 422 when the key was used for another request, 409 with
//! `Retry-After` while its first request is still executing. An input refused before the
//! operation began keeps nothing; neither does a 5xx answer, nor one larger than
//! [`MAX_STORED_BODY`]: a retry then runs afresh.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use vm0_types::{ErrorCode, ErrorType};

use crate::error::ApiError;
use crate::Vm0Api;

/// The request header.
pub const HEADER: &str = "Idempotency-Key";
/// The response header of a replayed answer.
pub const REPLAYED: &str = "Idempotent-Replayed";
/// The longest key, in characters, without the quotes of the draft's quoted form.
const MAX_KEY: usize = 255;
/// The largest answer body kept for a replay.
pub const MAX_STORED_BODY: usize = 1 << 20;
/// The seconds a caller is told to wait while the key's first request executes.
const IN_USE_RETRY_AFTER: u64 = 1;
/// The response headers kept with an answer, besides its status and body.
const KEPT_HEADERS: [&str; 3] = ["content-type", "location", "etag"];

/// A future of the store, boxed so that the store can be a trait object.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where an implementation keeps keys and their answers, per user.
pub trait KeyStore: Send + Sync {
    /// Takes `key` for a request of `fingerprint`, or says what holds it.
    fn begin<'a>(
        &'a self,
        user: &'a str,
        key: &'a str,
        fingerprint: &'a str,
    ) -> StoreFuture<'a, Result<Begun, ApiError>>;
    /// Keeps `answer` as the answer of the key's request of `fingerprint`. It may return
    /// before the answer is durable, if until then [`KeyStore::begin`] answers the key
    /// as held (in use, or with this answer): the request is answered when it returns.
    fn finish<'a>(
        &'a self,
        user: &'a str,
        key: &'a str,
        fingerprint: &'a str,
        answer: StoredAnswer,
    ) -> StoreFuture<'a, Result<(), ApiError>>;
    /// Lets go of a key whose request keeps no answer, for a retry to run afresh.
    fn release<'a>(
        &'a self,
        user: &'a str,
        key: &'a str,
        fingerprint: &'a str,
    ) -> StoreFuture<'a, Result<(), ApiError>>;
}

/// What holds a key when a request begins with it.
#[derive(Debug, Clone, PartialEq)]
pub enum Begun {
    /// Nothing: this request has taken it.
    Fresh,
    /// A request of the same fingerprint, still executing.
    InUse,
    /// A request of the same fingerprint, which answered this.
    Answered(StoredAnswer),
    /// A request of another fingerprint.
    Reused,
}

/// An answer as a key keeps it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredAnswer {
    pub status: u16,
    /// The headers of [`KEPT_HEADERS`] it had.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// The version of the spec that added the header: callers of an earlier `api-version` are
/// answered as that version says, which reads no key.
pub(crate) fn since() -> crate::versions::Version {
    crate::versions::Version::parse("1.2.0").expect("a version")
}

/// The key of a request, checked: 1 to 255 printable ASCII characters, bare or in the
/// draft's quoted form (`"..."`, quotes taken off). `None` without the header.
pub fn key_of(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(HEADER) else { return Ok(None) };
    let bad = || {
        ApiError::invalid_parameter(
            HEADER,
            format!(
                "{HEADER} must be 1 to {MAX_KEY} printable ASCII characters (a UUID v4 is a \
                 good one), bare or in double quotes"
            ),
        )
    };
    let text = value.to_str().map_err(|_| bad())?;
    let key = match text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        Some(quoted) if !quoted.contains('"') => quoted,
        _ => text,
    };
    let printable = key.bytes().all(|b| (0x20..=0x7e).contains(&b));
    if key.is_empty() || key.len() > MAX_KEY || !printable {
        return Err(bad());
    }
    Ok(Some(key.to_string()))
}

/// The fingerprint of a request: its method, path and query, `api-version`, body, and
/// `If-Match` if it has one (a write retried with a fresh tag after a 412 is another
/// request, not a replay of the 412).
pub fn fingerprint<B: serde::Serialize>(
    method: &Method,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    body: &B,
) -> String {
    let mut hash = Sha256::new();
    let version = headers.get(crate::versions::HEADER).map(HeaderValue::as_bytes);
    for part in [
        method.as_str().as_bytes(),
        uri.path_and_query().map_or(uri.path(), |p| p.as_str()).as_bytes(),
        version.unwrap_or_default(),
        &serde_json::to_vec(body).unwrap_or_default(),
    ] {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part);
    }
    // Only when sent, so that the fingerprints of requests without one stay as they were.
    if let Some(condition) = headers.get(crate::IF_MATCH) {
        hash.update(b"If-Match");
        hash.update((condition.len() as u64).to_be_bytes());
        hash.update(condition.as_bytes());
    }
    format!("{:x}", hash.finalize())
}

/// A request that holds its key until its answer is kept.
pub struct Once {
    user: String,
    key: String,
    fingerprint: String,
}

/// What a request with a key does: run, or answer at once.
pub enum Start {
    Run(Option<Once>),
    Answer(Response),
}

/// Begins the request of `fingerprint` under its key, if it sends one and the
/// implementation keeps keys for the user.
pub async fn start(
    store: Option<&dyn KeyStore>,
    user: Option<String>,
    key: Option<String>,
    fingerprint: String,
) -> Result<Start, ApiError> {
    let (Some(store), Some(user), Some(key)) = (store, user, key) else {
        return Ok(Start::Run(None));
    };
    Ok(match store.begin(&user, &key, &fingerprint).await? {
        Begun::Fresh => Start::Run(Some(Once { user, key, fingerprint })),
        Begun::Answered(answer) => Start::Answer(replay(answer)),
        Begun::InUse => Start::Answer(in_use()),
        Begun::Reused => Start::Answer(
            ApiError {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                code: ErrorCode::IdempotencyKeyReused,
                ..ApiError::invalid_parameter(
                    HEADER,
                    "This Idempotency-Key was used for another request (another method, \
                     path, api-version or body) within its time: use a new key for a new \
                     request",
                )
            }
            .into_response(),
        ),
    })
}

impl Once {
    /// Keeps `answer` for the key (a 5xx, a 429, or one too large, lets the key go
    /// instead), and answers it.
    pub async fn finish(self, store: Option<&dyn KeyStore>, answer: Response) -> Response {
        let Some(store) = store else { return answer };
        let (parts, body) = answer.into_parts();
        let (user, key, fingerprint) = (&self.user, &self.key, &self.fingerprint);
        // The handlers' answers are whole in memory already (JSON, or nothing).
        let body = match axum::body::to_bytes(body, usize::MAX).await {
            Ok(bytes) => bytes,
            Err(error) => {
                store.release(user, key, fingerprint).await.ok();
                return ApiError::internal(format!("the answer could not be read: {error}"))
                    .into_response();
            }
        };
        // A 429 did nothing: a retry once the caller has waited must run afresh.
        let keep = body.len() <= MAX_STORED_BODY
            && !parts.status.is_server_error()
            && parts.status != StatusCode::TOO_MANY_REQUESTS;
        let kept = if keep {
            let headers = KEPT_HEADERS
                .iter()
                .filter_map(|name| {
                    let value = parts.headers.get(*name)?.to_str().ok()?;
                    Some((name.to_string(), value.to_string()))
                })
                .collect();
            let answer =
                StoredAnswer { status: parts.status.as_u16(), headers, body: body.to_vec() };
            store.finish(user, key, fingerprint, answer).await
        } else {
            store.release(user, key, fingerprint).await
        };
        if let Err(error) = kept {
            tracing::error!(%error, "an Idempotency-Key's answer could not be kept");
        }
        Response::from_parts(parts, Body::from(body))
    }
}

/// Runs `answer`, the operation of a request and its reply, and keeps what it answers
/// under the request's key, if it has one: then in a task of its own, which a client that
/// goes away does not cancel, so that its retry finds the answer (or the key in use until
/// it is kept) rather than run the operation a second time.
pub async fn run<A, F>(api: Arc<A>, once: Option<Once>, answer: F) -> Result<Response, ApiError>
where
    A: Vm0Api,
    F: Future<Output = Result<Response, ApiError>> + Send + 'static,
{
    let Some(once) = once else { return answer.await };
    let task = tokio::spawn(async move {
        let answer = answer.await.unwrap_or_else(IntoResponse::into_response);
        once.finish(api.keys(), answer).await
    });
    task.await.map_err(|error| ApiError::internal(format!("the operation's task failed: {error}")))
}

/// The kept `answer`, said to be a replay.
fn replay(answer: StoredAnswer) -> Response {
    let mut response = Response::new(Body::from(answer.body));
    *response.status_mut() = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
    for (name, value) in answer.headers {
        if let (Ok(name), Ok(value)) =
            (name.parse::<axum::http::HeaderName>(), HeaderValue::from_str(&value))
        {
            response.headers_mut().insert(name, value);
        }
    }
    response.headers_mut().insert(REPLAYED, HeaderValue::from_static("true"));
    response
}

/// 409 `idempotency_key_in_use`, with `Retry-After`.
fn in_use() -> Response {
    let error = ApiError {
        status: StatusCode::CONFLICT,
        kind: ErrorType::ConflictError,
        code: ErrorCode::IdempotencyKeyInUse,
        ..ApiError::invalid_parameter(
            HEADER,
            format!(
                "A request with this Idempotency-Key is still executing: try again in \
                 {IN_USE_RETRY_AFTER} s"
            ),
        )
    };
    ApiError { retry_after: Some(IN_USE_RETRY_AFTER), ..error }.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(value: &str) -> Result<Option<String>, Option<String>> {
        let mut headers = HeaderMap::new();
        headers.insert(HEADER, HeaderValue::from_str(value).unwrap());
        key_of(&headers).map_err(|e| e.param)
    }

    #[test]
    fn keys_are_checked() {
        assert_eq!(key("abc"), Ok(Some("abc".into())));
        assert_eq!(key("\"abc\""), Ok(Some("abc".into())));
        assert_eq!(key("a b"), Ok(Some("a b".into())));
        assert_eq!(key(&"k".repeat(255)), Ok(Some("k".repeat(255))));
        let refused = Err(Some(HEADER.to_string()));
        assert_eq!(key(&"k".repeat(256)), refused);
        assert_eq!(key(&format!("\"{}\"", "k".repeat(256))), refused);
        assert_eq!(key("\"\""), refused);
        assert_eq!(key(""), refused);
        assert_eq!(key("tab\there"), refused);
        assert_eq!(key_of(&HeaderMap::new()).map_err(|e| e.param), Ok(None));
    }

    #[test]
    fn a_fingerprint_tells_requests_apart() {
        let (post, uri) = (Method::POST, "/v1/agents".parse().unwrap());
        let headers = HeaderMap::new();
        let one = fingerprint(&post, &uri, &headers, &serde_json::json!({"name": "a"}));
        assert_eq!(one, fingerprint(&post, &uri, &headers, &serde_json::json!({"name": "a"})));
        assert_ne!(one, fingerprint(&post, &uri, &headers, &serde_json::json!({"name": "b"})));
        assert_ne!(
            one,
            fingerprint(&Method::DELETE, &uri, &headers, &serde_json::json!({"name": "a"}))
        );
        let mut versioned = HeaderMap::new();
        versioned.insert("api-version", HeaderValue::from_static("1.1.0"));
        assert_ne!(one, fingerprint(&post, &uri, &versioned, &serde_json::json!({"name": "a"})));
        let mut conditional = HeaderMap::new();
        conditional.insert("if-match", HeaderValue::from_static("\"agv_1\""));
        let tagged = fingerprint(&post, &uri, &conditional, &serde_json::json!({"name": "a"}));
        assert_ne!(one, tagged, "a retry with a fresh tag is another request");
    }
}
