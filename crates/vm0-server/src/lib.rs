//! The reference server of the VM0 Public API v1: `vm0_api::Vm0Api` implemented for real
//! on an embedded SQLite database and a content-addressed blob store, plus the routes
//! around the API: pre-signed storage URLs, the spec, its documentation, the health and
//! readiness probes and the metrics; and the drain on shutdown.

pub mod api;
pub mod backup;
mod blobs;
mod connections;
mod cursor;
pub mod defaults;
mod ids;
pub mod metrics;
mod paths;
mod portal;
mod runs;
mod secrets;
pub mod store;
pub mod testing;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use axum::body::Body;
use axum::extract::{MatchedPath, Path, RawQuery, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use tokio::net::TcpListener;
use vm0_api::ApiError;

use crate::api::{Api, App};
use crate::blobs::{Access, Blobs};
use crate::connections::{accept, ConnectionLimits};
use crate::metrics::Metrics;
use crate::store::{SqlStore, Store, UserStore};

/// The spec, served as it is.
pub const SPEC_YAML: &str = include_str!("../../../openapi/v1.yaml");
/// Its JSON twin.
pub const SPEC_JSON: &str = include_str!("../../../openapi/v1.json");

pub use blobs::Location as BlobLocation;
pub use runs::config::RunCaps;
pub use runs::sandbox::{helper_main as sandbox_helper_main, HELPER_ARG as SANDBOX_HELPER_ARG};

/// How runs are kept from the host, the server and each other.
#[derive(Debug, Clone)]
pub enum Sandbox {
    /// Each in a sandbox of its own, set up by `helper`: a program whose `main` calls
    /// [`sandbox_helper_main`] when its first argument is [`SANDBOX_HELPER_ARG`], before it
    /// starts any thread. `vm0-server` is one. Where the host cannot make sandboxes, the
    /// server says so at start and fails every run.
    Helper(PathBuf),
    /// As processes of the server's own user, with its rights over every user's data, the
    /// database and the signing key, and over the other runs: for hosts that cannot make
    /// sandboxes and runs that are trusted.
    Unsandboxed,
}

/// How the server runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// The address to listen on; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Where `GET /metrics` is served, when not on `listen` beside the API: an address
    /// that can stay private.
    pub metrics_listen: Option<SocketAddr>,
    /// How long a drain (on SIGTERM) may take before the process exits: in-flight
    /// requests finish and runs go on until shortly before it ends (see `Server::serve`).
    pub shutdown_grace: std::time::Duration,
    /// Where the database (by default) and the blobs live; created if missing.
    pub data_dir: PathBuf,
    /// The database; `sqlite://<data dir>/vm0.db` when not given.
    pub database_url: Option<String>,
    /// Where blobs live: the data directory, or an S3 bucket.
    pub blob_store: BlobLocation,
    /// The key file that seals run secrets; `<data dir>/secrets.key` when not given.
    /// Instances on one database need the same key.
    pub secrets_key: Option<PathBuf>,
    /// The base URL clients reach this server at, for pre-signed URLs; `http://<listen>`
    /// when not given.
    pub public_url: Option<String>,
    /// The largest file a volume or artifact may hold, in bytes.
    pub max_file_size: u64,
    /// The largest JSON request body, in bytes (an upload's file list may be larger, as
    /// its 10,000 entries need).
    pub max_body_bytes: usize,
    /// How many runs execute at once; the others wait, the user with the fewest runs
    /// executing first, then oldest first.
    pub max_concurrent_runs: usize,
    /// How many runs of one user execute at once, on every instance together; 0 for no
    /// cap. The user's other runs wait, however many slots are free.
    pub max_running_runs_per_user: usize,
    /// How many runs of one user may wait to start; past it, createRun is 429
    /// `too_many_pending_runs`. 0 for no cap.
    pub max_pending_runs_per_user: u32,
    /// How many requests each token may make a minute, on every instance together; past
    /// it, 429 `rate_limit_exceeded`. 0 for no limit.
    pub rate_limit: u32,
    /// How long a connection may take to send a request's headers, may pause inside a
    /// request's body, and may stay idle between requests.
    pub connection_timeout: std::time::Duration,
    /// How many connections are served at once; past it, new ones wait to be accepted.
    pub max_connections: usize,
    /// The most any one run may be given, whatever its agent's configuration asks.
    pub run_caps: RunCaps,
    /// How often a running run's processes are sampled.
    pub sample_interval: std::time::Duration,
    /// How long checkpoints are kept, and sessions kept after their last run.
    pub retention: std::time::Duration,
    /// How long an Idempotency-Key and its answer are kept.
    pub idempotency: std::time::Duration,
    pub sandbox: Sandbox,
}

impl Config {
    /// The database's URL: `database_url`, or SQLite in the data directory.
    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("vm0.db").display()))
    }

    /// The file of the key that seals run secrets: `secrets_key`, or in the data directory.
    pub fn secrets_key_path(&self) -> PathBuf {
        self.secrets_key.clone().unwrap_or_else(|| self.data_dir.join(SECRETS_KEY_FILE))
    }

    /// The server's defaults over `data_dir`, listening on a free port of 127.0.0.1: the
    /// start of every test's and benchmark's configuration.
    pub fn local(data_dir: &std::path::Path) -> Config {
        use std::time::Duration;
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            metrics_listen: None,
            shutdown_grace: Duration::from_secs(defaults::SHUTDOWN_GRACE_SECONDS),
            data_dir: data_dir.to_path_buf(),
            database_url: None,
            blob_store: BlobLocation::Local,
            secrets_key: None,
            public_url: None,
            max_file_size: defaults::MAX_FILE_SIZE,
            max_body_bytes: defaults::MAX_BODY_BYTES,
            max_concurrent_runs: defaults::MAX_CONCURRENT_RUNS,
            max_running_runs_per_user: 0,
            max_pending_runs_per_user: defaults::MAX_PENDING_RUNS_PER_USER,
            rate_limit: defaults::RATE_LIMIT,
            connection_timeout: Duration::from_secs(defaults::CONNECTION_TIMEOUT_SECONDS),
            max_connections: defaults::MAX_CONNECTIONS,
            run_caps: RunCaps::default(),
            sample_interval: Duration::from_millis(defaults::SAMPLE_INTERVAL_MS),
            retention: Duration::from_secs(defaults::RETENTION_DAYS * 24 * 3600),
            idempotency: Duration::from_secs(defaults::IDEMPOTENCY_HOURS * 3600),
            // This program, when it is `vm0-server`; others say which helper they have.
            sandbox: Sandbox::Helper(std::env::current_exe().unwrap_or_default()),
        }
    }
}

/// A server bound to its address, ready to serve.
pub struct Server {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// The base URL of the API.
    pub url: String,
    /// The value of the first API token, when this start created the first user.
    pub first_token: Option<String>,
    /// The base URL of the metrics' own listener, when `Config::metrics_listen` gave one.
    pub metrics_url: Option<String>,
    /// Whether requests are counted and timed for `/metrics`: always, but for the
    /// benchmark that measures what that costs.
    pub count_requests: bool,
    /// The state, for tests and tools that need the store.
    pub app: Arc<App<SqlStore>>,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    shutdown_grace: std::time::Duration,
    body_limit: vm0_api::BodyLimit,
    connections: ConnectionLimits,
    /// Kept while the server serves: this process's lock on its data directory.
    _data_dir_lock: std::fs::File,
    /// And its hold on its PostgreSQL database (see `SqlStore::hold`).
    _database_hold: Option<store::InstanceHold>,
}

/// The secrets key's file in the data directory, when `--secrets-key` names none.
const SECRETS_KEY_FILE: &str = "secrets.key";

/// What the key check setting holds, sealed: a database's runs are sealed under the key
/// that opens it.
const KEY_CHECK: &str = "vm0 secrets key check";

/// Opens the data directory and the database, binds the address, and creates the first
/// user and token when there is no user yet.
pub async fn bind(config: Config) -> anyhow::Result<Server> {
    tokio::fs::create_dir_all(&config.data_dir)
        .await
        .with_context(|| format!("creating {}", config.data_dir.display()))?;
    let (lock, instance) = hold_data_dir(&config.data_dir)?;
    let store = open_store(&config).await?;
    // Blobs in the data directory are this instance's only: another instance on the same
    // database would not find them.
    let alone = matches!(config.blob_store, BlobLocation::Local);
    let hold = store.hold(alone, &instance).await.context("starting on the database")?;
    let key = store
        .setting("signing_key", &secrets::new_key())
        .await
        .context("reading the signing key")?;
    let sealer = open_sealer(&config, &store).await?;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let metrics_listener = match config.metrics_listen {
        Some(at) => Some(
            TcpListener::bind(at)
                .await
                .with_context(|| format!("listening for metrics on {at}"))?,
        ),
        None => None,
    };
    let metrics_url = metrics_listener
        .as_ref()
        .map(|l| l.local_addr().map(|a| format!("http://{a}")))
        .transpose()?;
    let url = config.public_url.clone().unwrap_or_else(|| format!("http://{addr}"));
    let blobs = Blobs::open(
        &config.data_dir,
        &config.blob_store,
        key.clone(),
        url.clone(),
        config.max_file_size,
    )
    .await
    .with_context(|| format!("opening the blob store {:?}", config.blob_store))?;

    let first_token = match store.create_first_user("default").await? {
        Some(user) => Some(api::issue_token(&store, &user.id, "first token", 365).await?.1),
        None => None,
    };
    let blobs = Arc::new(blobs);
    let limits = runs::Limits {
        concurrency: config.max_concurrent_runs,
        running_per_user: config.max_running_runs_per_user,
        pending_per_user: config.max_pending_runs_per_user,
        sample_every: config.sample_interval,
        retention: config.retention,
        idempotency: config.idempotency,
        caps: config.run_caps,
    };
    let executor = Arc::new(executor(&config, &instance).await);
    let host = runs::Host { instance, dir: config.data_dir.clone(), sealer };
    let metrics = Arc::new(Metrics::new(store.backend()));
    let engine = Arc::new(runs::Engine::new(
        store.clone(),
        blobs.clone(),
        executor,
        limits,
        host,
        metrics.clone(),
    ));
    engine.recover().await;
    blobs.collect_garbage(&store).await;
    blobs.collect_in_background(store.clone());
    let app = Arc::new(App::new(store, blobs, key, engine, metrics, (alone, config.rate_limit)));
    Ok(Server {
        addr,
        url,
        first_token,
        metrics_url,
        count_requests: true,
        app,
        listener,
        metrics_listener,
        shutdown_grace: config.shutdown_grace,
        body_limit: vm0_api::BodyLimit(config.max_body_bytes),
        connections: connections::limits(config.connection_timeout, config.max_connections),
        _data_dir_lock: lock,
        _database_hold: hold,
    })
}

/// The sealer of run secrets, its key read (or made) from `--secrets-key`, and checked
/// against the one the database's secrets are sealed with.
async fn open_sealer<S: Store>(config: &Config, store: &S) -> anyhow::Result<secrets::Sealer> {
    let key_path = config.secrets_key_path();
    let sealer = secrets::Sealer::open(&key_path).with_context(|| {
        format!("opening the key that seals run secrets, {}", key_path.display())
    })?;
    let check = store
        .setting("secrets_key_check", sealer.seal(KEY_CHECK).as_bytes())
        .await
        .context("reading the secrets key check")?;
    if std::str::from_utf8(&check).ok().and_then(|check| sealer.unseal(check)).as_deref()
        != Some(KEY_CHECK)
    {
        anyhow::bail!(
            "the secrets key {} is not the one this database's run secrets are sealed with: \
             every instance on one database needs the same key file (--secrets-key)",
            key_path.display()
        );
    }
    Ok(sealer)
}

/// Makes this process the only server on `data_dir` until it ends (a lock on
/// `server.lock`, which the system lets go of when the process dies), and reads the
/// data directory's instance id, made on first use: the executor named on the runs
/// this instance starts, so that a restart knows the runs its previous process left.
fn hold_data_dir(data_dir: &std::path::Path) -> anyhow::Result<(std::fs::File, String)> {
    let path = data_dir.join("server.lock");
    let lock =
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    if let Err(error) = lock.try_lock() {
        anyhow::bail!(
            "another vm0-server is serving the data directory {} ({error})",
            data_dir.display()
        );
    }
    let path = data_dir.join("instance-id");
    let instance = match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => id.trim().to_string(),
        _ => {
            let id = ids::new(crate::ids::Prefix::Instance);
            std::fs::write(&path, &id).with_context(|| format!("writing {}", path.display()))?;
            id
        }
    };
    Ok((lock, instance))
}

/// How this server's runs will be isolated: in sandboxes, when its helper can make one
/// here; as the server's user, when told to; not at all otherwise, which it says loudly.
async fn isolation(config: &Config) -> runs::local::Isolation {
    use runs::local::Isolation;
    match &config.sandbox {
        Sandbox::Unsandboxed => {
            tracing::warn!(
                "runs execute unsandboxed, as processes of the server's own user \
                 that can read and change every user's data (--unsandboxed-runs)"
            );
            Isolation::Unsandboxed
        }
        Sandbox::Helper(helper) => {
            match runs::sandbox::probe(helper, &config.data_dir.join("sandbox-probe")).await {
                Ok(()) => Isolation::Sandbox(helper.clone()),
                Err(reason) => {
                    tracing::error!(
                        %reason,
                        "this host cannot sandbox runs: every run will fail \
                         until the server is started where it can, or with --unsandboxed-runs"
                    );
                    Isolation::Refused(format!(
                        "This server cannot sandbox runs on its host ({reason}), \
                         and it was not started with --unsandboxed-runs"
                    ))
                }
            }
        }
    }
}

/// The local executor: runs isolated as `isolation` decides, in control groups where the
/// host has them.
async fn executor(config: &Config, instance: &str) -> runs::local::LocalExecutor {
    let isolation = isolation(config).await;
    let groups = control_groups(&isolation, instance);
    runs::local::LocalExecutor { isolation, groups }
}

/// Where the kernel will hold each run's processes and memory (`runs/cgroup.rs`), said in
/// the log either way.
fn control_groups(
    isolation: &runs::local::Isolation,
    instance: &str,
) -> Option<runs::cgroup::Hierarchy> {
    if matches!(isolation, runs::local::Isolation::Refused(_)) {
        return None;
    }
    match runs::cgroup::Hierarchy::find(instance) {
        Ok(groups) => {
            tracing::info!(
                "the kernel holds each run's processes and memory, in {}",
                groups.describe()
            );
            Some(groups)
        }
        Err(reason) => {
            tracing::warn!(
                %reason,
                "no control group can be made here: a run's processes and memory are held \
                 only by per-process limits (RLIMIT_NPROC, RLIMIT_DATA, twice the run's) and \
                 by the sampler, which a fork bomb outruns; run the server with cgroup v2 \
                 delegated to it (systemd Delegate=yes) or as root with cgroup v1"
            );
            None
        }
    }
}

/// The data directory, created if missing, and the database in it (or at
/// `database_url`), migrated.
pub async fn open_store(config: &Config) -> anyhow::Result<SqlStore> {
    tokio::fs::create_dir_all(&config.data_dir)
        .await
        .with_context(|| format!("creating {}", config.data_dir.display()))?;
    let database_url = config.database_url();
    SqlStore::open(&database_url)
        .await
        .with_context(|| format!("opening {}", store::redacted(&database_url)))
}

/// How long before the end of a drain's grace the runs still executing are stopped, at
/// most: the time their ends take to be recorded.
const HALT_MARGIN: std::time::Duration = std::time::Duration::from_secs(5);

impl Server {
    /// Serves until `shutdown` completes, then drains: it stops accepting connections
    /// and starting runs (pending runs stay queued for another instance, or for this
    /// one's next start), ends event streams (their clients resume elsewhere with
    /// `Last-Event-ID`), and lets the requests in flight, uploads among them, and the
    /// runs executing finish. Runs still executing shortly before the grace period ends
    /// are stopped, and fail saying so; at its end, `serve` returns whatever is left.
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let engine = self.app.engine.clone();
        let tasks = [
            tokio::spawn(engine.clone().schedule()),
            tokio::spawn(engine.clone().sweep()),
            tokio::spawn(engine.clone().keep_leases()),
            tokio::spawn(engine.clone().renew_leases()),
            tokio::spawn(engine.clone().listen()),
        ];
        let limits = self.connections;
        let metrics_task = self.metrics_listener.map(|listener| {
            let routes = metrics_routes(self.app.clone());
            tokio::spawn(async move {
                accept(listener, routes, std::future::pending(), limits).await;
            })
        });
        let app = self.app.clone();
        let routes = router(self.app, metrics_task.is_none(), self.count_requests)
            .layer(axum::Extension(self.body_limit))
            // A request body that stops coming, frame after frame, ends its request.
            .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(self.connections.timeout));
        let connections = accept(self.listener, routes, shutdown, self.connections).await;

        let grace = self.shutdown_grace;
        let deadline = tokio::time::Instant::now() + grace;
        tracing::info!(
            grace_seconds = grace.as_secs_f64(),
            "draining: no new connections or runs; finishing requests and runs in flight"
        );
        engine.drain();
        let mut connections = tokio::spawn(connections.shutdown());
        let finished = async {
            (&mut connections).await.ok();
            engine.idle().await;
        };
        if tokio::time::timeout_at(deadline - HALT_MARGIN.min(grace / 2), finished).await.is_err() {
            tracing::warn!("the grace period is ending: stopping the runs still executing");
            let rest = async {
                engine.halt().await;
                if !connections.is_finished() {
                    (&mut connections).await.ok();
                }
            };
            if tokio::time::timeout_at(deadline, rest).await.is_err() {
                tracing::warn!("the grace period ended: closing the connections still open");
            }
        }
        // The answers of the last keyed requests, kept before the process goes, whether
        // the requests finished in time or not.
        if tokio::time::timeout_at(deadline, app.flush_keys()).await.is_err() {
            tracing::warn!("the grace period ended: some Idempotency-Key answers were not kept");
        }
        connections.abort();
        for task in tasks.iter().chain(&metrics_task) {
            task.abort();
        }
        Ok(())
    }
}

/// The spec as JSON at `/openapi.json`, and the portal (`portal.rs`) at `/docs`, made
/// once.
fn docs(spec: serde_json::Value) -> Router {
    // Bytes, which each answer shares rather than copies.
    let page = axum::body::Bytes::from(portal::page(&spec, portal::REDOC));
    let json = axum::body::Bytes::from(serde_json::to_vec(&spec).expect("JSON serializes"));
    let html = move || {
        let page = page.clone();
        async move { ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], page) }
    };
    let json = move || {
        let json = json.clone();
        async move { ([(header::CONTENT_TYPE, "application/json")], json) }
    };
    Router::new()
        .route("/docs", get(html.clone()))
        .route("/docs/", get(html))
        .route("/openapi.json", get(json))
}

/// Every route of the server: the API, storage, the spec and its docs, the probes, and
/// `/metrics` when `with_metrics` (rather than on a listener of its own); requests are
/// counted and timed when `count_requests`.
pub fn router<S: Store>(app: Arc<App<S>>, with_metrics: bool, count_requests: bool) -> Router {
    let mut spec: serde_json::Value =
        serde_json::from_str(SPEC_JSON).expect("openapi/v1.json is JSON");
    // A portal that reads the served spec tries requests on its first server: this one,
    // whatever its address, rather than production.
    let this_server =
        serde_json::json!({ "url": "/", "description": "The server these docs are served by." });
    spec["servers"].as_array_mut().expect("the spec lists servers").insert(0, this_server);
    let mut extra = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/executors/local/config.schema.json",
            get(|| async { axum::Json(runs::config::schema()) }),
        )
        .route(
            "/openapi.yaml",
            get(|| async { ([(header::CONTENT_TYPE, "application/yaml")], SPEC_YAML) }),
        )
        .route("/storage/blobs/{hash}", get(download_blob::<S>).put(upload_blob::<S>))
        .with_state(app.clone())
        .merge(docs(spec));
    let checks = Arc::new(Checks::new(app.clone()));
    extra =
        extra.merge(Router::new().route("/readyz", get(readiness::<S>)).with_state(checks.clone()));
    if with_metrics {
        extra = extra.merge(Router::new().route("/metrics", get(scrape::<S>)).with_state(checks));
    }
    let metrics = app.metrics.clone();
    let routes = vm0_api::finish(vm0_api::routes(Api(app)).merge(extra));
    if count_requests {
        routes.layer(axum::middleware::from_fn_with_state(metrics, count_request))
    } else {
        routes
    }
}

/// `GET /metrics`, outside the API's authentication, for a listener of its own.
fn metrics_routes<S: Store>(app: Arc<App<S>>) -> Router {
    Router::new().route("/metrics", get(scrape::<S>)).with_state(Arc::new(Checks::new(app)))
}

/// How long a check of the database or the blob store is reused.
const CHECKS_LAST: std::time::Duration = std::time::Duration::from_secs(1);

/// The state of the probe and metrics routes: the app, and their last checks of the
/// database and the blob store. Probes and scrapes come from anyone who reaches the
/// port; however many come, the database and the bucket see one check a second, and one
/// at a time.
struct Checks<S: Store> {
    app: Arc<App<S>>,
    ready: Recent<Readiness>,
    reading: Recent<Option<metrics::DatabaseReading>>,
}

/// Whether the database and the blob store answered, or why not.
type Readiness = (Health, Health);

/// What one readiness check found. (It is kept for a second and shared, so a failure is
/// kept as what it said rather than as its error.)
#[derive(Debug, Clone)]
enum Health {
    Answered,
    Failed(String),
    Silent,
}

impl Health {
    fn is_ok(&self) -> bool {
        matches!(self, Health::Answered)
    }
}

impl std::fmt::Display for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Health::Answered => f.write_str("ok"),
            Health::Failed(error) => f.write_str(error),
            Health::Silent => write!(f, "no answer within {} s", READY_TIMEOUT.as_secs()),
        }
    }
}

/// A check's last outcome, reused for `CHECKS_LAST`; callers meanwhile wait for the one
/// check running.
struct Recent<T>(tokio::sync::Mutex<Option<(std::time::Instant, T)>>);

impl<T: Clone> Recent<T> {
    fn new() -> Recent<T> {
        Recent(tokio::sync::Mutex::new(None))
    }

    /// The last outcome when it is recent, or `check`'s.
    async fn get(&self, check: impl std::future::Future<Output = T>) -> T {
        let mut last = self.0.lock().await;
        if let Some((_, value)) = last.as_ref().filter(|(at, _)| at.elapsed() < CHECKS_LAST) {
            return value.clone();
        }
        let value = check.await;
        *last = Some((std::time::Instant::now(), value.clone()));
        value
    }
}

impl<S: Store> Checks<S> {
    fn new(app: Arc<App<S>>) -> Checks<S> {
        Checks { app, ready: Recent::new(), reading: Recent::new() }
    }

    async fn readiness(&self) -> Readiness {
        self.ready
            .get(async {
                let database =
                    tokio::time::timeout(READY_TIMEOUT, self.app.store.ping(READY_TIMEOUT / 2));
                let (database, blobs) = tokio::join!(
                    database,
                    tokio::time::timeout(READY_TIMEOUT, self.app.blobs.reachable())
                );
                let readiness = (verdict(database), verdict(blobs));
                if !readiness.0.is_ok() || !readiness.1.is_ok() {
                    tracing::warn!(database = %readiness.0, blobs = %readiness.1, "not ready");
                }
                readiness
            })
            .await
    }

    async fn reading(&self) -> Option<metrics::DatabaseReading> {
        self.reading
            .get(async {
                match tokio::time::timeout(READY_TIMEOUT, self.app.store.reading()).await {
                    Ok(Ok(reading)) => Some(reading),
                    Ok(Err(error)) => {
                        tracing::warn!(%error, "metrics: the database did not answer");
                        None
                    }
                    Err(_) => {
                        tracing::warn!(
                            "metrics: the database did not answer within {} s",
                            READY_TIMEOUT.as_secs()
                        );
                        None
                    }
                }
            })
            .await
    }
}

/// A check's outcome: done, failed saying why, or out of time.
fn verdict<E: std::fmt::Display>(
    checked: Result<Result<(), E>, tokio::time::error::Elapsed>,
) -> Health {
    match checked {
        Ok(Ok(())) => Health::Answered,
        Ok(Err(error)) => Health::Failed(error.to_string()),
        Err(_) => Health::Silent,
    }
}

/// Counts and times one request under its operation id, or the template of the route
/// it matched outside the API (`/storage/blobs/{hash}`), or `unmatched`: never its path,
/// which would make a label value per id.
async fn count_request(
    State(metrics): State<Arc<Metrics>>,
    request: Request,
    next: Next,
) -> Response {
    let route = request.extensions().get::<MatchedPath>().map(|path| path.as_str().to_string());
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let operation =
        match response.extensions().get::<vm0_api::Served>().and_then(|served| served.operation) {
            Some(operation) => std::borrow::Cow::Borrowed(operation),
            None => std::borrow::Cow::Owned(route.unwrap_or_else(|| "unmatched".to_string())),
        };
    metrics.answered(operation, response.status().as_u16(), started.elapsed());
    if response.status() == axum::http::StatusCode::TOO_MANY_REQUESTS {
        if let Some(code) = response.extensions().get::<vm0_types::ErrorCode>() {
            metrics.refused(*code);
        }
    }
    response
}

/// How long a readiness check or a scrape waits for the database or the blob store.
const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// `GET /metrics`: every metric, with the database's gauges as last read.
async fn scrape<S: Store>(State(checks): State<Arc<Checks<S>>>) -> Response {
    let reading = checks.reading().await;
    let metrics = &checks.app.metrics;
    metrics.observe_database(reading);
    ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], metrics.encode()).into_response()
}

/// `GET /readyz`: 200 when the database and the blob store answer within
/// `READY_TIMEOUT` and the instance is not draining, 503 otherwise. The body says only
/// that, `{"ready":…}`: the probe is public, and why is for the log (`Checks::readiness`
/// and the drain say it there), not for anyone who asks (an object store's error names
/// its endpoint, bucket and prefix).
async fn readiness<S: Store>(State(checks): State<Arc<Checks<S>>>) -> Response {
    let (database, blobs) = checks.readiness().await;
    let draining = checks.app.engine.draining().is_cancelled();
    let ready = database.is_ok() && blobs.is_ok() && !draining;
    let body = serde_json::json!({ "ready": ready });
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, axum::Json(body)).into_response()
}

/// The query of a pre-signed URL.
#[derive(Deserialize)]
struct Signed {
    method: String,
    size: Option<u64>,
    /// The user an upload is for.
    user: Option<String>,
    /// The token that asked for the URL.
    token: String,
    expires: i64,
    signature: String,
}

async fn signed<S: Store>(
    hash: &str,
    query: Option<String>,
    access: Access,
    app: &App<S>,
) -> Result<Signed, ApiError> {
    if !blobs::is_hash(hash) {
        return Err(ApiError::not_found("blob", hash));
    }
    let signed: Signed =
        serde_urlencoded::from_str(query.as_deref().unwrap_or_default()).map_err(|e| {
            ApiError::invalid_parameter("signature", format!("Not a pre-signed URL: {e}"))
        })?;
    let wanted = if access == Access::Put { "PUT" } else { "GET" };
    if signed.method != wanted {
        return Err(ApiError::invalid_parameter(
            "method",
            format!("This URL is for {}, not {wanted}", signed.method),
        ));
    }
    let url =
        blobs::UrlFor { size: signed.size, user: signed.user.as_deref(), token: &signed.token };
    app.blobs.verify(access, hash, &url, signed.expires, &signed.signature)?;
    // Authentic, and unexpired: still, a URL lasts no longer than the token that asked.
    if !app.store.token_live(&signed.token, chrono::Utc::now()).await? {
        return Err(ApiError::revoked_url(
            "The token this URL was made for has been revoked or has expired: ask for a new URL",
        ));
    }
    Ok(signed)
}

/// `PUT /storage/blobs/{hash}`: one file's bytes, to a URL from a prepare call.
async fn upload_blob<S: Store>(
    State(app): State<Arc<App<S>>>,
    Path(hash): Path<String>,
    RawQuery(query): RawQuery,
    body: Body,
) -> Result<Response, ApiError> {
    let signed = signed(&hash, query, Access::Put, &app).await?;
    let size = signed.size.ok_or_else(|| {
        ApiError::invalid_parameter("size", "An upload URL carries the file's size")
    })?;
    let user = signed.user.ok_or_else(|| {
        ApiError::invalid_parameter("user", "An upload URL names the user it is for")
    })?;
    app.blobs.write(&hash, size, body, &app.store, &user).await?;
    app.metrics.uploaded(size);
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(
        header::ETAG,
        HeaderValue::from_str(&format!("\"{hash}\"")).expect("hashes are ASCII"),
    );
    Ok(response)
}

/// `GET /storage/blobs/{hash}`: one file's bytes, streamed, from a URL from a download call.
async fn download_blob<S: Store>(
    State(app): State<Arc<App<S>>>,
    Path(hash): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    signed(&hash, query, Access::Get, &app).await?;
    let path = app.blobs.local_path(&hash).ok_or_else(|| ApiError::not_found("blob", &hash))?;
    let file = tokio::fs::File::open(path).await.map_err(|_| ApiError::not_found("blob", &hash))?;
    let length = file.metadata().await.map_err(ApiError::internal)?.len();
    let metrics = app.metrics.clone();
    let chunks = tokio_util::io::ReaderStream::with_capacity(file, 64 * 1024);
    let body = Body::from_stream(futures_util::StreamExt::inspect(chunks, move |chunk| {
        if let Ok(chunk) = chunk {
            metrics.downloaded(chunk.len() as u64);
        }
    }));
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, length.to_string()),
            (header::ETAG, format!("\"{hash}\"")),
        ],
        body,
    )
        .into_response())
}
