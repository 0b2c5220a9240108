//! The server's defaults, written once: the command line's options default to them, and
//! `Config::local`, where every test and benchmark starts, is made of them.

/// The address the server listens on.
pub const LISTEN: &str = "127.0.0.1:8080";
/// How long a drain on SIGTERM may take, in seconds.
pub const SHUTDOWN_GRACE_SECONDS: u64 = 30;
/// The largest file a volume or artifact may hold, in bytes: 5 GiB.
pub const MAX_FILE_SIZE: u64 = 5 * 1024 * 1024 * 1024;
/// The largest JSON request body, in bytes.
pub const MAX_BODY_BYTES: usize = vm0_api::MAX_BODY_BYTES;
/// How many runs execute at once.
pub const MAX_CONCURRENT_RUNS: usize = 4;
/// How many runs of one user may wait to start at once; past it, createRun is 429.
pub const MAX_PENDING_RUNS_PER_USER: u32 = 1000;
/// How many requests a token may make a minute: 100 a second, as Stripe allows; 0 for
/// no limit.
pub const RATE_LIMIT: u32 = 6000;
/// How long a connection may take over a request's headers, pause in its body, or stay
/// idle between requests, in seconds.
pub const CONNECTION_TIMEOUT_SECONDS: u64 = 30;
/// How many connections are served at once.
pub const MAX_CONNECTIONS: usize = 4096;
/// How often a running run's processes are sampled, in milliseconds.
pub const SAMPLE_INTERVAL_MS: u64 = 1000;
/// How many days checkpoints are kept, and sessions after their last run.
pub const RETENTION_DAYS: u64 = 30;
/// How many hours an Idempotency-Key and its answer are kept.
pub const IDEMPOTENCY_HOURS: u64 = 24;
/// What the server logs, as a tracing filter.
pub const LOG: &str = "info";
/// The most each run may be given, whatever its agent asks (`RunCaps`): its timeout in
/// seconds, output in bytes, memory in MiB, processes and threads, CPU seconds, largest
/// file in MiB, disk in MiB, and files.
pub const MAX_RUN_TIMEOUT_SECONDS: u64 = 86_400;
pub const MAX_RUN_OUTPUT_BYTES: u64 = 1 << 30;
pub const MAX_RUN_MEMORY_MIB: u64 = 16_384;
pub const MAX_RUN_PROCESSES: u64 = 1024;
pub const MAX_RUN_CPU_SECONDS: u64 = 86_400;
pub const MAX_RUN_FILE_SIZE_MIB: u64 = 5120;
pub const MAX_RUN_DISK_MIB: u64 = 65_536;
pub const MAX_RUN_FILES: u64 = 1_000_000;
