//! The server's metrics, for `GET /metrics` in the Prometheus text format: counters and
//! histograms that the layers above update as things happen, and gauges of the database
//! that the scrape reads (`Metrics::observe_database`). One registry per server rather
//! than a process-wide one, so that the servers of one test process count apart.
//!
//! Labels take bounded values only: an operation id or a route's template (never a
//! path), a status, a direction.

use std::borrow::Cow;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Metric, Registry, Unit};
use vm0_types::RunStatus;

/// The content type of [`Metrics::encode`]'s text: OpenMetrics, which Prometheus reads.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    operation: Cow<'static, str>,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: Cow<'static, str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InfoLabels {
    version: &'static str,
    database: &'static str,
}

/// Every status a run may have (the test below keeps the list whole).
const RUN_STATUSES: [RunStatus; 6] = [
    RunStatus::Pending,
    RunStatus::Running,
    RunStatus::Completed,
    RunStatus::Failed,
    RunStatus::Timeout,
    RunStatus::Cancelled,
];

/// What the database says at a scrape: runs by status, the oldest pending run's age,
/// and the connection pool's use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DatabaseReading {
    pub runs_by_status: Vec<(String, i64)>,
    pub oldest_pending: Option<Duration>,
    pub pool_size: u32,
    pub pool_idle: u32,
    pub pool_max: u32,
}

/// Every metric of one server.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<OperationLabels, Histogram>,
    run: RunMetrics,
    bytes: Family<DirectionLabels, Counter>,
    db: DatabaseMetrics,
    subscribers: Gauge,
    refusals: Family<ReasonLabels, Counter>,
}

/// The metrics of runs: in the database, queued, executing here and ended here.
struct RunMetrics {
    runs: Family<StatusLabels, Gauge>,
    queue_length: Gauge,
    queue_oldest: Gauge<f64, std::sync::atomic::AtomicU64>,
    queue_wait: Histogram,
    executing: Gauge,
    runs_ended: Family<StatusLabels, Counter>,
}

/// The metrics of the database's connection pool and of its answering a scrape.
struct DatabaseMetrics {
    pool: Family<StateLabels, Gauge>,
    pool_max: Gauge,
    database_up: Gauge,
}

impl Metrics {
    /// A new set of metrics, all zero, for a server on `database` (`sqlite`, `postgres`).
    pub fn new(database: &'static str) -> Metrics {
        let mut registry = Registry::with_prefix("vm0");
        let requests = add(
            &mut registry,
            "http_requests",
            "Requests answered, by operation id (or route, outside the API) and status",
            None,
            Family::default(),
        );
        let latency = add(
            &mut registry,
            "http_request_duration",
            "Time until a response's head, by operation",
            Some(Unit::Seconds),
            Family::<OperationLabels, Histogram>::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
            }),
        );
        let run = RunMetrics::register(&mut registry);
        let bytes = add(
            &mut registry,
            "storage_transferred",
            "File contents through this instance's storage URLs, by direction \
             (S3 transfers go to the bucket)",
            Some(Unit::Bytes),
            Family::default(),
        );
        let db = DatabaseMetrics::register(&mut registry);
        let subscribers = add(
            &mut registry,
            "sse_subscribers",
            "Open streams of run events",
            None,
            Gauge::default(),
        );
        let refusals = add(
            &mut registry,
            "requests_refused",
            "Requests refused with 429, by reason (the error code: rate_limit_exceeded, \
             too_many_pending_runs)",
            None,
            Family::default(),
        );
        let info = Family::<InfoLabels, Gauge>::default();
        info.get_or_create(&InfoLabels { version: env!("CARGO_PKG_VERSION"), database }).set(1);
        registry.register("server_info", "This server's version and database backend", info);
        Metrics { registry, requests, latency, run, bytes, db, subscribers, refusals }
    }

    /// One request answered: its operation id (or route), status and time to its head.
    pub fn answered(&self, operation: Cow<'static, str>, status: u16, took: Duration) {
        self.latency
            .get_or_create(&OperationLabels { operation: operation.clone() })
            .observe(took.as_secs_f64());
        self.requests.get_or_create(&RequestLabels { operation, status }).inc();
    }

    /// A request refused for `reason` (429: a rate limit, a cap on waiting runs).
    pub fn refused(&self, reason: vm0_types::ErrorCode) {
        self.refusals.get_or_create(&ReasonLabels { reason: reason.to_string() }).inc();
    }

    /// A run started here after waiting `waited` in the queue.
    pub fn run_started(&self, waited: Duration) {
        self.run.queue_wait.observe(waited.as_secs_f64());
        self.run.executing.inc();
    }

    /// A run that executed here has finished executing.
    pub fn run_finished(&self) {
        self.run.executing.dec();
    }

    /// A run ended by this instance with `status`.
    pub fn run_ended(&self, status: &str) {
        self.run.runs_ended.get_or_create(&StatusLabels { status: status.to_string() }).inc();
    }

    /// Bytes of file contents received through a storage URL.
    pub fn uploaded(&self, bytes: u64) {
        self.bytes.get_or_create(&DirectionLabels { direction: "upload" }).inc_by(bytes);
    }

    /// Bytes of file contents sent through a storage URL.
    pub fn downloaded(&self, bytes: u64) {
        self.bytes.get_or_create(&DirectionLabels { direction: "download" }).inc_by(bytes);
    }

    /// A stream of run events opened; it counts until the guard is dropped.
    pub fn subscribed(&self) -> SubscriberGuard {
        self.subscribers.inc();
        SubscriberGuard(self.subscribers.clone())
    }

    /// Sets the database's gauges from `reading`, or marks the database down.
    pub fn observe_database(&self, reading: Option<DatabaseReading>) {
        let Some(reading) = reading else {
            self.db.database_up.set(0);
            return;
        };
        self.db.database_up.set(1);
        // Each status set once, to its count or 0, so that a scrape read meanwhile sees
        // no status emptied; a status no run has any more reads 0, not its last count.
        for status in RUN_STATUSES {
            let status = status.to_string();
            let count = reading
                .runs_by_status
                .iter()
                .find(|(s, _)| *s == status)
                .map_or(0, |(_, count)| *count);
            self.run.runs.get_or_create(&StatusLabels { status }).set(count);
        }
        let pending = reading
            .runs_by_status
            .iter()
            .find(|(status, _)| *status == vm0_types::RunStatus::Pending.to_string())
            .map_or(0, |(_, count)| *count);
        self.run.queue_length.set(pending);
        self.run.queue_oldest.set(reading.oldest_pending.unwrap_or_default().as_secs_f64());
        let in_use = reading.pool_size.saturating_sub(reading.pool_idle);
        self.db.pool.get_or_create(&StateLabels { state: "idle" }).set(reading.pool_idle.into());
        self.db.pool.get_or_create(&StateLabels { state: "in_use" }).set(in_use.into());
        self.db.pool_max.set(reading.pool_max.into());
    }

    /// Every metric in the text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

impl RunMetrics {
    /// Registers the metrics of runs in `registry`.
    fn register(registry: &mut Registry) -> RunMetrics {
        let runs = add(
            registry,
            "runs",
            "Runs in the database by status, on every instance alike",
            None,
            Family::default(),
        );
        let queue_length = add(
            registry,
            "run_queue_length",
            "Runs pending in the database, waiting for a slot on some instance",
            None,
            Gauge::default(),
        );
        let queue_oldest = add(
            registry,
            "run_queue_oldest_age",
            "How long the oldest pending run has waited",
            Some(Unit::Seconds),
            Gauge::default(),
        );
        let queue_wait = add(
            registry,
            "run_queue_wait",
            "How long the runs this instance started had waited",
            Some(Unit::Seconds),
            Histogram::new(exponential_buckets(0.01, 2.0, 18)),
        );
        let executing = add(
            registry,
            "runs_executing",
            "Runs executing on this instance",
            None,
            Gauge::default(),
        );
        let runs_ended = add(
            registry,
            "runs_ended",
            "Runs this instance ended (or found lost), by final status",
            None,
            Family::default(),
        );
        RunMetrics { runs, queue_length, queue_oldest, queue_wait, executing, runs_ended }
    }
}

impl DatabaseMetrics {
    /// Registers the metrics of the database in `registry`.
    fn register(registry: &mut Registry) -> DatabaseMetrics {
        let pool = add(
            registry,
            "db_pool_connections",
            "The database pool's open connections, by state",
            None,
            Family::default(),
        );
        let pool_max = add(
            registry,
            "db_pool_max_connections",
            "The most connections the database pool opens",
            None,
            Gauge::default(),
        );
        let database_up = add(
            registry,
            "database_up",
            "Whether the database answered this scrape's queries",
            None,
            Gauge::default(),
        );
        DatabaseMetrics { pool, pool_max, database_up }
    }
}

/// Registers `metric` under `name` (in `unit`, when it has one) and returns it, for its
/// owner to update: the registry holds a handle to the same values.
fn add<M: Metric + Clone>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    metric: M,
) -> M {
    match unit {
        Some(unit) => registry.register_with_unit(name, help, unit, metric.clone()),
        None => registry.register(name, help, metric.clone()),
    }
    metric
}

/// Counts one open stream of run events while it lives.
pub struct SubscriberGuard(Gauge);

impl Drop for SubscriberGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_run_status_has_its_gauge() {
        let schema = schemars::schema_for!(RunStatus);
        assert_eq!(
            schema.get("enum").and_then(|e| e.as_array()).map(Vec::len),
            Some(RUN_STATUSES.len())
        );
    }

    #[test]
    fn the_text_holds_each_count_under_its_labels() {
        let metrics = Metrics::new("sqlite");
        metrics.answered("listAgents".into(), 200, Duration::from_millis(2));
        metrics.answered("listAgents".into(), 200, Duration::from_millis(3));
        metrics.answered("getAgent".into(), 404, Duration::from_millis(1));
        metrics.uploaded(10);
        metrics.uploaded(5);
        let guard = metrics.subscribed();
        metrics.observe_database(Some(DatabaseReading {
            runs_by_status: vec![("pending".into(), 3), ("completed".into(), 7)],
            oldest_pending: Some(Duration::from_secs(2)),
            pool_size: 4,
            pool_idle: 1,
            pool_max: 8,
        }));
        let text = metrics.encode();
        for line in [
            "vm0_http_requests_total{operation=\"listAgents\",status=\"200\"} 2",
            "vm0_http_requests_total{operation=\"getAgent\",status=\"404\"} 1",
            "vm0_http_request_duration_seconds_count{operation=\"listAgents\"} 2",
            "vm0_storage_transferred_bytes_total{direction=\"upload\"} 15",
            "vm0_sse_subscribers 1",
            "vm0_runs{status=\"pending\"} 3",
            "vm0_runs{status=\"running\"} 0",
            "vm0_run_queue_length 3",
            "vm0_run_queue_oldest_age_seconds 2.0",
            "vm0_db_pool_connections{state=\"in_use\"} 3",
            "vm0_database_up 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no line {line} in\n{text}");
        }
        drop(guard);
        assert!(metrics.encode().lines().any(|l| l == "vm0_sse_subscribers 0"));
    }
}
