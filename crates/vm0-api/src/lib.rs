//! The VM0 Public API v1 as a server trait and an axum router, generated from
//! `openapi/v1.yaml`.
//!
//! Implement [`Vm0Api`] (one method per operation, typed inputs and outputs) and serve
//! [`router`]: it authenticates, validates every input against the spec, renders every
//! error in the spec's envelope and sets the response headers, so an implementation
//! cannot forget any of them.
//!
//! `generated.rs` and `generated.json` are written by `cargo xtask codegen`; the rest of
//! this crate is the hand-written runtime they call.

mod conditions;
mod error;
#[rustfmt::skip] // Written by `cargo xtask codegen`, which formats it itself.
mod generated;
pub mod idempotency;
pub mod limits;
mod reply;
mod request;
mod schemas;
mod versions;

use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;

pub use conditions::{ETag, IfMatch, Tagged, IF_MATCH};
pub use error::ApiError;
pub use generated::*;
pub use reply::{EventLines, SentEvent};
pub use request::{is_token, BodyLimit, Call, MAX_BODY_BYTES};

/// Checks `value` against a JSON Schema of the implementation's own (such as an
/// executor's agent configuration) with the router's rules: the first violation is a 400
/// whose `param` names its place under `base` (`config.command[0]`), and whose message
/// never quotes the value.
pub fn check_json(
    validator: &jsonschema::Validator,
    value: &serde_json::Value,
    base: &str,
) -> Result<(), ApiError> {
    schemas::check(validator, value, Some(base))
}

/// The value of `X-API-Version` on every response.
pub const API_VERSION: &str = "v1";

/// The id of one request, as sent in `X-Request-Id`: `req_` and 32 hex characters. It is
/// in the request's extensions and in the request's log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

impl RequestId {
    fn fresh() -> Self {
        RequestId(format!("req_{}", uuid::Uuid::new_v4().simple()))
    }
}

/// What a response's request was, beyond its method, path and status: the spec
/// operation it called and the user it authenticated as, each when known. The
/// middleware of [`finish`] puts it in every response's extensions, for a server's own
/// layers (its metrics, say).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Served {
    /// The operation's id (`listAgents`), when the request reached one.
    pub operation: Option<&'static str>,
    /// The user's id, as [`Vm0Api::user_id`] gives it, when the token was valid.
    pub user: Option<String>,
    /// Where the token stands in its rate limit, when the implementation limits it.
    pub quota: Option<limits::Quota>,
}

/// Where the handler of a request notes what it [`Served`], in the request's extensions.
#[derive(Clone, Default)]
struct ServedSlot(std::sync::Arc<std::sync::Mutex<Served>>);

/// Adds what every response of the API needs to `routes`: the error envelope for unknown
/// routes (404), wrong methods (405) and panics (500), and the `X-Request-Id` and
/// `X-API-Version` headers. [`router`] is `finish(routes(api))`; a server that serves
/// routes of its own merges them into [`routes`] first.
pub fn finish(routes: Router) -> Router {
    routes
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::internal("a handler panicked").into_response()
        }))
        .layer(middleware::from_fn(headers))
}

/// The most headers a request may have.
pub const MAX_HEADERS: usize = 100;

/// One log line per request: its id, method, path (never the query string, which may
/// hold a pre-signed URL's signature), operation, user id, status and time, with the
/// internal detail of a 500. One event and no span keeps the access log cheap on the hot path.
async fn headers(mut request: Request, next: Next) -> Response {
    let id = RequestId::fresh();
    let slot = ServedSlot::default();
    request.extensions_mut().insert(id.clone());
    request.extensions_mut().insert(slot.clone());
    let (method, uri) = (request.method().clone(), request.uri().clone());
    let version = versions::Version::of_caller(request.headers().get(versions::HEADER));
    let started = std::time::Instant::now();
    let mut response = if request.headers().len() > MAX_HEADERS {
        let message = format!(
            "The request has {} headers; at most {MAX_HEADERS} are allowed",
            request.headers().len()
        );
        ApiError {
            status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ..ApiError::invalid_request(message)
        }
        .into_response()
    } else {
        next.run(request).await
    };
    let (status, ms) = (response.status().as_u16(), started.elapsed().as_millis() as u64);
    let served = std::mem::take(&mut *slot.0.lock().expect("not poisoned"));
    let (operation, user) = (served.operation, served.user.as_deref());
    match response.extensions_mut().remove::<error::InternalDetail>() {
        Some(detail) => {
            tracing::error!(
                request = %id.0, %method, path = uri.path(), operation, user, status, ms,
                detail = %detail.0, "answered with an internal error"
            )
        }
        None => {
            tracing::info!(
                request = %id.0, %method, path = uri.path(), operation, user, status, ms,
                "answered"
            )
        }
    }
    if let Some(quota) = &served.quota {
        quota.write(response.headers_mut());
    }
    response.extensions_mut().insert(served);
    if let (true, Ok(Some(version))) = (response.status().is_client_error(), version) {
        let (kind, code) = (response.extensions().get(), response.extensions().get());
        let later = match (kind, code) {
            (Some(kind), Some(code)) => schemas::is_later_error(kind, code, version),
            // Not an ApiError (a replayed answer): its body says.
            _ => schemas::has_later_errors(version),
        };
        if later {
            response = for_version(response, version).await;
        }
    }
    let headers = response.headers_mut();
    headers.insert("x-request-id", HeaderValue::from_str(&id.0).expect("request ids are ASCII"));
    headers.insert("x-api-version", HeaderValue::from_static(API_VERSION));
    response
}

/// The error `response` as a caller of `version` may read it (see
/// [`schemas::downgrade_error`]).
async fn for_version(response: Response, version: versions::Version) -> Response {
    if !schemas::has_later_errors(version) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    // An error answer is whole in memory already (JSON, or a kept answer's bytes).
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return ApiError::internal("an error answer could not be read").into_response();
    };
    let mut value: serde_json::Value = match serde_json::from_slice(&bytes) {
        Ok(value) => value,
        Err(_) => return Response::from_parts(parts, axum::body::Body::from(bytes)),
    };
    if !schemas::downgrade_error(&mut value, version) {
        return Response::from_parts(parts, axum::body::Body::from(bytes));
    }
    let body = serde_json::to_vec(&value).expect("JSON serializes");
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(body))
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError {
        message: format!("No such route: {method} {}", uri.path()),
        ..ApiError::not_found("route", uri.path())
    }
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        ..ApiError::invalid_request(format!("{method} is not allowed on {}", uri.path()))
    }
}
