//! The executor interface, and the local-process executor: the agent's command runs as a
//! process group of its own in the session's working directory, with a clean
//! environment; its output is read line by line, its process tree sampled from `/proc`,
//! and a timeout or a cancel kills the whole group. A sandboxed backend (microVMs,
//! containers) implements the same `Executor`.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, watch, Notify};

use crate::store::MetricRow;

/// One execution of an agent.
pub struct Job {
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
}

/// The longest line kept whole; a longer one is cut there and the cut marked.
const MAX_LINE: usize = 64 * 1024;
/// What ends a line that was cut.
const CUT: &str = " [line cut at 64 KiB]";

/// What a job produces while it runs.
pub enum Output {
    /// One line of standard output or error, without its line ending.
    Line {
        stderr: bool,
        text: String,
    },
    Sample(MetricRow),
}

/// How a job ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Exited(i32),
    Killed(i32),
    TimedOut,
    Cancelled,
    /// It could not run at all.
    Failed(String),
}

/// Runs jobs. `cancel` becomes true when the run is cancelled.
pub trait Executor: Send + Sync + 'static {
    fn execute(&self, job: Job, output: mpsc::Sender<Output>, cancel: watch::Receiver<bool>) -> Pin<Box<dyn Future<Output = Outcome> + Send + '_>>;
}

/// The default executor: a local process group.
pub(crate) struct LocalExecutor;

impl Executor for LocalExecutor {
    fn execute(&self, job: Job, output: mpsc::Sender<Output>, cancel: watch::Receiver<bool>) -> Pin<Box<dyn Future<Output = Outcome> + Send + '_>> {
        Box::pin(run(job, output, cancel))
    }
}

fn kill_group(pgid: i32) {
    // SAFETY: kill(2) with a negative pid signals the process group; it touches no memory.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}

async fn run(job: Job, output: mpsc::Sender<Output>, mut cancel: watch::Receiver<bool>) -> Outcome {
    let mut command = tokio::process::Command::new(&job.command[0]);
    command
        .args(&job.command[1..])
        .current_dir(&job.workdir)
        .env_clear()
        .envs(job.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) => return Outcome::Failed(format!("could not start {}: {error}", job.command[0])),
    };
    let pgid = child.id().map(|id| id as i32).unwrap_or_default();
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let prompt = job.prompt.clone();
    tokio::spawn(async move {
        stdin.write_all(prompt.as_bytes()).await.ok();
    });
    // Until the process ends, the readers wait for output as long as it takes; after, how
    // long they wait for more before they give up on a pipe that a process that escaped
    // the group holds open.
    let (ended, patience) = watch::channel(None);
    let budget = Arc::new(Budget { left: AtomicU64::new(job.max_output), spent: Notify::new() });
    let readers = [
        tokio::spawn(read_lines(child.stdout.take().expect("stdout is piped"), false, output.clone(), patience.clone(), budget.clone())),
        tokio::spawn(read_lines(child.stderr.take().expect("stderr is piped"), true, output.clone(), patience, budget.clone())),
    ];
    let sampler = tokio::spawn(sample(pgid, job.workdir.clone(), job.sample_every, output));

    let outcome = tokio::select! {
        status = child.wait() => match status {
            Ok(status) => match (status.code(), std::os::unix::process::ExitStatusExt::signal(&status)) {
                (Some(code), _) => Outcome::Exited(code),
                (None, Some(signal)) => Outcome::Killed(signal),
                (None, None) => Outcome::Failed("the process ended without a status".into()),
            },
            Err(error) => Outcome::Failed(format!("waiting for the process failed: {error}")),
        },
        _ = tokio::time::sleep(job.timeout) => Outcome::TimedOut,
        _ = budget.spent.notified() => Outcome::Failed(format!("The run printed more than its limit of {} bytes of output (maxOutputBytes)", job.max_output)),
        _ = cancel.wait_for(|cancelled| *cancelled) => Outcome::Cancelled,
    };
    // The run's processes end with it, the ones it left in the background too.
    kill_group(pgid);
    child.wait().await.ok();
    sampler.abort();
    // What is left in the pipes is read to the end, however long storing it takes; only a
    // pipe that stays silent gives up, soon when the run was stopped, whose answer waits.
    let idle = if matches!(outcome, Outcome::Exited(_) | Outcome::Killed(_)) { Duration::from_secs(2) } else { Duration::from_millis(250) };
    ended.send_replace(Some(idle));
    for reader in readers {
        reader.await.ok();
    }
    outcome
}

/// What is left of a job's output allowance, shared by its two pipes.
struct Budget {
    left: AtomicU64,
    /// Notified once the allowance is spent.
    spent: Notify,
}

impl Budget {
    /// Takes `bytes` from the allowance; false once it is spent.
    fn take(&self, bytes: u64) -> bool {
        let before = self.left.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| Some(left.saturating_sub(bytes))).expect("the closure always answers");
        if before < bytes {
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
            Some(idle) => tokio::time::timeout(idle, reader.fill_buf()).await.unwrap_or(Ok(&[])).map(|b| b.len()),
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
        if !budget.take(taken as u64) {
            return;
        }
        if complete && !send_line(&output, stderr, &mut line, &mut cut).await {
            return;
        }
    }
}

/// Sends the line gathered so far, without its line ending, and starts the next; false
/// when nobody listens any more.
async fn send_line(output: &mpsc::Sender<Output>, stderr: bool, line: &mut Vec<u8>, cut: &mut bool) -> bool {
    while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        line.pop();
    }
    let mut text = String::from_utf8_lossy(line).into_owned();
    if std::mem::take(cut) {
        text.push_str(CUT);
    }
    line.clear();
    output.send(Output::Line { stderr, text }).await.is_ok()
}

/// Samples the process group every `every` until aborted.
async fn sample(pgid: i32, workdir: PathBuf, every: Duration, output: mpsc::Sender<Output>) {
    // SAFETY: sysconf reads a constant of the system.
    let (ticks_per_second, page_size) = unsafe { (libc::sysconf(libc::_SC_CLK_TCK) as f64, libc::sysconf(libc::_SC_PAGESIZE) as f64) };
    let memory_total_mb = tokio::task::spawn_blocking(memory_total_kib).await.unwrap_or(0) as f64 / 1024.0;
    let (mut last_ticks, mut last_time) = (0u64, Instant::now());
    loop {
        tokio::time::sleep(every).await;
        // /proc and the working directory are read off the runtime's threads.
        let workdir = workdir.clone();
        let usage = tokio::task::spawn_blocking(move || (group_usage(pgid), dir_size(&workdir), disk_total(&workdir))).await;
        let Ok(((ticks, rss_pages), disk_used, disk_total)) = usage else { return };
        let now = Instant::now();
        let seconds = now.duration_since(last_time).as_secs_f64().max(1e-3);
        let cpu_percent = ticks.saturating_sub(last_ticks) as f64 / ticks_per_second / seconds * 100.0;
        (last_ticks, last_time) = (ticks, now);
        let sample = MetricRow {
            timestamp: crate::ids::now(),
            cpu_percent: (cpu_percent * 10.0).round() / 10.0,
            memory_used_mb: rss_pages * page_size / (1024.0 * 1024.0),
            memory_total_mb,
            disk_used_mb: disk_used as f64 / (1024.0 * 1024.0),
            disk_total_mb: disk_total as f64 / (1024.0 * 1024.0),
        };
        if output.send(Output::Sample(sample)).await.is_err() {
            return;
        }
    }
}

/// CPU ticks (user and system) and resident pages of every process in the group.
fn group_usage(pgid: i32) -> (u64, f64) {
    let (mut ticks, mut pages) = (0u64, 0f64);
    let Ok(entries) = std::fs::read_dir("/proc") else { return (0, 0.0) };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // Fields after the command name, which is in parentheses and may hold spaces.
        let Some(rest) = stat.rsplit_once(')').map(|(_, rest)| rest) else { continue };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.get(2).and_then(|f| f.parse::<i32>().ok()) != Some(pgid) {
            continue;
        }
        let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
        ticks += field(11) + field(12);
        pages += field(21) as f64;
    }
    (ticks, pages)
}

fn memory_total_kib() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    meminfo.lines().find(|l| l.starts_with("MemTotal:")).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// The bytes of the files under `dir`.
pub(crate) fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(kind) if kind.is_dir() => dir_size(&entry.path()),
            Ok(kind) if kind.is_file() => entry.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

fn disk_total(dir: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else { return 0 };
    // SAFETY: statvfs writes into the zeroed struct we own, from a NUL-terminated path.
    unsafe {
        let mut stat: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(path.as_ptr(), &mut stat) != 0 {
            return 0;
        }
        stat.f_blocks as u64 * stat.f_frsize as u64
    }
}
