//! A real `vm0-server` on a random port with its own data directory, and clients for it.

use std::sync::Arc;

use chrono::{Duration, Utc};
use vm0_server::api::App;
use vm0_server::store::{SqlStore, TokenRow, UserStore};

/// This package's sandbox helper, which cargo builds beside this package's binaries, the
/// folder above the test binaries' `deps`.
pub fn sandbox_helper() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the program's path");
    let folder = exe.parent().expect("a program lives in a folder");
    let folder = if folder.ends_with("deps") { folder.parent().unwrap_or(folder) } else { folder };
    folder.join("vm0-test-sandbox")
}

/// A running server; it stops when dropped. Its `url` is a proxy that checks every
/// response against the spec (`crate::conformance`): a test fails, when the server stops
/// or is dropped, on any response that breaks it.
pub struct TestServer {
    /// The checking proxy in front of the server.
    pub url: String,
    /// The server itself, for tests of what reaches it at the transport level (too many
    /// headers, say), which a proxy would change.
    pub direct_url: String,
    violations: crate::conformance::Violations,
    /// The first user's token.
    pub token: String,
    pub app: Arc<App<SqlStore>>,
    pub data_dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub handle: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    /// Starts a server on 127.0.0.1 and a free port.
    pub async fn start() -> TestServer {
        let data_dir = tempfile::tempdir().expect("a temporary directory");
        Self::start_in(data_dir).await
    }

    /// Starts a server over an existing data directory (to restart one).
    pub async fn start_in(data_dir: tempfile::TempDir) -> TestServer {
        Self::start_with(data_dir, |config| config).await
    }

    /// Starts a server over `data_dir` whose configuration `configure` changes.
    pub async fn start_with(
        data_dir: tempfile::TempDir,
        configure: impl FnOnce(vm0_server::Config) -> vm0_server::Config,
    ) -> TestServer {
        let config = vm0_server::Config {
            max_file_size: 64 * 1024 * 1024,
            sample_interval: std::time::Duration::from_millis(200),
            sandbox: vm0_server::Sandbox::Helper(sandbox_helper()),
            ..vm0_server::Config::local(data_dir.path())
        };
        let database_url =
            vm0_server::testing::database_url(data_dir.path()).await.expect("a test database");
        let blob_store =
            vm0_server::testing::blob_store(data_dir.path()).await.expect("a test blob store");
        let config = configure(vm0_server::Config { database_url, blob_store, ..config });
        let server = vm0_server::bind(config).await.expect("the server starts");
        let token = match &server.first_token {
            Some(token) => token.clone(),
            None => new_token(&server.app.store, "default", 30).await,
        };
        let (direct_url, app) = (server.url.clone(), server.app.clone());
        let (url, violations) = crate::conformance::start(direct_url.clone()).await;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(async move {
            server
                .serve(async {
                    stopped.await.ok();
                })
                .await
                .expect("the server serves");
        });
        TestServer {
            url,
            direct_url,
            violations,
            token,
            app,
            data_dir,
            stop: Some(stop),
            handle: Some(handle),
        }
    }

    /// A client with the first user's token.
    pub fn client(&self) -> vm0_client::Client {
        self.client_with(&self.token)
    }

    /// A client with `token`, which need not be well-formed (to test the server's answer).
    pub fn client_with(&self, token: &str) -> vm0_client::Client {
        match vm0_client::Client::new(&self.url, token) {
            Ok(client) => client,
            // A malformed token is refused by the client itself: send it raw instead.
            Err(_) => vm0_client::Client::builder()
                .base_url(&self.url)
                .http_client(http_client(token))
                .build()
                .unwrap(),
        }
    }

    /// Whether the blob of `bytes` is stored, on whichever backend the server has.
    pub async fn has_blob(&self, bytes: &[u8]) -> bool {
        use sha2::Digest;
        self.app
            .blobs
            .contains(&hex::encode(sha2::Sha256::digest(bytes)))
            .await
            .expect("the blob store answers")
    }

    /// Whether uploads go to an S3 bucket rather than through the server.
    pub fn blobs_in_s3(&self) -> bool {
        self.app.blobs.is_s3()
    }

    /// A token for another user, `name`.
    pub async fn user_token(&self, name: &str) -> String {
        new_token(&self.app.store, name, 30).await
    }

    /// A token of the first user that expired a minute ago.
    pub async fn expired_token(&self) -> String {
        let user = self.app.store.ensure_user("default").await.unwrap();
        let value = format!("vm0_live_{}", "e".repeat(64));
        let now = Utc::now();
        let row = TokenRow {
            id: format!("tok_expired{}", now.timestamp_micros()),
            user_id: user.id,
            name: "expired".into(),
            token_prefix: value[..12].to_string(),
            token_hash: sha256(&value),
            created_at: now - Duration::days(2),
            expires_at: now - Duration::minutes(1),
            last_used_at: None,
            revoked_at: None,
        };
        self.app.store.insert_token(&row).await.unwrap();
        value
    }

    /// Stops the server after the requests in flight, and returns its data directory.
    pub async fn stop(mut self) -> tempfile::TempDir {
        self.stop.take().map(|s| s.send(()));
        if let Some(handle) = self.handle.take() {
            crate::wait::within(
                crate::wait::DEADLINE,
                "the server stopping after its requests in flight",
                handle,
            )
            .await
            .ok();
        }
        self.assert_conformance();
        let dir = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self.data_dir, dir)
    }

    /// Every response since the last call that broke the spec, one line each, taken (so
    /// that they no longer fail the server's stop).
    pub fn take_violations(&self) -> Vec<String> {
        std::mem::take(&mut *self.violations.lock().expect("not poisoned"))
    }

    /// Panics with every response so far that broke the spec.
    fn assert_conformance(&self) {
        crate::conformance::assert_clean(&self.violations);
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.take().map(|s| s.send(()));
        if !std::thread::panicking() {
            self.assert_conformance();
        }
    }
}

fn sha256(value: &str) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(value.as_bytes()).to_vec()
}

async fn new_token(store: &SqlStore, user: &str, days: i64) -> String {
    let user = store.ensure_user(user).await.unwrap();
    vm0_server::api::issue_token(store, &user.id, "test", days).await.unwrap().1
}

/// A reqwest client that sends `token` as the bearer token.
pub fn http_client(token: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")).unwrap();
    value.set_sensitive(true);
    headers.insert(reqwest::header::AUTHORIZATION, value);
    reqwest::Client::builder().default_headers(headers).build().unwrap()
}

/// The status and envelope of a failed call, panicking on success.
pub fn api_error<T: std::fmt::Debug>(
    result: Result<progenitor_client::ResponseValue<T>, vm0_client::RawError<vm0_types::Error>>,
) -> (u16, vm0_types::ErrorDetail) {
    match result {
        Ok(value) => panic!("expected an error, got {:?}", value.into_inner()),
        Err(vm0_client::RawError::ErrorResponse(response)) => {
            (response.status().as_u16(), response.into_inner().error)
        }
        Err(other) => panic!("expected an API error, got {other}"),
    }
}
