//! Rate limits: where the caller's token stands in its window, said on every answer to a
//! request whose token is valid in the IETF httpapi RateLimit fields (draft 10), and the
//! 429 past its quota. An implementation counts (see [`Limiter`]); the router charges each
//! request once its token is authenticated, before anything else of it is read, so a
//! refused request does nothing and takes no `Idempotency-Key`.

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use vm0_types::{ErrorCode, ErrorType};

use crate::error::ApiError;
use crate::idempotency::StoreFuture;

/// The policy field: the quota and its window.
pub const POLICY_HEADER: &str = "ratelimit-policy";
/// The field of where the token stands.
pub const HEADER: &str = "ratelimit";

/// Where a token stands in its window, after the request it was charged for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// The requests a window allows.
    pub limit: u32,
    /// The window's length in seconds.
    pub window_secs: u32,
    /// The requests left in this window.
    pub remaining: u32,
    /// The seconds until the next window begins.
    pub reset_secs: u32,
}

impl Quota {
    /// Writes the RateLimit fields: `RateLimit-Policy: "default";q=..;w=..` and
    /// `RateLimit: "default";r=..;t=..`.
    pub fn write(&self, headers: &mut HeaderMap) {
        let policy = format!("\"default\";q={};w={}", self.limit, self.window_secs);
        let state = format!("\"default\";r={};t={}", self.remaining, self.reset_secs);
        for (name, value) in [(POLICY_HEADER, policy), (HEADER, state)] {
            headers.insert(name, HeaderValue::try_from(value).expect("the fields are ASCII"));
        }
    }
}

/// What a [`Limiter`] says of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charge {
    /// The request may go on; where the token stands after it, unless the limiter could
    /// not count it.
    Admitted(Option<Quota>),
    /// The token is past its quota: where it stands.
    Refused(Quota),
}

/// Counts each token's requests against its quota, for an implementation that limits
/// them (see `Vm0Api::limiter`).
pub trait Limiter: Send + Sync {
    /// Charges one request to `token`, which authenticated. A limiter that cannot count
    /// (its store failing) admits: a rate limit protects the service, and must not be
    /// what takes it down.
    fn charge<'a>(&'a self, token: &'a str) -> StoreFuture<'a, Charge>;
}

impl ApiError {
    /// 429 `rate_limit_exceeded`: the token made the requests its `quota` allows in this
    /// window; try again when the next begins.
    pub fn rate_limited(quota: &Quota) -> Self {
        let wait = quota.reset_secs.max(1);
        let message = format!(
            "This token made its {} requests for this {} s window: try again in {wait} s",
            quota.limit, quota.window_secs
        );
        let error = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorType::RateLimitError,
            ErrorCode::RateLimitExceeded,
            message,
        );
        ApiError { retry_after: Some(wait.into()), ..error }
    }

    /// 429 `too_many_pending_runs`: the user has `cap` runs waiting to start already.
    pub fn too_many_pending_runs(cap: u32, retry_after: u64) -> Self {
        let message = format!(
            "You have {cap} runs waiting to start, as many as this server allows: try again \
             in {retry_after} s, or cancel some"
        );
        let error = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorType::RateLimitError,
            ErrorCode::TooManyPendingRuns,
            message,
        );
        ApiError { retry_after: Some(retry_after), ..error }
    }
}
