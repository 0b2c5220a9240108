//! One error type for everything the client does.

use std::fmt;

use crate::types::{ErrorCode, ErrorType};

/// What went wrong with a call.
#[derive(Debug)]
pub enum Error {
    /// The API answered with an error in its envelope (boxed: it is most of the size of
    /// every `Result` the client returns, and the rarer case).
    Api(Box<ApiError>),
    /// The request did not get an answer: connection, timeout, or an unreadable response.
    Transport {
        /// What went wrong.
        message: String,
        /// The `X-Request-Id` of the response, when one came.
        request_id: Option<String>,
    },
    /// Downloaded bytes did not match the size or SHA-256 the API gave for them.
    Integrity {
        /// The file's path in its volume or artifact.
        path: String,
        /// What did not match.
        message: String,
    },
    /// The client was asked to do something it refuses locally: a malformed token, a path
    /// that would escape the target directory.
    Invalid(String),
    /// Reading or writing a local file failed.
    Io {
        /// The file.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// An error answered by the API, with everything its envelope and headers say.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: u16,
    /// The error's category.
    pub kind: ErrorType,
    /// The specific error code.
    pub code: ErrorCode,
    /// The human-readable message.
    pub message: String,
    /// The parameter at fault, when there is one.
    pub param: Option<String>,
    /// The response's `X-Request-Id`.
    pub request_id: Option<String>,
    /// The `Idempotency-Key` the request carried (every POST, PUT and DELETE has one), to send
    /// again with a retry of the same request, or to quote when asking for support.
    pub idempotency_key: Option<String>,
    /// How long the server asks the caller to wait before sending the request again
    /// (`Retry-After`): with a 429, and with 409 `idempotency_key_in_use`.
    pub retry_after: Option<std::time::Duration>,
    /// Where the token stood in its rate limit after this request (the RateLimit fields),
    /// when the server limits it.
    pub rate_limit: Option<RateLimit>,
}

/// A token's rate limit as an answer's `RateLimit-Policy` and `RateLimit` fields say it
/// (IETF httpapi RateLimit fields, draft 10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// The requests a window allows (`q`).
    pub limit: u64,
    /// The window's length in seconds (`w`).
    pub window_secs: u64,
    /// The requests left in this window (`r`).
    pub remaining: u64,
    /// The seconds until the next window begins (`t`).
    pub reset_secs: u64,
}

impl RateLimit {
    /// The fields of `headers`, when both are there and say what the draft defines.
    pub fn of(headers: &reqwest::header::HeaderMap) -> Option<RateLimit> {
        let (q, w) =
            (param(headers, "ratelimit-policy", "q")?, param(headers, "ratelimit-policy", "w")?);
        let (r, t) = (param(headers, "ratelimit", "r")?, param(headers, "ratelimit", "t")?);
        Some(RateLimit { limit: q, window_secs: w, remaining: r, reset_secs: t })
    }
}

/// The integer parameter `name` of the first policy in the structured field `field` (a
/// list of items, RFC 9651), parsed by `sfv`.
fn param(headers: &reqwest::header::HeaderMap, field: &str, name: &str) -> Option<u64> {
    let list: sfv::List = sfv::Parser::new(headers.get(field)?.as_bytes()).parse().ok()?;
    let sfv::ListEntry::Item(item) = list.first()? else { return None };
    let value = item.params.iter().find(|(key, _)| key.as_str() == name)?.1.as_integer()?;
    u64::try_from(i64::from(value)).ok()
}

impl ApiError {
    /// The error an answer of `status` with `headers` says in its envelope's `detail`.
    fn of(
        status: u16,
        headers: &reqwest::header::HeaderMap,
        detail: crate::types::ErrorDetail,
    ) -> ApiError {
        ApiError {
            status,
            kind: detail.type_,
            code: detail.code,
            message: detail.message,
            param: detail.param,
            request_id: request_id(headers),
            idempotency_key: idempotency_key(headers),
            retry_after: super::retry_after_in(headers),
            rate_limit: RateLimit::of(headers),
        }
    }
}

impl Error {
    /// The API error, when the API answered with one.
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            Error::Api(error) => Some(error),
            _ => None,
        }
    }

    /// The request id of the response, when there was a response.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            Error::Api(error) => error.request_id.as_deref(),
            Error::Transport { request_id, .. } => request_id.as_deref(),
            _ => None,
        }
    }

    /// The HTTP status, when the API answered.
    pub fn status(&self) -> Option<u16> {
        self.api().map(|e| e.status)
    }

    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Error {
        Error::Io { path: path.display().to_string(), source }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Api(e) => {
                write!(f, "{} ({}, HTTP {})", e.message, e.code, e.status)?;
                if let Some(param) = &e.param {
                    write!(f, " [param: {param}]")?;
                }
                if let Some(id) = &e.request_id {
                    write!(f, " [request id: {id}]")?;
                }
                if let Some(key) = &e.idempotency_key {
                    write!(f, " [Idempotency-Key: {key}]")?;
                }
                if let Some(wait) = e.retry_after {
                    write!(f, " [retry after {} s]", wait.as_secs())?;
                }
                Ok(())
            }
            Error::Transport { message, request_id: Some(id) } => {
                write!(f, "{message} [request id: {id}]")
            }
            Error::Transport { message, request_id: None } => write!(f, "{message}"),
            Error::Integrity { path, message } => write!(f, "{path}: {message}"),
            Error::Invalid(message) => write!(f, "{message}"),
            Error::Io { path, source } => write!(f, "{path}: {source}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn request_id(headers: &reqwest::header::HeaderMap) -> Option<String> {
    headers.get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// The key of the request, which the client notes on its response (see
/// `send_with_retries`).
fn idempotency_key(headers: &reqwest::header::HeaderMap) -> Option<String> {
    headers.get(super::IDEMPOTENCY_KEY).and_then(|v| v.to_str().ok()).map(str::to_string)
}

impl From<progenitor_client::Error<crate::types::Error>> for Error {
    fn from(error: progenitor_client::Error<crate::types::Error>) -> Self {
        use progenitor_client::Error as Raw;
        match error {
            Raw::ErrorResponse(response) => {
                let (status, headers) = (response.status().as_u16(), response.headers().clone());
                Error::Api(Box::new(ApiError::of(status, &headers, response.into_inner().error)))
            }
            Raw::UnexpectedResponse(response) => Error::Transport {
                message: format!("unexpected response: HTTP {}", response.status()),
                request_id: request_id(response.headers()),
            },
            Raw::InvalidResponsePayload(bytes, error) => Error::Transport {
                message: format!("unreadable response ({} bytes): {error}", bytes.len()),
                request_id: None,
            },
            Raw::CommunicationError(error) => {
                Error::Transport { message: transport_message(&error), request_id: None }
            }
            other => Error::Transport { message: other.to_string(), request_id: None },
        }
    }
}

impl From<reqwest::Error> for Error {
    fn from(error: reqwest::Error) -> Self {
        Error::Transport { message: transport_message(&error), request_id: None }
    }
}

/// reqwest's message with its causes, which say what actually went wrong.
pub(crate) fn transport_message(error: &reqwest::Error) -> String {
    let mut message = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    message
}

/// An error response read from its body, for calls made outside the generated client
/// (storage URLs, the event stream).
pub(crate) async fn from_response(response: reqwest::Response) -> Error {
    let (status, headers) = (response.status().as_u16(), response.headers().clone());
    let text = response.text().await.unwrap_or_default();
    match serde_json::from_str::<crate::types::Error>(&text) {
        Ok(envelope) => Error::Api(Box::new(ApiError::of(status, &headers, envelope.error))),
        Err(_) => Error::Transport {
            message: format!("HTTP {status}: {}", text.chars().take(200).collect::<String>()),
            request_id: request_id(&headers),
        },
    }
}

/// What a generated operation's `send` returns, read as the response's body or one
/// [`Error`]: `client.get_run().id(id).send().await.body()?`. Code that returns `anyhow`
/// or `Box<dyn Error>` needs it, because there `?` alone would keep progenitor's error,
/// whose message is the whole raw response.
pub trait Reply<T> {
    /// The body of a success, or the error as an [`Error`].
    fn body(self) -> Result<T, Error>;
}

impl<T> Reply<T>
    for Result<crate::ResponseValue<T>, progenitor_client::Error<crate::types::Error>>
{
    fn body(self) -> Result<T, Error> {
        self.map(crate::ResponseValue::into_inner).map_err(Error::from)
    }
}
