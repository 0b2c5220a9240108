//! `vm0-server`: runs the reference server, manages its tokens, backs it up and
//! restores it.

#![allow(clippy::print_stdout)] // Printing is what this program is for.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use vm0_server::store::UserStore;
use vm0_server::{defaults, Config, Sandbox};

/// mimalloc rather than the system allocator: a request makes many small, short-lived
/// allocations across the runtime's threads, where glibc's malloc cost GET /v1/agents a
/// tenth of its throughput, and more in bursts (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The operator's caps on every run's limits (`RunCaps`): an agent configuration asking
/// for more is refused at createAgent and updateAgent, naming the field.
#[derive(clap::Args)]
struct RunCapsArgs {
    /// How long any run may last, in seconds, whatever its agent asks.
    #[arg(
        long = "max-run-timeout-seconds",
        global = true,
        env = "VM0_MAX_RUN_TIMEOUT_SECONDS",
        default_value_t = defaults::MAX_RUN_TIMEOUT_SECONDS,
        value_parser = clap::value_parser!(u64).range(1..),
    )]
    timeout_seconds: u64,
    /// The most output any run may print, in bytes, whatever its agent asks.
    #[arg(
        long = "max-run-output-bytes",
        global = true,
        env = "VM0_MAX_RUN_OUTPUT_BYTES",
        default_value_t = defaults::MAX_RUN_OUTPUT_BYTES,
        value_parser = clap::value_parser!(u64).range(1..),
    )]
    output_bytes: u64,
    /// The most memory any run may hold, in MiB, whatever its agent asks.
    #[arg(
        long = "max-run-memory-mib",
        global = true,
        env = "VM0_MAX_RUN_MEMORY_MIB",
        default_value_t = defaults::MAX_RUN_MEMORY_MIB,
        value_parser = clap::value_parser!(u64).range(1..),
    )]
    memory_mib: u64,
    /// The most processes and threads any run may have at once, whatever its agent asks.
    #[arg(
        long = "max-run-processes",
        global = true,
        env = "VM0_MAX_RUN_PROCESSES",
        default_value_t = defaults::MAX_RUN_PROCESSES,
        value_parser = clap::value_parser!(u64).range(1..),
    )]
    processes: u64,
    /// The most CPU time any run may use, in seconds, whatever its agent asks.
    #[arg(
        long = "max-run-cpu-seconds",
        global = true,
        env = "VM0_MAX_RUN_CPU_SECONDS",
        default_value_t = defaults::MAX_RUN_CPU_SECONDS,
        value_parser = clap::value_parser!(u64).range(1..),
    )]
    cpu_seconds: u64,
    /// The largest file any run may write, in MiB, whatever its agent asks.
    #[arg(
        long = "max-run-file-size-mib",
        global = true,
        env = "VM0_MAX_RUN_FILE_SIZE_MIB",
        default_value_t = defaults::MAX_RUN_FILE_SIZE_MIB,
        value_parser = clap::value_parser!(u64).range(1..),
    )]
    file_size_mib: u64,
    /// The most disk any run's working directory may take, in MiB, whatever its agent asks.
    #[arg(
        long = "max-run-disk-mib",
        global = true,
        env = "VM0_MAX_RUN_DISK_MIB",
        default_value_t = defaults::MAX_RUN_DISK_MIB,
        value_parser = clap::value_parser!(u64).range(1..),
    )]
    disk_mib: u64,
    /// The most files any run's working directory may hold, whatever its agent asks.
    #[arg(
        long = "max-run-files",
        global = true,
        env = "VM0_MAX_RUN_FILES",
        default_value_t = defaults::MAX_RUN_FILES,
        value_parser = clap::value_parser!(u64).range(1..),
    )]
    files: u64,
}

/// The reference server of the VM0 Public API v1, on an embedded SQLite database.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// The address to listen on.
    #[arg(long, global = true, env = "VM0_LISTEN", default_value = defaults::LISTEN)]
    listen: SocketAddr,
    /// Serve GET /metrics on this address of its own (which can stay private) rather than
    /// beside the API [default: beside the API, on --listen].
    #[arg(long, global = true, env = "VM0_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// How long a drain on SIGTERM or Ctrl-C may take, in seconds: requests in flight
    /// finish, runs go on until shortly before its end and are stopped then.
    #[arg(
        long,
        global = true,
        env = "VM0_SHUTDOWN_GRACE_SECONDS",
        default_value_t = defaults::SHUTDOWN_GRACE_SECONDS,
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    shutdown_grace_seconds: u64,
    /// Where the database and the files live [default: the user's data directory, vm0-server].
    #[arg(long, global = true, env = "VM0_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The database: sqlite://PATH, or postgres://USER:PASSWORD@HOST/DATABASE for
    /// PostgreSQL, which several instances may share when their blobs are in one bucket
    /// (--blob-store) and their secrets key is one [default: sqlite://<data dir>/vm0.db].
    #[arg(long, global = true, env = "VM0_DATABASE_URL")]
    database_url: Option<String>,
    /// Where file contents live: s3://BUCKET[/PREFIX] for an S3-compatible bucket, a
    /// bucket or prefix per database, with credentials and region from the standard AWS_*
    /// variables [default: blobs/ in the data directory].
    #[arg(long, global = true, env = "VM0_BLOB_STORE")]
    blob_store: Option<String>,
    /// The S3 endpoint, for a server other than AWS's (such as http://127.0.0.1:9000);
    /// buckets are addressed path-style.
    #[arg(long, global = true, env = "VM0_S3_ENDPOINT", requires = "blob_store")]
    s3_endpoint: Option<String>,
    /// The file of the 32-byte key that seals run secrets in the database, made if
    /// missing; every instance on one database needs a copy of the same file
    /// [default: <data dir>/secrets.key].
    #[arg(long, global = true, env = "VM0_SECRETS_KEY")]
    secrets_key: Option<PathBuf>,
    /// The base URL clients reach this server at, used in pre-signed URLs
    /// [default: http://<listen>].
    #[arg(long, global = true, env = "VM0_PUBLIC_URL")]
    public_url: Option<String>,
    /// The largest file a volume or artifact may hold, in bytes.
    #[arg(
        long,
        global = true,
        env = "VM0_MAX_FILE_SIZE",
        default_value_t = defaults::MAX_FILE_SIZE
    )]
    max_file_size: u64,
    /// The largest JSON request body, in bytes; an upload's file list may be larger, up to
    /// the 16 MB its 10,000 entries need.
    #[arg(
        long,
        global = true,
        env = "VM0_MAX_BODY_BYTES",
        default_value_t = defaults::MAX_BODY_BYTES
    )]
    max_body_bytes: usize,
    /// How many runs execute at once; the others wait, the user with the fewest runs
    /// executing first, then oldest first.
    #[arg(
        long,
        global = true,
        env = "VM0_MAX_CONCURRENT_RUNS",
        default_value_t = defaults::MAX_CONCURRENT_RUNS
    )]
    max_concurrent_runs: usize,
    /// How many runs of one user execute at once, on every instance together (0: no cap);
    /// the user's other runs wait, however many slots are free.
    #[arg(long, global = true, env = "VM0_MAX_RUNNING_RUNS_PER_USER", default_value_t = 0)]
    max_running_runs_per_user: usize,
    /// How many runs of one user may wait to start at once (0: no cap); past it, createRun
    /// answers 429 too_many_pending_runs.
    #[arg(
        long,
        global = true,
        env = "VM0_MAX_PENDING_RUNS_PER_USER",
        default_value_t = defaults::MAX_PENDING_RUNS_PER_USER
    )]
    max_pending_runs_per_user: u32,
    /// How many requests each token may make a minute, on every instance together (0: no
    /// limit); every answer says where the token stands (RateLimit-Policy, RateLimit), and
    /// past it the answer is 429 rate_limit_exceeded with Retry-After.
    #[arg(long, global = true, env = "VM0_RATE_LIMIT", default_value_t = defaults::RATE_LIMIT)]
    rate_limit: u32,
    /// How long a connection may take to send a request's headers, may pause inside a
    /// request's body, and may stay idle between requests, in seconds; past it the server
    /// closes the connection.
    #[arg(
        long,
        global = true,
        env = "VM0_CONNECTION_TIMEOUT_SECONDS",
        default_value_t = defaults::CONNECTION_TIMEOUT_SECONDS,
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    connection_timeout_seconds: u64,
    /// How many connections are served at once; past it, new ones wait to be accepted
    /// (the server raises its file-descriptor limit to the host's hard limit at start, and
    /// serves fewer if even that leaves too few).
    #[arg(
        long,
        global = true,
        env = "VM0_MAX_CONNECTIONS",
        default_value_t = defaults::MAX_CONNECTIONS as u64,
        value_parser = clap::value_parser!(u64).range(1..=1_000_000)
    )]
    max_connections: u64,
    #[command(flatten)]
    run_caps: RunCapsArgs,
    /// How often a running run's processes are sampled, in milliseconds.
    #[arg(
        long,
        global = true,
        env = "VM0_SAMPLE_INTERVAL_MS",
        default_value_t = defaults::SAMPLE_INTERVAL_MS
    )]
    sample_interval_ms: u64,
    /// How many days checkpoints are kept, and sessions after their last run.
    #[arg(
        long,
        global = true,
        env = "VM0_RETENTION_DAYS",
        default_value_t = defaults::RETENTION_DAYS,
        value_parser = clap::value_parser!(u64).range(1..=3650)
    )]
    retention_days: u64,
    /// How many hours a user's Idempotency-Key and the answer to its request are kept: a
    /// retry within them answers that answer again, and runs nothing.
    #[arg(
        long,
        global = true,
        env = "VM0_IDEMPOTENCY_HOURS",
        default_value_t = defaults::IDEMPOTENCY_HOURS,
        value_parser = clap::value_parser!(u64).range(1..=720)
    )]
    idempotency_hours: u64,
    /// Run agents as processes of the server's own user, outside any sandbox, on hosts
    /// that cannot make one (no user namespaces). This gives up every wall around a run:
    /// it can read and change every user's files and runs, the database with the run
    /// secrets and the signing key, and whatever else the server's user can; its
    /// background processes are found by process group only; and it always has the
    /// network. Only for trusted agents.
    #[arg(long, global = true, env = "VM0_UNSANDBOXED_RUNS")]
    unsandboxed_runs: bool,
    /// What to log, as a tracing filter: error, warn, info, debug, or per module.
    #[arg(long, global = true, env = "VM0_LOG", default_value = defaults::LOG)]
    log: String,
    /// How log lines look: human-readable, or one JSON object per line (for a log
    /// collector), with the request id, operation, user id, status and time of each
    /// request.
    #[arg(
        long,
        global = true,
        env = "VM0_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Human
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Manage API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Write a consistent backup of the embedded database and its blobs to one file,
    /// while the server runs.
    Backup {
        /// The file to write; it appears whole or not at all, readable by its owner only.
        #[arg(long)]
        to: PathBuf,
    },
    /// Restore a backup into a data directory that has no database yet, checking every
    /// blob; then start the server on it.
    Restore {
        /// The backup file.
        #[arg(long)]
        from: PathBuf,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token for a user (created if new) and print its value, shown this once.
    Create {
        /// The user's name.
        #[arg(long)]
        user: String,
        /// What the token is for.
        #[arg(long)]
        name: String,
        /// Days until it expires (1 to 365).
        #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(i64).range(1..=365))]
        expires_in_days: i64,
    },
}

fn main() -> anyhow::Result<()> {
    // The sandbox helper must start before any thread does (see `vm0_server::Sandbox`).
    if std::env::args_os().nth(1).is_some_and(|arg| arg == vm0_server::SANDBOX_HELPER_ARG) {
        vm0_server::sandbox_helper_main();
    }
    // The fault suite's fault points, from FAILPOINTS (a test build's only).
    #[cfg(feature = "failpoints")]
    let _faults = fail::FailScenario::setup();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let result = runtime.block_on(serve(Cli::parse()));
    // Past the drain's grace, nothing left (a connection, a file operation) holds up the exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    result
}

/// Sets up logging, reads the configuration, and either runs the subcommand asked for or
/// serves the API.
async fn serve(mut cli: Cli) -> anyhow::Result<()> {
    init_logging(&cli.log, cli.log_format)?;
    let command = cli.command.take();
    let config = config(cli)?;
    match command {
        Some(command) => run_command(command, &config).await,
        None => serve_api(config).await,
    }
}

/// Logs to stderr with the filter `log`, in the format asked for.
fn init_logging(log: &str, format: LogFormat) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(log)?;
    match format {
        LogFormat::Human => {
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .with_ansi(ansi)
                .init();
        }
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init(),
    }
    Ok(())
}

/// The server's configuration from the command line and the environment.
fn config(cli: Cli) -> anyhow::Result<Config> {
    let data_dir = match cli.data_dir {
        Some(dir) => dir,
        None => dirs::data_dir()
            .context("no data directory for this user: pass --data-dir")?
            .join("vm0-server"),
    };
    Ok(Config {
        listen: cli.listen,
        metrics_listen: cli.metrics_listen,
        shutdown_grace: std::time::Duration::from_secs(cli.shutdown_grace_seconds),
        data_dir,
        database_url: cli.database_url,
        blob_store: match cli.blob_store {
            Some(url) => vm0_server::BlobLocation::parse(&url, cli.s3_endpoint)?,
            None => vm0_server::BlobLocation::Local,
        },
        secrets_key: cli.secrets_key,
        public_url: cli.public_url,
        max_file_size: cli.max_file_size,
        max_body_bytes: cli.max_body_bytes,
        max_concurrent_runs: cli.max_concurrent_runs,
        max_running_runs_per_user: cli.max_running_runs_per_user,
        max_pending_runs_per_user: cli.max_pending_runs_per_user,
        rate_limit: cli.rate_limit,
        connection_timeout: std::time::Duration::from_secs(cli.connection_timeout_seconds),
        max_connections: cli.max_connections as usize,
        run_caps: vm0_server::RunCaps {
            timeout_seconds: cli.run_caps.timeout_seconds,
            max_output_bytes: cli.run_caps.output_bytes,
            max_memory_mib: cli.run_caps.memory_mib,
            max_processes: cli.run_caps.processes,
            max_cpu_seconds: cli.run_caps.cpu_seconds,
            max_file_size_mib: cli.run_caps.file_size_mib,
            max_disk_mib: cli.run_caps.disk_mib,
            max_files: cli.run_caps.files,
        },
        sample_interval: std::time::Duration::from_millis(cli.sample_interval_ms),
        retention: std::time::Duration::from_secs(cli.retention_days * 24 * 3600),
        idempotency: std::time::Duration::from_secs(cli.idempotency_hours * 3600),
        sandbox: if cli.unsandboxed_runs {
            Sandbox::Unsandboxed
        } else {
            Sandbox::Helper(
                std::env::current_exe().context("finding this program, the sandbox helper")?,
            )
        },
    })
}

/// Runs a subcommand (token, backup, restore) against `config` and prints its outcome.
async fn run_command(command: Command, config: &Config) -> anyhow::Result<()> {
    match command {
        Command::Token { command: TokenCommand::Create { user, name, expires_in_days } } => {
            let store = vm0_server::open_store(config).await?;
            let user = store.ensure_user(&user).await?;
            let (_, value) =
                vm0_server::api::issue_token(&store, &user.id, &name, expires_in_days).await?;
            println!("{value}");
        }
        Command::Backup { to } => {
            let manifest = vm0_server::backup::backup(config, &to).await?;
            let key = if manifest.secrets_key {
                "and the secrets key"
            } else {
                "without the secrets key (kept elsewhere, with --secrets-key)"
            };
            println!(
                "Backed up the database of {} and {} blobs ({} bytes) {key} to {}",
                manifest.taken_at,
                manifest.blobs,
                manifest.blob_bytes,
                to.display()
            );
        }
        Command::Restore { from } => {
            let manifest = vm0_server::backup::restore(config, &from).await?;
            println!(
                "Restored the database of {} and {} blobs ({} bytes, each checked) into {}",
                manifest.taken_at,
                manifest.blobs,
                manifest.blob_bytes,
                config.data_dir.display()
            );
        }
    }
    Ok(())
}

/// Binds the server, prints its banner and serves until SIGINT or SIGTERM.
async fn serve_api(config: Config) -> anyhow::Result<()> {
    let data_dir = config.data_dir.clone();
    let server = vm0_server::bind(config).await?;
    let banner = banner(&server, &data_dir);
    // A closed stdout (`vm0-server | head -1`) must not stop the server.
    let mut stdout = std::io::stdout();
    std::io::Write::write_all(&mut stdout, banner.as_bytes())
        .and_then(|_| std::io::Write::flush(&mut stdout))
        .ok();
    server.serve(shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

/// What the server prints when it starts: where it listens, its data, and the first token
/// when it made one.
fn banner(server: &vm0_server::Server, data_dir: &std::path::Path) -> String {
    let mut banner = format!(
        "vm0-server listening on {}\nAPI docs: {}/docs\nData directory: {}\n",
        server.url,
        server.url,
        data_dir.display()
    );
    if let Some(url) = &server.metrics_url {
        banner.push_str(&format!("Metrics: {url}/metrics\n"));
    }
    if let Some(token) = &server.first_token {
        banner.push_str(&format!(
            "\nCreated the user 'default' and its first API token, \
             shown this once:\n\n    {token}\n\n"
        ));
        banner.push_str(&format!(
            "Try it: curl {}/v1/agents -H \"Authorization: Bearer {token}\"\n",
            server.url
        ));
    }
    banner
}

/// Completes on SIGINT or SIGTERM, so in-flight requests can finish.
async fn shutdown_signal() {
    let interrupt = async { tokio::signal::ctrl_c().await.ok() };
    #[cfg(unix)]
    let terminate = async {
        if let Ok(mut signal) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            signal.recv().await;
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {}
        _ = terminate => {}
    }
    tracing::info!("shutting down");
}
