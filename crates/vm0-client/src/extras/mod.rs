//! The hand-written half of the client, beside the generated one: construction and
//! authentication, retries, one error type, auto-pagination, typed run events and file
//! transfers.
#![deny(missing_docs)]

mod call;
mod error;
mod events;
mod pages;
mod transfer;

use std::fmt;
use std::ops::Deref;
use std::time::Duration;

use rand::Rng;
use reqwest::header::{HeaderValue, AUTHORIZATION};

pub use error::{ApiError, Error, RateLimit, Reply};
pub use events::RunEvent;
pub use pages::Paginate;
pub use transfer::{Progress, Transfer};

/// The production API, the spec's first server.
pub const DEFAULT_BASE_URL: &str = "https://api.vm0.ai";

/// What the generated client carries for the hooks: the token and the retry policy.
#[derive(Clone)]
pub struct Settings {
    authorization: Option<HeaderValue>,
    timeout: Option<Duration>,
    retries: u32,
    longest_wait: Duration,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let token = if self.authorization.is_some() { "Bearer vm0_live_…" } else { "none" };
        f.debug_struct("Settings")
            .field("authorization", &token)
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .field("longest_wait", &self.longest_wait)
            .finish()
    }
}

/// The VM0 API client: every operation of the generated client (through `Deref`), plus
/// the extras. Build one with [`Client::new`], [`Client::from_env`] or [`Client::builder`].
#[derive(Clone)]
pub struct Client {
    raw: crate::RawClient,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use progenitor_client::ClientInfo;
        f.debug_struct("Client")
            .field("base_url", &self.raw.baseurl())
            .field("settings", self.raw.inner())
            .finish()
    }
}

impl Deref for Client {
    type Target = crate::RawClient;

    fn deref(&self) -> &crate::RawClient {
        &self.raw
    }
}

impl Client {
    /// A client for the API at `base_url` (such as `https://api.vm0.ai`) with `token`.
    /// A token that is not `vm0_live_` and 64 lowercase hex characters is refused here,
    /// without a request.
    pub fn new(base_url: &str, token: &str) -> Result<Client, Error> {
        Client::builder().base_url(base_url).token(token).build()
    }

    /// A client from the environment: `VM0_API_URL` (default [`DEFAULT_BASE_URL`]) and
    /// `VM0_TOKEN`.
    pub fn from_env() -> Result<Client, Error> {
        let base_url =
            std::env::var("VM0_API_URL").unwrap_or_else(|_| DEFAULT_BASE_URL.to_string());
        let token = std::env::var("VM0_TOKEN")
            .map_err(|_| Error::Invalid("VM0_TOKEN is not set".into()))?;
        Client::new(&base_url, &token)
    }

    /// A builder for the base URL, token, timeout, retries and reqwest client.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// The API's base URL.
    pub fn base_url(&self) -> &str {
        use progenitor_client::ClientInfo;
        self.raw.baseurl()
    }

    /// The reqwest client, with the token, for requests outside the generated operations.
    fn http(&self) -> &reqwest::Client {
        use progenitor_client::ClientInfo;
        self.raw.client()
    }

    fn authorize(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        use progenitor_client::ClientInfo;
        match &self.raw.inner().authorization {
            Some(value) => request.header(AUTHORIZATION, value.clone()),
            None => request,
        }
    }
}

/// Builds a [`Client`].
#[derive(Debug)]
pub struct ClientBuilder {
    base_url: String,
    token: Option<String>,
    timeout: Option<Duration>,
    retries: u32,
    longest_wait: Duration,
    http: Option<reqwest::Client>,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder {
            base_url: DEFAULT_BASE_URL.into(),
            token: None,
            timeout: Some(Duration::from_secs(30)),
            retries: 2,
            longest_wait: Duration::from_secs(60),
            http: None,
        }
    }
}

impl ClientBuilder {
    /// The API's base URL (default [`DEFAULT_BASE_URL`]).
    pub fn base_url(mut self, base_url: &str) -> Self {
        self.base_url = base_url.trim_end_matches('/').to_string();
        self
    }

    /// The API token, `vm0_live_` and 64 lowercase hex characters.
    pub fn token(mut self, token: &str) -> Self {
        self.token = Some(token.to_string());
        self
    }

    /// The time limit of each API call (default 30 s; `None` for none). Event streams and
    /// file transfers are not limited by it.
    pub fn timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }

    /// How many times a failed call is retried (default 2): connection errors, and for
    /// idempotent requests 429 and 5xx answers too.
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// The longest `Retry-After` a retry waits out (default 60 s). An answer that asks for
    /// longer (a rate limit whose window ends later, say) is returned as the call's error
    /// instead, its `retry_after` saying when to try again: a program that must not pause
    /// for long, such as a command line, sets a few seconds.
    pub fn longest_wait(mut self, longest_wait: Duration) -> Self {
        self.longest_wait = longest_wait;
        self
    }

    /// The reqwest client to send with, for proxies, TLS roots and the like.
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.http = Some(client);
        self
    }

    /// The client; a base URL that is not an absolute http(s) URL, or a malformed token,
    /// is refused here.
    pub fn build(self) -> Result<Client, Error> {
        match reqwest::Url::parse(&self.base_url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => {}
            _ => {
                return Err(Error::Invalid(format!(
                    "{:?} is not an API base URL: give an http:// or https:// URL, such as \
                     {DEFAULT_BASE_URL}",
                    self.base_url
                )))
            }
        }
        let authorization = match &self.token {
            Some(token) => {
                if !is_token(token) {
                    return Err(Error::Invalid(
                        "Malformed API token: expected vm0_live_ followed by 64 lowercase hex \
                         characters"
                            .into(),
                    ));
                }
                let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
                    .expect("a well-formed token is a valid header");
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        let http = match self.http {
            Some(http) => http,
            None => reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(10))
                .user_agent(concat!("vm0-client/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(Error::from)?,
        };
        let (timeout, retries, longest_wait) = (self.timeout, self.retries, self.longest_wait);
        let settings = Settings { authorization, timeout, retries, longest_wait };
        Ok(Client { raw: crate::RawClient::new_with_client(&self.base_url, http, settings) })
    }
}

/// Whether `token` has the API's token format.
pub fn is_token(token: &str) -> bool {
    token.strip_prefix("vm0_live_").is_some_and(|hex| {
        hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

impl progenitor_client::ClientHooks<Settings> for crate::RawClient {
    async fn pre<E>(
        &self,
        request: &mut reqwest::Request,
        _: &progenitor_client::OperationInfo,
    ) -> Result<(), progenitor_client::Error<E>> {
        use progenitor_client::ClientInfo;
        let settings = self.inner();
        if let Some(value) = &settings.authorization {
            request.headers_mut().insert(AUTHORIZATION, value.clone());
        }
        if request.timeout().is_none() {
            *request.timeout_mut() = settings.timeout;
        }
        Ok(())
    }

    async fn exec(
        &self,
        request: reqwest::Request,
        _: &progenitor_client::OperationInfo,
    ) -> reqwest::Result<reqwest::Response> {
        use progenitor_client::ClientInfo;
        let settings = self.inner();
        send_with_retries(self.client(), request, settings.retries, settings.longest_wait).await
    }
}

/// The request header that makes a POST, PUT or DELETE safe to send again.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Sends `request`, retrying up to `retries` times, after an exponential backoff with
/// jitter or the `Retry-After` the server asked for (an answer that asks for more than
/// `longest_wait` is returned as it is). A POST, PUT or DELETE carries an
/// `Idempotency-Key` (a fresh UUID v4, unless the call's builder set one), the same on
/// every try, so the server runs it once however often it is sent (a PUT with `If-Match`
/// sent again without one would find its own write, and fail). What is retried:
/// connection errors always (the server never saw the request); for GET, HEAD and
/// OPTIONS any error of the connection (a timeout, an answer lost on the way), 429 and
/// 5xx; for a request with a key, any error of the connection, 409
/// `idempotency_key_in_use` (which says `Retry-After`), 429, 502, 503 and 504, but not a
/// 500, after which the operation may have taken effect and is not kept under the key.
pub(crate) async fn send_with_retries(
    client: &reqwest::Client,
    mut request: reqwest::Request,
    retries: u32,
    longest_wait: Duration,
) -> reqwest::Result<reqwest::Response> {
    use reqwest::Method;
    let idempotent = matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let keyed = matches!(*request.method(), Method::POST | Method::PUT | Method::DELETE);
    if keyed && !request.headers().contains_key(IDEMPOTENCY_KEY) {
        let key = uuid::Uuid::new_v4().to_string();
        request.headers_mut().insert(IDEMPOTENCY_KEY, key.parse().expect("a UUID is a header"));
    }
    let key = request.headers().get(IDEMPOTENCY_KEY).cloned();
    let key = key.as_ref();
    let retried = |response: &reqwest::Response| {
        let status = response.status().as_u16();
        (idempotent && (status == 429 || response.status().is_server_error()))
            || (keyed && (matches!(status, 429 | 502..=504) || in_use(response)))
    };
    let mut attempt = 0;
    loop {
        // The last attempt, and a request whose body cannot be replayed, go as they are.
        let copy = if attempt < retries { request.try_clone() } else { None };
        let Some(copy) = copy else {
            return client.execute(request).await.map(|r| noted(r, key));
        };
        let wait = match client.execute(copy).await {
            Ok(response) if retried(&response) => match retry_after_in(response.headers()) {
                Some(asked) if asked > longest_wait => return Ok(noted(response, key)),
                Some(asked) => asked,
                None => backoff(attempt),
            },
            Ok(response) => return Ok(noted(response, key)),
            Err(error) if error.is_connect() || ((idempotent || keyed) && !error.is_builder()) => {
                backoff(attempt)
            }
            Err(error) => return Err(error),
        };
        tokio::time::sleep(wait).await;
        attempt += 1;
    }
}

/// Full jitter over an exponential ceiling: 0.25 s, 0.5 s, 1 s … up to 8 s.
pub(crate) fn backoff(attempt: u32) -> Duration {
    let ceiling =
        Duration::from_millis(250).saturating_mul(1 << attempt.min(5)).min(Duration::from_secs(8));
    ceiling.mul_f64(rand::rng().random_range(0.5..=1.0))
}

/// `response` with the request's `key` noted on it, for the typed error to read (the
/// server's answer does not say it).
fn noted(mut response: reqwest::Response, key: Option<&HeaderValue>) -> reqwest::Response {
    if let Some(key) = key {
        response.headers_mut().insert(IDEMPOTENCY_KEY, key.clone());
    }
    response
}

/// Whether `response` says that the first request with its key is still executing: a 409
/// with `Retry-After`, which the API sends for `idempotency_key_in_use` only.
fn in_use(response: &reqwest::Response) -> bool {
    response.status() == reqwest::StatusCode::CONFLICT
        && response.headers().contains_key(reqwest::header::RETRY_AFTER)
}

/// The delay the `Retry-After` header of `headers` asks for, in seconds (the API never
/// sends the date form).
pub(crate) fn retry_after_in(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let seconds: u64 =
        headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(seconds))
}
