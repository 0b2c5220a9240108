//! The executor interface, and the local executor: the agent's command runs in a sandbox
//! of its own (`sandbox.rs`), or, where the server was told to run without, as a
//! process group of the server's user; either way in the session's working directory,
//! with a clean environment. Its output is read line by line, its processes held by the
//! kernel in a control group of their own where the host allows (`cgroup.rs`) and sampled
//! from `/proc` against the run's limits, and a timeout or a cancel kills all of them.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot, watch, Notify};

use super::cgroup::{self, Breach, Events, Hierarchy, RunGroup};
use super::sandbox::{self, Limits, Spec};
use crate::store::MetricRow;

/// One execution of an agent.
pub(crate) struct Job {
    pub workdir: PathBuf,
    pub command: Vec<String>,
    /// The whole environment of the process.
    pub env: Vec<(String, String)>,
    /// Written to standard input, which is then closed.
    pub prompt: String,
    pub timeout: Duration,
    pub sample_every: Duration,
    /// The most bytes of output the job may print.
    pub max_output: u64,
    /// Whether it may use the network (in a sandbox; unsandboxed, it always can).
    pub network: bool,
    pub limits: Limits,
}

/// The longest line kept whole; a longer one is cut there and the cut marked.
const MAX_LINE: usize = 64 * 1024;
/// What each line costs of the output allowance besides its bytes: about what the
/// records that store it take, so a flood of empty lines is bounded as one long line is.
const LINE_COST: u64 = 256;
/// What ends a line that was cut.
const CUT: &str = " [line cut at 64 KiB]";

/// What a job produces while it runs.
pub(crate) enum Output {
    /// One line of standard output or error, without its line ending.
    Line {
        stderr: bool,
        text: String,
    },
    Sample(MetricRow),
}

/// How a job ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Exited(i32),
    Killed(i32),
    TimedOut,
    Cancelled,
    /// It could not run at all, or went past a limit.
    Failed(String),
}

/// Runs jobs. `cancel` becomes true when the run is cancelled.
pub(crate) trait Executor: Send + Sync + 'static {
    fn execute(
        &self,
        job: Job,
        output: mpsc::Sender<Output>,
        cancel: watch::Receiver<bool>,
    ) -> Pin<Box<dyn Future<Output = Outcome> + Send + '_>>;
}

/// How the local executor isolates runs.
#[derive(Debug, Clone)]
pub(crate) enum Isolation {
    /// In a sandbox, set up by this helper program.
    Sandbox(PathBuf),
    /// As processes of the server's own user (`--unsandboxed-runs`).
    Unsandboxed,
    /// Not at all, for this reason: the host cannot sandbox runs, and the server was not
    /// told to run them without.
    Refused(String),
}

/// The default executor.
pub(crate) struct LocalExecutor {
    pub isolation: Isolation,
    /// Where the kernel holds each run's processes and memory, when it can (see
    /// `cgroup.rs`).
    pub groups: Option<Hierarchy>,
}

impl Drop for LocalExecutor {
    fn drop(&mut self) {
        if let Some(groups) = &self.groups {
            groups.remove();
        }
    }
}

impl Executor for LocalExecutor {
    fn execute(
        &self,
        job: Job,
        output: mpsc::Sender<Output>,
        cancel: watch::Receiver<bool>,
    ) -> Pin<Box<dyn Future<Output = Outcome> + Send + '_>> {
        Box::pin(run(&self.isolation, self.groups.as_ref(), job, output, cancel))
    }
}

/// Kills a run's process group when dropped.
struct GroupKiller(i32);

impl Drop for GroupKiller {
    fn drop(&mut self) {
        if self.0 > 0 {
            kill_group(self.0);
        }
    }
}

fn kill_group(pgid: i32) {
    // SAFETY: kill(2) with a negative pid signals the process group; it touches no memory.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}

/// The sandbox helper's process for `job`, which reports how its sandbox went in
/// `status`.
fn sandboxed(
    helper: &Path,
    job: &Job,
    status: &Path,
    group: Option<&RunGroup>,
) -> tokio::process::Command {
    let home = |(key, value): &(String, String)| {
        if key == "HOME" {
            (key.clone(), sandbox::WORKDIR.to_string())
        } else {
            (key.clone(), value.clone())
        }
    };
    let spec = Spec {
        workdir: job.workdir.clone(),
        command: job.command.clone(),
        env: job.env.iter().map(home).collect(),
        network: job.network,
        limits: job.limits,
        status: status.to_path_buf(),
        groups: group.map(RunGroup::procs_files).unwrap_or_default(),
    };
    sandbox::helper_command(helper, &spec)
}

/// The agent's command itself, outside any sandbox, behind a warden (see `warden`), both
/// in the run's control group when it has one.
fn unsandboxed(job: &Job, group: Option<&RunGroup>) -> tokio::process::Command {
    let group = group.map(RunGroup::procs).unwrap_or_default();
    let mut command = tokio::process::Command::new(&job.command[0]);
    command
        .args(&job.command[1..])
        .current_dir(&job.workdir)
        .env_clear()
        .envs(job.env.iter().map(|(k, v)| (k, v)));
    let server = std::process::id() as libc::pid_t;
    // SAFETY: `cgroup::join` and `warden` make only async-signal-safe calls, as code
    // between fork and exec must.
    unsafe {
        command.pre_exec(move || {
            cgroup::join(&group)?;
            warden(server)
        });
    }
    command
}

/// Runs in the run's first process, between fork and exec, once it leads the run's
/// process group: forks again, and the child goes on to exec the agent while this
/// process stays behind as the run's warden. The server's death signals the warden
/// (`PR_SET_PDEATHSIG`), which then kills the whole group, the agent's descendants with
/// it (a signal to the agent alone would leave them: a sandbox's processes die with its
/// PID namespace, an unsandboxed run's need this). Otherwise it waits for the agent and
/// ends as it did, so the server sees the agent's exit.
fn warden(server: libc::pid_t) -> std::io::Result<()> {
    extern "C" fn kill_run(_: libc::c_int) {
        // SAFETY: kill(2) of the caller's own process group touches no memory.
        unsafe {
            libc::kill(0, libc::SIGKILL);
        }
    }
    // SAFETY: fork, close_range, signal, prctl, getppid, waitpid, raise and _exit are
    // async-signal-safe, and the warden calls nothing else before it exits.
    unsafe {
        let agent = libc::fork();
        if agent < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if agent == 0 {
            return Ok(());
        }
        // The warden holds none of the run's files: no pipe of the agent's, nor the one
        // through which the server learns that the exec happened.
        if libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32) != 0 {
            for fd in 0..1024 {
                libc::close(fd);
            }
        }
        libc::signal(libc::SIGTERM, kill_run as extern "C" fn(libc::c_int) as libc::sighandler_t);
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
        // The server may have died before the line above, and then no signal comes.
        if libc::getppid() != server {
            kill_run(0);
        }
        let mut status = 0;
        while libc::waitpid(agent, &mut status, 0) < 0 {
            if *libc::__errno_location() != libc::EINTR {
                libc::_exit(127);
            }
        }
        if libc::WIFSIGNALED(status) {
            let signal = libc::WTERMSIG(status);
            libc::signal(signal, libc::SIG_DFL);
            libc::raise(signal);
            libc::_exit(128 + signal);
        }
        libc::_exit(libc::WEXITSTATUS(status))
    }
}

/// Runs `job` under `isolation` to its end: its process is fed the prompt, its output
/// read and its processes sampled until it exits, goes past a limit, times out or is
/// cancelled; then everything it left is stopped and its output read to the end.
async fn run(
    isolation: &Isolation,
    groups: Option<&Hierarchy>,
    job: Job,
    output: mpsc::Sender<Output>,
    mut cancel: watch::Receiver<bool>,
) -> Outcome {
    let status = job.workdir.with_extension("sandbox");
    let group = groups.and_then(|groups| run_group(groups, &job));
    let events = group.as_ref().map(RunGroup::events);
    let mut child = match start(isolation, &job, &status, group.as_ref()) {
        Ok(child) => child,
        Err(outcome) => return outcome,
    };
    // The helper, the sandbox's first process and whatever did not leave the group all
    // share the group; what left it dies with the sandbox's first process.
    let pgid = child.id().map(|id| id as i32).unwrap_or_default();
    // Should this future be dropped before its end (a panic, the runtime's shutdown), the
    // group goes with it: `kill_on_drop` alone would reach only its first process.
    let mut group = GroupKiller(pgid);
    let members = match isolation {
        Isolation::Sandbox(_) => Members::Sandbox(pgid),
        _ => Members::Group(pgid),
    };
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let prompt = job.prompt.clone();
    tokio::spawn(async move {
        stdin.write_all(prompt.as_bytes()).await.ok();
    });
    // Until the process ends, the readers wait for output as long as it takes; after, how
    // long they wait for more before they give up on a pipe that a process that escaped
    // the group holds open.
    let (ended, patience) = watch::channel(None);
    let budget = Arc::new(Budget {
        left: AtomicU64::new(job.max_output),
        over: AtomicBool::new(false),
        spent: Notify::new(),
    });
    let readers = read_pipes(&mut child, &output, patience, &budget);
    let (breach, mut breached) = oneshot::channel();
    let sampler = tokio::spawn(sample(
        members,
        events.clone(),
        job.workdir.clone(),
        job.sample_every,
        job.limits,
        output,
        breach,
    ));

    let outcome = tokio::select! {
        status = child.wait() => exit_outcome(status),
        _ = tokio::time::sleep(job.timeout) => Outcome::TimedOut,
        _ = budget.spent.notified() => Outcome::Failed(output_breach(job.max_output)),
        Ok(reason) = &mut breached => Outcome::Failed(reason),
        _ = cancel.wait_for(|cancelled| *cancelled) => Outcome::Cancelled,
    };
    // The run's processes end with it, the ones it left in the background too.
    kill_group(pgid);
    child.wait().await.ok();
    // Its leader reaped, the group's id may go to another process: not to be signalled.
    group.0 = 0;
    sampler.abort();
    let outcome = kernel_outcome(outcome, events.as_ref(), &job.limits);
    // Removing the group waits (a little) for its last processes to be gone.
    tokio::task::spawn_blocking(move || drop(group)).await.ok();
    let outcome = sandbox_outcome(isolation, outcome, &status, &job.limits);
    let outcome = workdir_outcome(outcome, &job).await;
    // What is left in the pipes is read to the end, however long storing it takes; only a
    // pipe that stays silent gives up, soon when the run was stopped, whose answer waits.
    let idle = if matches!(outcome, Outcome::Exited(_) | Outcome::Killed(_)) {
        Duration::from_secs(2)
    } else {
        Duration::from_millis(250)
    };
    ended.send_replace(Some(idle));
    for reader in readers {
        reader.await.ok();
    }
    // The process may have ended before its readers got to the end of its output.
    match outcome {
        Outcome::Exited(_) | Outcome::Killed(_) if budget.over.load(Ordering::Relaxed) => {
            Outcome::Failed(output_breach(job.max_output))
        }
        outcome => outcome,
    }
}

/// Starts the process of `job` in a process group of its own, its standard streams piped;
/// the outcome instead when it cannot start (or this host refuses runs).
fn start(
    isolation: &Isolation,
    job: &Job,
    status: &Path,
    group: Option<&RunGroup>,
) -> Result<tokio::process::Child, Outcome> {
    let mut command = match isolation {
        Isolation::Refused(reason) => return Err(Outcome::Failed(reason.clone())),
        Isolation::Sandbox(helper) => sandboxed(helper, job, status, group),
        Isolation::Unsandboxed => unsandboxed(job, group),
    };
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    command
        .spawn()
        .map_err(|error| Outcome::Failed(format!("could not start {}: {error}", job.command[0])))
}

/// Reads the standard output and error of `child` line by line into `output`, in tasks of
/// their own, until `patience` lets them stop.
fn read_pipes(
    child: &mut tokio::process::Child,
    output: &mpsc::Sender<Output>,
    patience: watch::Receiver<Option<Duration>>,
    budget: &Arc<Budget>,
) -> [tokio::task::JoinHandle<()>; 2] {
    [
        tokio::spawn(read_lines(
            child.stdout.take().expect("stdout is piped"),
            false,
            output.clone(),
            patience.clone(),
            budget.clone(),
        )),
        tokio::spawn(read_lines(
            child.stderr.take().expect("stderr is piped"),
            true,
            output.clone(),
            patience,
            budget.clone(),
        )),
    ]
}

/// How a process that ended with `status` ended: its exit code or the signal that
/// killed it.
fn exit_outcome(status: std::io::Result<std::process::ExitStatus>) -> Outcome {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => Outcome::Exited(code),
            (None, Some(signal)) => Outcome::Killed(signal),
            (None, None) => Outcome::Failed("the process ended without a status".into()),
        },
        Err(error) => Outcome::Failed(format!("waiting for the process failed: {error}")),
    }
}

/// The run's control group, named as its working directory: the kernel holds its
/// processes and threads to the run's limit, with room for the sandbox's helper and
/// hakoniwa's process (or the warden) besides, and its memory to the run's limit with
/// room for those two. Without one (an error, logged), the run is held by per-process
/// limits and the sampler, as on a host without control groups.
fn run_group(groups: &Hierarchy, job: &Job) -> Option<RunGroup> {
    let name = job.workdir.file_name()?.to_str()?;
    let tasks = job.limits.tasks.saturating_add(HELPERS);
    let memory = job.limits.memory_bytes.saturating_add(HELPERS_MEMORY);
    groups
        .make(name, tasks, memory)
        .inspect_err(|error| tracing::error!(%error, "could not make the run's control group"))
        .ok()
}

/// The processes of a run that are not the run's: the sandbox's helper and hakoniwa's
/// process, or an unsandboxed run's warden.
const HELPERS: u64 = 2;
/// The memory they may take besides the run's.
const HELPERS_MEMORY: u64 = 8 << 20;

/// The outcome of a run that ended with `outcome`, once its control group's events are
/// read: a process the kernel refused it, or one it killed for memory, is the run going
/// past that limit (it may have exited, a shell, or been killed, its first process).
fn kernel_outcome(outcome: Outcome, events: Option<&Events>, limits: &Limits) -> Outcome {
    match (events.and_then(Events::breach), outcome) {
        (Some(breach), Outcome::Exited(_) | Outcome::Killed(_)) => {
            Outcome::Failed(breach_reason(breach, limits))
        }
        (_, outcome) => outcome,
    }
}

fn breach_reason(breach: Breach, limits: &Limits) -> String {
    match breach {
        Breach::Memory => memory_breach(limits),
        Breach::Processes => processes_breach(limits),
    }
}

fn memory_breach(limits: &Limits) -> String {
    format!(
        "The run used more than its limit of {} MiB of memory (maxMemoryMib)",
        limits.memory_bytes >> 20
    )
}

fn processes_breach(limits: &Limits) -> String {
    format!(
        "The run had more than its limit of {} processes and threads (maxProcesses)",
        limits.tasks
    )
}

/// The outcome of a run whose process ended with `outcome`, with what its sandbox reported
/// in the file `status`: a sandbox that could not be set up, or a limit the kernel
/// enforced. Unsandboxed, or stopped before its end, `status` is only removed.
fn sandbox_outcome(
    isolation: &Isolation,
    outcome: Outcome,
    status: &Path,
    limits: &Limits,
) -> Outcome {
    match (isolation, outcome) {
        (Isolation::Sandbox(_), outcome @ (Outcome::Exited(_) | Outcome::Killed(_))) => {
            match sandbox::read_status(status) {
                Ok(()) => limit_signal(outcome, limits),
                Err(reason) => {
                    Outcome::Failed(format!("The run's sandbox could not be set up: {reason}"))
                }
            }
        }
        (_, outcome) => {
            std::fs::remove_file(status).ok();
            outcome
        }
    }
}

/// The outcome of a run that ended with `outcome`: one that ended well may still have been
/// stopped at its file size limit, or gone past a limit of its working directory, between
/// two samples.
async fn workdir_outcome(outcome: Outcome, job: &Job) -> Outcome {
    match outcome {
        Outcome::Exited(0) => {
            let workdir = job.workdir.clone();
            let limits = job.limits;
            let files = tokio::task::spawn_blocking(move || files_size(&workdir, &limits))
                .await
                .unwrap_or_default();
            files_breach(files, &job.limits).map_or(Outcome::Exited(0), Outcome::Failed)
        }
        outcome => outcome,
    }
}

fn output_breach(max_output: u64) -> String {
    format!("The run printed more than its limit of {max_output} bytes of output (maxOutputBytes)")
}

/// The kernel stops a process past its CPU time or file size limit with SIGXCPU or
/// SIGXFSZ; a shell whose command was stopped so exits with 128 and the signal's number.
/// Either is the run going past that limit.
fn limit_signal(outcome: Outcome, limits: &Limits) -> Outcome {
    let signal = match outcome {
        Outcome::Killed(signal) => signal,
        Outcome::Exited(code) if code > 128 => code - 128,
        _ => return outcome,
    };
    match signal {
        libc::SIGXCPU => Outcome::Failed(cpu_breach(limits)),
        libc::SIGXFSZ => Outcome::Failed(file_size_breach(limits)),
        _ => outcome,
    }
}

fn file_size_breach(limits: &Limits) -> String {
    format!(
        "The run wrote a file as large as its limit of {} MiB (maxFileSizeMib)",
        limits.file_size_bytes >> 20
    )
}

fn cpu_breach(limits: &Limits) -> String {
    format!(
        "The run used more than its limit of {} s of CPU time (maxCpuSeconds)",
        limits.cpu_seconds
    )
}

/// What is left of a job's output allowance, shared by its two pipes.
struct Budget {
    left: AtomicU64,
    /// Whether the job went past it.
    over: AtomicBool,
    /// Notified once the allowance is spent.
    spent: Notify,
}

impl Budget {
    /// Takes `bytes` from the allowance; false once it is spent.
    fn take(&self, bytes: u64) -> bool {
        let before = self
            .left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                Some(left.saturating_sub(bytes))
            })
            .expect("the closure always answers");
        if before < bytes {
            self.over.store(true, Ordering::Relaxed);
            self.spent.notify_one();
            return false;
        }
        true
    }
}

/// Sends the lines of `stream` until it ends, its output allowance is spent, or it stays
/// silent for the patience that `ended` gives once the process has ended. A line is kept
/// up to `MAX_LINE` bytes and the rest of it skipped, so no line grows the server's
/// memory. Sending waits for the recorder, with no deadline: output is never dropped for
/// being slow to store.
async fn read_lines(
    stream: impl AsyncRead + Unpin,
    stderr: bool,
    output: mpsc::Sender<Output>,
    mut ended: watch::Receiver<Option<Duration>>,
    budget: Arc<Budget>,
) {
    let mut reader = BufReader::with_capacity(64 * 1024, stream);
    let (mut line, mut cut) = (Vec::new(), false);
    loop {
        let patience = *ended.borrow();
        let filled = match patience {
            Some(idle) => tokio::time::timeout(idle, reader.fill_buf())
                .await
                .unwrap_or(Ok(&[]))
                .map(|b| b.len()),
            // `fill_buf` consumes nothing, so the process's end may interrupt it.
            None => tokio::select! {
                filled = reader.fill_buf() => filled.map(|b| b.len()),
                _ = ended.changed() => continue,
            },
        };
        let Ok(filled) = filled else { return };
        if filled == 0 {
            if !line.is_empty() || cut {
                send_line(&output, stderr, &mut line, &mut cut).await;
            }
            return;
        }
        let buffer = reader.buffer();
        let (taken, complete) = match buffer.iter().position(|b| *b == b'\n') {
            Some(end) => (end + 1, true),
            None => (buffer.len(), false),
        };
        let room = MAX_LINE.saturating_sub(line.len());
        line.extend_from_slice(&buffer[..taken.min(room)]);
        cut |= taken - usize::from(complete) > room;
        reader.consume(taken);
        if !budget.take(taken as u64 + if complete { LINE_COST } else { 0 }) {
            return;
        }
        if complete && !send_line(&output, stderr, &mut line, &mut cut).await {
            return;
        }
    }
}

/// Sends the line gathered so far, without its line ending, and starts the next; false
/// when nobody listens any more.
async fn send_line(
    output: &mpsc::Sender<Output>,
    stderr: bool,
    line: &mut Vec<u8>,
    cut: &mut bool,
) -> bool {
    while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        line.pop();
    }
    // Bytes that are not UTF-8, and NUL, which no store keeps alike (PostgreSQL refuses
    // it in text), become U+FFFD.
    let mut text = String::from_utf8_lossy(line).replace('\0', "\u{FFFD}");
    if std::mem::take(cut) {
        text.push_str(CUT);
    }
    line.clear();
    output.send(Output::Line { stderr, text }).await.is_ok()
}

/// The processes of a run, as the sampler finds them in `/proc`.
#[derive(Debug, Clone, Copy)]
enum Members {
    /// The process group of an unsandboxed run, led by its warden.
    Group(i32),
    /// A sandbox, by its helper's PID: the descendants of the sandbox's first process,
    /// the helper's grandchild (orphans of the sandbox are adopted by that first process,
    /// so nothing leaves the tree).
    Sandbox(i32),
}

/// What a run's processes use at one moment.
#[derive(Debug, Default, PartialEq)]
struct Usage {
    /// CPU ticks (user and system) of the live processes.
    ticks: u64,
    /// The same, with the ticks of the children they waited for: the run's CPU time so
    /// far, but for what processes that ended unwaited used.
    total_ticks: u64,
    /// Resident pages.
    pages: u64,
    /// Processes and threads.
    tasks: u64,
}

/// Samples the run's processes every `every` until aborted, and sends `breach` why the
/// run must stop as soon as its processes together go past one of `limits`.
async fn sample(
    members: Members,
    events: Option<Events>,
    workdir: PathBuf,
    every: Duration,
    limits: Limits,
    output: mpsc::Sender<Output>,
    breach: oneshot::Sender<String>,
) {
    // SAFETY: sysconf reads a constant of the system.
    let (ticks_per_second, page_size) = unsafe {
        (libc::sysconf(libc::_SC_CLK_TCK) as u64, libc::sysconf(libc::_SC_PAGESIZE) as u64)
    };
    let memory_total_mb =
        tokio::task::spawn_blocking(memory_total_kib).await.unwrap_or(0) as f64 / 1024.0;
    let (mut last_ticks, mut last_time) = (0u64, Instant::now());
    let mut breach = Some(breach);
    loop {
        tokio::time::sleep(every).await;
        // /proc and the working directory are read off the runtime's threads.
        let workdir = workdir.clone();
        let events = events.clone();
        let usage = tokio::task::spawn_blocking(move || {
            // The kernel's events first: they are what holds under a fork bomb.
            let held = events.as_ref().and_then(Events::breach);
            (held, usage(members), files_size(&workdir, &limits), disk_total(&workdir))
        })
        .await;
        let Ok((held, (usage, tmpfs_bytes), files, disk_total)) = usage else { return };
        let memory = usage.pages * page_size + tmpfs_bytes;
        let over = if let Some(held) = held {
            Some(breach_reason(held, &limits))
        } else if memory > limits.memory_bytes {
            Some(memory_breach(&limits))
        } else if usage.tasks > limits.tasks {
            Some(processes_breach(&limits))
        } else if usage.total_ticks > limits.cpu_seconds * ticks_per_second {
            Some(cpu_breach(&limits))
        } else {
            files_breach(files, &limits)
        };
        if let Some(reason) = over {
            if let Some(breach) = breach.take() {
                breach.send(reason).ok();
            }
        }
        let now = Instant::now();
        let seconds = now.duration_since(last_time).as_secs_f64().max(1e-3);
        let cpu_percent =
            usage.ticks.saturating_sub(last_ticks) as f64 / ticks_per_second as f64 / seconds
                * 100.0;
        (last_ticks, last_time) = (usage.ticks, now);
        let sample = MetricRow {
            timestamp: crate::ids::now(),
            cpu_percent: (cpu_percent * 10.0).round() / 10.0,
            memory_used_mb: memory as f64 / (1024.0 * 1024.0),
            memory_total_mb,
            disk_used_mb: files.space as f64 / (1024.0 * 1024.0),
            disk_total_mb: disk_total as f64 / (1024.0 * 1024.0),
        };
        if output.send(Output::Sample(sample)).await.is_err() {
            return;
        }
    }
}

/// One process, from `/proc/<pid>/stat`.
struct Stat {
    pid: i32,
    parent: i32,
    group: i32,
    usage: Usage,
}

fn read_stat(pid: i32) -> Option<Stat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name, which is in parentheses and may hold spaces,
    // from the state (field 3 of proc(5)) on.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    let ticks = field(14) + field(15);
    Some(Stat {
        pid,
        parent: field(4) as i32,
        group: field(5) as i32,
        usage: Usage {
            ticks,
            total_ticks: ticks + field(16) + field(17),
            tasks: field(20),
            pages: field(24),
        },
    })
}

/// What the run's processes use now, and the bytes in its sandbox's memory file systems.
fn usage(members: Members) -> (Usage, u64) {
    let Ok(entries) = std::fs::read_dir("/proc") else { return (Usage::default(), 0) };
    let stats: Vec<Stat> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter_map(read_stat)
        .collect();
    let mut tmpfs_bytes = 0;
    let chosen: Vec<&Stat> = match members {
        // The group's leader is the run's warden, a copy of the server that shares its
        // pages: not the run's.
        Members::Group(pgid) => stats.iter().filter(|s| s.group == pgid && s.pid != pgid).collect(),
        Members::Sandbox(helper) => {
            let mut children: HashMap<i32, Vec<&Stat>> = HashMap::new();
            for stat in &stats {
                children.entry(stat.parent).or_default().push(stat);
            }
            let of = |pid: i32| children.get(&pid).into_iter().flatten().copied();
            // The helper's child is hakoniwa's process, whose child is the sandbox's first.
            let mut tree: Vec<&Stat> = of(helper).flat_map(|s| of(s.pid)).collect();
            // Every process of the sandbox sees its mounts; the first is there longest.
            tmpfs_bytes = tree.first().map_or(0, |first| tmpfs_used(first.pid));
            let mut next = 0;
            while next < tree.len() {
                tree.extend(of(tree[next].pid));
                next += 1;
            }
            tree
        }
    };
    let usage = chosen.iter().fold(Usage::default(), |sum, s| Usage {
        ticks: sum.ticks + s.usage.ticks,
        total_ticks: sum.total_ticks + s.usage.total_ticks,
        pages: sum.pages + s.usage.pages,
        tasks: sum.tasks + s.usage.tasks,
    });
    (usage, tmpfs_bytes)
}

fn memory_total_kib() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// What the files of a run's working directory take.
#[derive(Debug, Default, Clone, Copy)]
struct Files {
    /// The space they take on disk, in bytes (a small file takes a block), or what storing
    /// them takes (a sparse file counts its every byte).
    space: u64,
    /// The bytes of the largest file.
    largest: u64,
    /// Files, folders and links.
    count: u64,
}

/// Adds up the files under `dir`, and stops once they go past `limits`: a run that makes
/// millions of files is not walked to the end at every sample.
fn files_size(dir: &Path, limits: &Limits) -> Files {
    use std::os::unix::fs::MetadataExt;
    let mut files = Files::default();
    // Folder by folder, each read whole before the next is opened: a deep tree holds one
    // directory open at a time, not one per level.
    let mut folders = vec![dir.to_path_buf()];
    while let Some(folder) = folders.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else { continue };
        for entry in entries.flatten() {
            if files.count > limits.files || files.space > limits.disk_bytes {
                return files;
            }
            let Ok(meta) = entry.metadata() else { continue };
            files.count += 1;
            // A sparse file takes few blocks here, but its checkpoint or artifact stores
            // every byte it reads as: it counts as the larger of the two.
            files.space += (meta.blocks() * 512).max(if meta.is_file() { meta.len() } else { 0 });
            if meta.is_dir() {
                folders.push(entry.path());
            } else if meta.is_file() {
                files.largest = files.largest.max(meta.len());
            }
        }
    }
    files
}

/// Why the run's working directory went past one of its limits, if it did. A file as
/// large as the file size limit is one whose writer the kernel stopped there (the writer
/// may have been told, but not the run).
fn files_breach(files: Files, limits: &Limits) -> Option<String> {
    if files.largest >= limits.file_size_bytes {
        Some(file_size_breach(limits))
    } else if files.space > limits.disk_bytes {
        Some(format!(
            "The run's working directory took more than its limit of {} MiB of disk (maxDiskMib)",
            limits.disk_bytes >> 20
        ))
    } else if files.count > limits.files {
        Some(format!(
            "The run's working directory held more than its limit of {} files and folders \
             (maxFiles)",
            limits.files
        ))
    } else {
        None
    }
}

/// The bytes held by the sandbox's memory file systems, seen through its first process.
fn tmpfs_used(first: i32) -> u64 {
    sandbox::TMPFS
        .iter()
        .map(|target| {
            statvfs(format!("/proc/{first}/root{target}"))
                .map_or(0, |s| s.f_blocks.saturating_sub(s.f_bfree) * s.f_frsize)
        })
        .sum()
}

fn statvfs(path: impl AsRef<Path>) -> Option<libc::statvfs> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_ref().as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs writes into the zeroed struct we own, from a NUL-terminated path.
    unsafe {
        let mut stat: libc::statvfs = std::mem::zeroed();
        (libc::statvfs(path.as_ptr(), &mut stat) == 0).then_some(stat)
    }
}

fn disk_total(dir: &Path) -> u64 {
    statvfs(dir).map_or(0, |stat| stat.f_blocks * stat.f_frsize)
}
