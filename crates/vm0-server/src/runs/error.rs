//! `RunError`: why the engine's front door (`submit`, `cancel`, `events`) could not do
//! what its caller asked. It knows nothing of HTTP: the API layer gives each variant its
//! status in one place (`From<RunError> for ApiError`), and a store failure keeps its
//! detail for the log.

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Something the request names does not exist, or is another user's; `param` is the
    /// field of the request that named it.
    #[error("no {resource} '{id}'")]
    NotFound { resource: &'static str, id: String, param: Option<String> },
    /// The request lacks a field it needs.
    #[error("{param} is required")]
    MissingParameter { param: &'static str },
    /// A field of the request that no run may have.
    #[error("{message}")]
    InvalidParameter { param: String, message: String },
    /// What the request names is not in a state that allows it.
    #[error("{message}")]
    InvalidState { message: String, param: Option<String> },
    /// The user has as many runs waiting to start as the server allows.
    #[error("{cap} runs are waiting already")]
    TooManyPending { cap: u32 },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl RunError {
    pub(super) fn not_found(resource: &'static str, id: &str) -> RunError {
        RunError::NotFound { resource, id: id.to_string(), param: None }
    }

    pub(super) fn invalid_state(message: String) -> RunError {
        RunError::InvalidState { message, param: None }
    }

    /// The same error, blamed on the request's field `param`.
    pub(super) fn at(self, name: impl Into<String>) -> RunError {
        match self {
            RunError::NotFound { resource, id, .. } => {
                RunError::NotFound { resource, id, param: Some(name.into()) }
            }
            RunError::InvalidState { message, .. } => {
                RunError::InvalidState { message, param: Some(name.into()) }
            }
            other => other,
        }
    }
}
