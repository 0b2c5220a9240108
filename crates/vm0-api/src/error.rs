//! The API's errors, rendered in the spec's envelope:
//! `{"error": {"type", "code", "message", "param"?}}`.

use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use vm0_types::{ErrorCode, ErrorDetail, ErrorType};

/// An error response of the API, with two messages as dropshot keeps them: `message` is
/// what the client reads, and `internal`, what only the operators should see, is logged
/// once, with the request id, when the error is rendered (see [`ApiError::internal`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The error's category, which goes with the status.
    pub kind: ErrorType,
    /// The specific error code.
    pub code: ErrorCode,
    /// A human-readable description, naming the thing at fault.
    pub message: String,
    /// The parameter at fault, when there is one.
    pub param: Option<String>,
    /// What went wrong inside the server, for the log only; never sent to the client.
    pub internal: Option<String>,
    /// The seconds the client should wait before trying again (`Retry-After`), when the
    /// error says so.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub(crate) fn new(
        status: StatusCode,
        kind: ErrorType,
        code: ErrorCode,
        message: impl Into<String>,
    ) -> Self {
        let message = message.into();
        ApiError { status, kind, code, message, param: None, internal: None, retry_after: None }
    }

    /// Names the parameter at fault.
    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    /// 401: the API key is missing, malformed, expired or revoked.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            ErrorType::AuthenticationError,
            ErrorCode::InvalidApiKey,
            message,
        )
    }

    /// 403: a pre-signed URL whose token has been revoked or has expired since it was
    /// made: the URL is authentic, but what it was made for is no longer allowed.
    pub fn revoked_url(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            ErrorType::AuthenticationError,
            ErrorCode::InvalidApiKey,
            message,
        )
    }

    /// 400 `invalid_parameter`: the value of `param` is invalid.
    pub fn invalid_parameter(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self::invalid_request(message).with_param(param)
    }

    /// 400 `invalid_parameter` about the request as a whole (its body, its content type).
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            ErrorType::InvalidRequestError,
            ErrorCode::InvalidParameter,
            message,
        )
    }

    /// 400 `missing_parameter`: `param` is required.
    pub fn missing_parameter(param: impl Into<String>) -> Self {
        let param = param.into();
        Self::new(
            StatusCode::BAD_REQUEST,
            ErrorType::InvalidRequestError,
            ErrorCode::MissingParameter,
            format!("{param} is required"),
        )
        .with_param(param)
    }

    /// 400 `invalid_state`: the resource cannot do this now.
    pub fn invalid_state(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            ErrorType::InvalidRequestError,
            ErrorCode::InvalidState,
            message,
        )
    }

    /// 404 `resource_not_found`, in the spec's words: `No such agent: 'ag_x'`.
    pub fn not_found(what: &str, id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            ErrorType::NotFoundError,
            ErrorCode::ResourceNotFound,
            format!("No such {what}: '{id}'"),
        )
    }

    /// 409 `resource_already_exists` for a taken name: `An agent named 'x' already exists`.
    pub fn already_exists(what: &str, name: &str) -> Self {
        let article = if what.starts_with(['a', 'e', 'i', 'o', 'u']) { "An" } else { "A" };
        Self::new(
            StatusCode::CONFLICT,
            ErrorType::ConflictError,
            ErrorCode::ResourceAlreadyExists,
            format!("{article} {what} named '{name}' already exists"),
        )
        .with_param("name")
    }

    /// 500 that tells the client nothing internal; `detail` is kept for the log, written
    /// when the error is rendered.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        let mut error = Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorType::ApiError,
            ErrorCode::InternalError,
            "Internal server error",
        );
        error.internal = Some(detail.to_string());
        error
    }

    /// The envelope's body.
    pub fn body(&self) -> vm0_types::Error {
        vm0_types::Error {
            error: ErrorDetail {
                type_: self.kind,
                code: self.code,
                message: self.message.clone(),
                param: self.param.clone(),
            },
        }
    }
}

/// What went wrong inside the server for one response, for its log line only.
#[derive(Debug, Clone)]
pub(crate) struct InternalDetail(pub(crate) String);

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    /// Renders the envelope. The internal detail rides along in the response's
    /// extensions, never its body, to the one place that logs it: the access log line of
    /// the request (see `finish`), which carries the request id.
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(seconds));
        }
        // The type and code, for the router's downgrade of later errors for older callers,
        // and for a server's layers that count answers by them (refusals, say).
        response.extensions_mut().insert(self.kind);
        response.extensions_mut().insert(self.code);
        if let Some(detail) = self.internal {
            response.extensions_mut().insert(InternalDetail(detail));
        }
        response
    }
}
