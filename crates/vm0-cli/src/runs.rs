//! `vm0 run` starts a run and follows it; `vm0 runs` looks at runs.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use futures::StreamExt;
use vm0_client::types::{
    self, LogEntry, LogTypeFilter, OutputStream, RunDetail, RunStatus, SortOrder,
};
use vm0_client::{Client, Paginate, Reply, RunEvent};

use crate::lookup;
use crate::{output, parse_arg, storage};

/// The exit codes of a followed run, by how it ended.
pub(crate) const EXIT_FAILED: u8 = 3;
pub(crate) const EXIT_TIMEOUT: u8 = 4;
pub(crate) const EXIT_CANCELLED: u8 = 5;
/// A usage error that clap cannot see, as clap's own exit with.
const EXIT_USAGE: u8 = 2;
/// Ctrl-C twice: the run goes on without us.
pub(crate) const EXIT_DETACHED: u8 = 130;

#[derive(Args)]
pub(crate) struct RunArgs {
    /// The agent's name or id, then what it is asked to do; with --session or
    /// --checkpoint, which say the agent, only the prompt.
    #[arg(value_names = ["AGENT", "PROMPT"], num_args = 1..=2, required = true)]
    words: Vec<String>,
    /// Continue this session, from its latest checkpoint, with its agent.
    #[arg(long, value_name = "ID", conflicts_with = "checkpoint")]
    session: Option<String>,
    /// Start a new session from this checkpoint of an earlier run, with its agent.
    #[arg(long, value_name = "ID")]
    checkpoint: Option<String>,
    /// The agent's version to run, by number or id [default: latest].
    #[arg(long, value_name = "VERSION")]
    agent_version: Option<String>,
    /// A variable, given to the agent as an environment variable; KEY alone takes the
    /// value of your own environment variable KEY. Repeatable.
    #[arg(long = "var", value_name = "KEY=VALUE", value_parser = key_value)]
    vars: Vec<(String, String)>,
    /// A secret, like --var but never shown in any response, log or event. Prefer KEY
    /// alone (the value from your environment) to keep it out of your shell's history.
    #[arg(long = "secret", value_name = "KEY=VALUE", value_parser = key_value)]
    secrets: Vec<(String, String)>,
    /// A volume to mount under volumes/NAME, at a version id [default: latest]. Repeatable.
    #[arg(long = "volume", value_name = "NAME[:VERSION]")]
    volumes: Vec<String>,
    /// The artifact the run writes its output to, starting from a version id [default:
    /// the latest].
    #[arg(long, value_name = "NAME[:VERSION]")]
    artifact: Option<String>,
    /// Print the run's id and return at once instead of following it.
    #[arg(long)]
    detach: bool,
    /// At the end, print the run's metrics: its duration, peak memory and average CPU.
    #[arg(long, short)]
    verbose: bool,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// List runs, newest first.
    List {
        /// Only runs of this agent (name or id).
        #[arg(long)]
        agent: Option<String>,
        /// Only runs with this status.
        #[arg(long, value_parser = crate::enum_arg::<RunStatus>())]
        status: Option<RunStatus>,
        /// Only runs created at or after this time (RFC 3339, such as 2024-01-15T10:00:00Z).
        #[arg(long)]
        since: Option<DateTime<Utc>>,
        /// Show at most this many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Show a run.
    Get {
        /// The run's id.
        run: String,
    },
    /// Cancel a pending or running run.
    Cancel {
        /// The run's id.
        run: String,
    },
    /// Print a run's logs, oldest first.
    Logs {
        /// The run's id.
        run: String,
        /// Keep printing new entries until the run ends (with --json, one entry per line).
        #[arg(long, short)]
        follow: bool,
        /// Only entries of this type.
        #[arg(
            long = "type",
            value_name = "TYPE",
            value_parser = crate::enum_arg::<LogTypeFilter>()
        )]
        type_: Option<LogTypeFilter>,
        /// Only entries at or after this time (RFC 3339).
        #[arg(long)]
        since: Option<DateTime<Utc>>,
    },
    /// Show a run's resource usage: a summary and every sample.
    Metrics {
        /// The run's id.
        run: String,
    },
}

/// `KEY=VALUE`, or `KEY` with the value of the environment variable of that name.
fn key_value(arg: &str) -> Result<(String, String)> {
    match arg.split_once('=') {
        Some(("", _)) => Err(anyhow!("the key is empty")),
        Some((key, value)) => Ok((key.into(), value.into())),
        None => std::env::var(arg).map(|value| (arg.into(), value)).map_err(|_| {
            anyhow!("no value: give KEY=VALUE, or set the environment variable {arg}")
        }),
    }
}

/// `NAME[:VERSION]`.
fn name_version(arg: &str) -> (String, Option<String>) {
    match arg.split_once(':') {
        Some((name, version)) => (name.into(), Some(version.into())),
        None => (arg.into(), None),
    }
}

/// The exit code for how a run ended.
fn exit_code(status: RunStatus) -> ExitCode {
    match status {
        RunStatus::Completed => ExitCode::SUCCESS,
        RunStatus::Failed => ExitCode::from(EXIT_FAILED),
        RunStatus::Timeout => ExitCode::from(EXIT_TIMEOUT),
        RunStatus::Cancelled => ExitCode::from(EXIT_CANCELLED),
        RunStatus::Pending | RunStatus::Running => ExitCode::FAILURE,
    }
}

fn ended(status: RunStatus) -> bool {
    !matches!(status, RunStatus::Pending | RunStatus::Running)
}

/// What a run starts from: an agent (a new session), a session, or a checkpoint.
enum Origin {
    Agent(String),
    Session(String),
    Checkpoint(String),
}

/// The origin and the prompt of `vm0 run`'s words: `AGENT PROMPT`, or `PROMPT` alone with
/// `--session` or `--checkpoint`; a usage error otherwise.
/// A `vm0 run` whose words do not fit its options.
#[derive(Debug, thiserror::Error)]
enum Usage {
    #[error(
        "give the agent and the prompt (vm0 run AGENT PROMPT), or continue a session with vm0 \
         run --session ID PROMPT"
    )]
    NoAgent,
    #[error("--session and --checkpoint say the agent: give only the prompt")]
    AgentTwice,
}

fn origin_and_prompt(args: &RunArgs) -> Result<(Origin, String), Usage> {
    let origin = match (&args.session, &args.checkpoint) {
        (Some(session), _) => Some(Origin::Session(session.clone())),
        (None, Some(checkpoint)) => Some(Origin::Checkpoint(checkpoint.clone())),
        (None, None) => None,
    };
    match (origin, args.words.as_slice()) {
        (None, [agent, prompt]) => Ok((Origin::Agent(agent.clone()), prompt.clone())),
        (None, [_]) => Err(Usage::NoAgent),
        (Some(origin), [prompt]) => Ok((origin, prompt.clone())),
        (Some(_), _) => Err(Usage::AgentTwice),
        (None, _) => unreachable!("clap takes one or two words"),
    }
}

/// `vm0 run`.
pub(crate) async fn start(args: RunArgs, client: &Client, json: bool) -> Result<ExitCode> {
    let (origin, prompt) = match origin_and_prompt(&args) {
        Ok(found) => found,
        Err(usage) => {
            eprintln!("error: {usage}");
            return Ok(ExitCode::from(EXIT_USAGE));
        }
    };
    let (agent_id, session_id, checkpoint_id) = match origin {
        Origin::Agent(key) => {
            (Some(parse_arg(&crate::agents::find(client, &key).await?.id)?), None, None)
        }
        Origin::Session(id) => (None, Some(parse_arg(&id)?), None),
        Origin::Checkpoint(id) => (None, None, Some(parse_arg(&id)?)),
    };
    let (artifact_name, artifact_version) = match args.artifact.as_deref().map(name_version) {
        Some((name, Some(version))) => {
            let version =
                storage::version_named(client, storage::Kind::Artifact, &name, &version).await?;
            (Some(parse_arg(&name)?), Some(parse_arg(&version)?))
        }
        Some((name, None)) => (Some(parse_arg(&name)?), None),
        None => (None, None),
    };
    let mut volumes = HashMap::new();
    for (name, version) in args.volumes.iter().map(|v| name_version(v)) {
        let version = match version {
            Some(version) => {
                storage::version_named(client, storage::Kind::Volume, &name, &version).await?
            }
            None => "latest".into(),
        };
        if volumes.insert(name.clone(), version).is_some() {
            bail!("--volume {name} is given twice");
        }
    }
    let body = types::CreateRunRequest {
        agent: None,
        agent_id,
        agent_version: parse_arg(args.agent_version.as_deref().unwrap_or("latest"))?,
        artifact_name,
        artifact_version,
        checkpoint_id,
        prompt: parse_arg(&prompt).context("the prompt")?,
        secrets: args.secrets.into_iter().collect(),
        session_id,
        variables: args.vars.into_iter().collect(),
        volumes,
    };
    let run = client.create_run().body(body).send().await.body()?;
    if args.detach {
        if json {
            output::json(&run)?;
        } else {
            println!("{}", run.id);
            eprintln!(
                "Started run {} of {} ({}). Follow it: vm0 runs logs {} --follow",
                run.id, run.agent_name, run.status, run.id
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    if !json {
        eprintln!("Run {} of {}. Ctrl-C to cancel it.", run.id, run.agent_name);
    }
    let Some(status) = follow(client, &run, json).await? else {
        return Ok(ExitCode::from(EXIT_DETACHED));
    };
    let run = client.get_run().id(&run.id).send().await.body()?;
    if json {
        output::json(&run)?;
    } else {
        let took = run
            .execution_time_ms
            .map(|ms| format!(" after {:.1} s", ms as f64 / 1000.0))
            .unwrap_or_default();
        let why = run.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default();
        let ended =
            if status == RunStatus::Timeout { "timed out".to_string() } else { status.to_string() };
        eprintln!("Run {} {ended}{took}{why}.", run.id);
        eprintln!(
            "Session {}. Continue it: vm0 run --session {} PROMPT",
            run.session_id, run.session_id
        );
        if args.verbose {
            let summary = client.get_run_metrics().id(&run.id).send().await.body()?.summary;
            eprintln!("{}", metrics_line(&summary));
        }
    }
    Ok(exit_code(status))
}

/// A run's metrics on one line, as `vm0 run --verbose` ends with them.
fn metrics_line(summary: &types::MetricsSummary) -> String {
    let took =
        output::or_dash(summary.total_duration_ms.map(|ms| format!("{:.1} s", ms as f64 / 1000.0)));
    format!(
        "Metrics: duration {took}, peak memory {:.1} MB, average CPU {:.1} %",
        summary.max_memory_used_mb, summary.avg_cpu_percent
    )
}

/// Prints the run's output as it comes (unless `json`) until the run ends, and returns
/// how it ended, with a spinner showing the run's status until the first line when
/// standard error is a terminal. The first Ctrl-C offers to
/// cancel the run (or cancels it when there is no terminal to ask on); the second leaves
/// it running and returns `None`.
async fn follow(client: &Client, run: &RunDetail, json: bool) -> Result<Option<RunStatus>> {
    let mut events = client.run_events(&run.id);
    let mut spinner = (!json).then(|| Spinner::start(run.status)).flatten();
    let mut interrupts = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("listening for Ctrl-C")?;
    let (answers_tx, mut answers) = tokio::sync::mpsc::unbounded_channel::<bool>();
    let interactive = std::io::stdin().is_terminal();
    let (mut asking, mut cancelling) = (false, false);
    let (mut stdout, mut stderr) = (std::io::stdout(), std::io::stderr());
    loop {
        tokio::select! {
            event = events.next() => match event
                .context("the event stream ended before the run did")??
            {
                RunEvent::Output { content, stream, .. } if !json => {
                    if let Some(spinner) = spinner.take() {
                        spinner.finish();
                    }
                    // Each line on the stream the agent wrote it to, so that `2>` and
                    // pipes split them as they would the agent's own.
                    match stream {
                        OutputStream::Stdout => {
                            writeln!(stdout, "{content}")?;
                            stdout.flush()?;
                        }
                        OutputStream::Stderr => {
                            writeln!(stderr, "{content}")?;
                            stderr.flush()?;
                        }
                    }
                }
                RunEvent::Status { status, .. } if !json => match &spinner {
                    Some(spinner) => spinner.status(status),
                    None => eprintln!("[{status}]"),
                },
                RunEvent::Error { message, .. } if !json => eprintln!("[error] {message}"),
                RunEvent::Complete { status, .. } => {
                    if let Some(spinner) = spinner.take() {
                        spinner.finish();
                    }
                    return Ok(Some(status));
                }
                _ => {}
            },
            _ = interrupts.recv() => {
                if asking || cancelling {
                    eprintln!(
                        "\nLeft run {} running. Follow it again: vm0 runs logs {} --follow",
                        run.id, run.id
                    );
                    return Ok(None);
                }
                if interactive {
                    asking = true;
                    let answers = answers_tx.clone();
                    let question = format!(
                        "\nCancel run {}? [y/N] (Ctrl-C again to leave it running) ",
                        run.id
                    );
                    // A thread, not a blocking task: the runtime would wait for it on exit.
                    std::thread::spawn(move || {
                        eprint!("{question}");
                        let mut answer = String::new();
                        let yes = std::io::stdin().read_line(&mut answer).is_ok()
                            && matches!(answer.trim(), "y" | "Y" | "yes");
                        answers.send(yes).ok();
                    });
                } else {
                    cancelling = cancel(client, &run.id).await;
                }
            },
            Some(yes) = answers.recv() => {
                asking = false;
                if yes {
                    cancelling = cancel(client, &run.id).await;
                } else {
                    eprintln!("Following on.");
                }
            },
        }
    }
}

/// Asks the API to cancel the run; whether it took the request. A refusal (the run has
/// just ended, say) is printed, and following goes on.
async fn cancel(client: &Client, run_id: &str) -> bool {
    match client.cancel_run().id(run_id).send().await.body() {
        Ok(_) => {
            eprintln!("Cancelling run {run_id}…");
            true
        }
        Err(error) => {
            output::error(&anyhow::Error::new(error).context("cancelling"));
            false
        }
    }
}

pub(crate) async fn run(command: Command, client: &Client, json: bool) -> Result<()> {
    match command {
        Command::List { agent, status, since, limit } => {
            list(client, agent, status, since, limit, json).await
        }
        Command::Get { run } => show(client, &run, json).await,
        Command::Cancel { run } => cancel_by_id(client, &run, json).await,
        Command::Logs { run, follow, type_, since } => {
            logs(client, &run, follow, type_, since, json).await
        }
        Command::Metrics { run } => metrics(client, &run, json).await,
    }
}

/// `vm0 runs list`, filtered by agent, status and creation time.
async fn list(
    client: &Client,
    agent: Option<String>,
    status: Option<RunStatus>,
    since: Option<DateTime<Utc>>,
    limit: usize,
    json: bool,
) -> Result<()> {
    let mut request = client.list_runs();
    if let Some(agent) = agent {
        request = request.agent_id(crate::agents::find(client, &agent).await?.id);
    }
    if let Some(status) = status {
        request = request.status(status);
    }
    if let Some(since) = since {
        request = request.since(since);
    }
    let runs = lookup::collect(request.stream(), Some(limit)).await?;
    if json {
        return output::json(&runs);
    }
    let rows = runs
        .iter()
        .map(|r| {
            vec![
                r.id.clone(),
                r.agent_name.clone(),
                r.status.to_string(),
                output::time(&r.created_at),
                one_line(&r.prompt, 40),
            ]
        })
        .collect();
    output::table(&["ID", "AGENT", "STATUS", "CREATED", "PROMPT"], rows);
    Ok(())
}

/// `vm0 runs get`: a run's outcome, session, checkpoint, volumes and artifact.
async fn show(client: &Client, run: &str, json: bool) -> Result<()> {
    let run = client.get_run().id(run).send().await.body()?;
    if json {
        return output::json(&run);
    }
    let mut volumes: Vec<String> =
        run.volumes.iter().map(|(name, version)| format!("{name}:{version}")).collect();
    volumes.sort();
    output::fields(&[
        ("ID", run.id.clone()),
        ("Agent", format!("{} ({})", run.agent_name, run.agent_id)),
        ("Status", run.status.to_string()),
        ("Prompt", run.prompt.clone()),
        ("Created", output::time(&run.created_at)),
        ("Started", output::or_dash(run.started_at.as_ref().map(output::time))),
        ("Completed", output::or_dash(run.completed_at.as_ref().map(output::time))),
        (
            "Took",
            output::or_dash(run.execution_time_ms.map(|ms| format!("{:.1} s", ms as f64 / 1000.0))),
        ),
        ("Error", output::or_dash(run.error.clone())),
        ("Session", run.session_id.clone()),
        ("Checkpoint", output::or_dash(run.checkpoint_id.clone())),
        ("Volumes", if volumes.is_empty() { "-".into() } else { volumes.join(", ") }),
        (
            "Artifact",
            output::or_dash(
                run.artifact_name
                    .as_ref()
                    .map(|n| format!("{n}:{}", run.artifact_version.as_deref().unwrap_or("-"))),
            ),
        ),
    ]);
    Ok(())
}

/// `vm0 runs cancel`.
async fn cancel_by_id(client: &Client, run: &str, json: bool) -> Result<()> {
    let run = client.cancel_run().id(run).send().await.body()?;
    if json {
        return output::json(&run);
    }
    println!("Run {} is {}.", run.id, run.status);
    Ok(())
}

/// `vm0 runs metrics`: a summary, then every sample.
async fn metrics(client: &Client, run: &str, json: bool) -> Result<()> {
    let metrics = client.get_run_metrics().id(run).send().await.body()?;
    if json {
        return output::json(&metrics);
    }
    let summary = &metrics.summary;
    output::fields(&[
        ("Average CPU", format!("{:.1} %", summary.avg_cpu_percent)),
        ("Peak memory", format!("{:.1} MB", summary.max_memory_used_mb)),
        (
            "Duration",
            output::or_dash(
                summary.total_duration_ms.map(|ms| format!("{:.1} s", ms as f64 / 1000.0)),
            ),
        ),
        ("Samples", metrics.data.len().to_string()),
    ]);
    if !metrics.data.is_empty() {
        println!();
        let rows = metrics
            .data
            .iter()
            .map(|s| {
                vec![
                    output::time(&s.timestamp),
                    format!("{:.1}", s.cpu_percent),
                    format!("{:.1}/{:.0}", s.memory_used_mb, s.memory_total_mb),
                    format!("{:.1}/{:.0}", s.disk_used_mb, s.disk_total_mb),
                ]
            })
            .collect();
        output::table(&["TIME", "CPU %", "MEMORY MB", "DISK MB"], rows);
    }
    Ok(())
}

/// Text on one line, cut to `width` characters.
fn one_line(text: &str, width: usize) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(width) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line,
    }
}

/// Prints the run's log entries, oldest first. Following polls for the entries after
/// the last sequence number printed, until the run has ended and its last entries are
/// out: sequence numbers follow the order entries are stored in, so none is missed, even
/// one stored late with an earlier timestamp.
async fn logs(
    client: &Client,
    run_id: &str,
    follow: bool,
    type_: Option<LogTypeFilter>,
    since: Option<DateTime<Utc>>,
    json: bool,
) -> Result<()> {
    let fetch = |after: u64| {
        let mut request =
            client.list_run_logs().id(run_id).order(SortOrder::Asc).after_sequence(after);
        if let Some(type_) = type_ {
            request = request.type_(type_);
        }
        if let Some(since) = since {
            request = request.since(since);
        }
        lookup::collect(request.stream(), None)
    };
    if !follow {
        let entries = fetch(0).await?;
        if json {
            return output::json(&entries);
        }
        entries.iter().for_each(print_entry);
        return Ok(());
    }
    let mut last = 0;
    loop {
        // The status is read before the entries, so the entries of a run seen ended are all there.
        let done = ended(client.get_run().id(run_id).send().await.body()?.status);
        for entry in fetch(last).await? {
            last = entry.sequence.get();
            if json {
                println!("{}", serde_json::to_string(&entry)?);
            } else {
                print_entry(&entry);
            }
        }
        std::io::stdout().flush()?;
        if done {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn print_entry(entry: &LogEntry) {
    println!(
        "{}  {:<7}  {:<5}  {}",
        output::time(&entry.timestamp),
        entry.type_.to_string(),
        entry.level.to_string(),
        entry.message
    );
}

/// The spinner `vm0 run` shows with the run's status until its output comes, on standard
/// error when it is a terminal; elsewhere the statuses are printed as lines.
struct Spinner(indicatif::ProgressBar);

impl Spinner {
    fn start(status: RunStatus) -> Option<Spinner> {
        if !std::io::stderr().is_terminal() {
            return None;
        }
        let spinner = Spinner(indicatif::ProgressBar::new_spinner());
        spinner.0.enable_steady_tick(Duration::from_millis(100));
        spinner.status(status);
        Some(spinner)
    }

    fn status(&self, status: RunStatus) {
        self.0.set_message(format!("run {status}"));
    }

    fn finish(self) {
        self.0.finish_and_clear();
    }
}
