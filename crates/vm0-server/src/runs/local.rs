//! The executor interface, and the local-process executor: the agent's command runs as a
//! process group of its own in the session's working directory, with a clean
//! environment; its output is read line by line, its process tree sampled from `/proc`,
//! and a timeout or a cancel kills the whole group. A sandboxed backend (microVMs,
//! containers) implements the same `Executor`.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, watch};

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
}

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
    let readers = [
        tokio::spawn(read_lines(child.stdout.take().expect("stdout is piped"), false, output.clone(), patience.clone())),
        tokio::spawn(read_lines(child.stderr.take().expect("stderr is piped"), true, output.clone(), patience)),
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

/// Sends the lines of `stream` until it ends, or until it stays silent for the patience
/// that `ended` gives once the process has ended. Sending waits for the recorder, with no
/// deadline: output is never dropped for being slow to store.
async fn read_lines(stream: impl AsyncRead + Unpin, stderr: bool, output: mpsc::Sender<Output>, mut ended: watch::Receiver<Option<Duration>>) {
    let mut reader = BufReader::with_capacity(64 * 1024, stream);
    let mut line = Vec::new();
    loop {
        let patience = *ended.borrow();
        let read = match patience {
            Some(idle) => tokio::time::timeout(idle, reader.read_until(b'\n', &mut line)).await.unwrap_or(Ok(0)),
            // `read_until` keeps what it read in `line` when the process's end interrupts it.
            None => tokio::select! {
                read = reader.read_until(b'\n', &mut line) => read,
                _ = ended.changed() => continue,
            },
        };
        match read {
            Ok(0) | Err(_) => {
                if !line.is_empty() {
                    output.send(Output::Line { stderr, text: String::from_utf8_lossy(&line).into_owned() }).await.ok();
                }
                return;
            }
            Ok(_) => {
                while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    line.pop();
                }
                let text = String::from_utf8_lossy(&line).into_owned();
                line.clear();
                if output.send(Output::Line { stderr, text }).await.is_err() {
                    return;
                }
            }
        }
    }
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
