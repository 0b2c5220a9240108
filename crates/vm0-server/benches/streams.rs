//! Many open event streams on one run of one reference server (the release binary, in a
//! process of its own so that its memory is its alone): the server's resident memory per
//! idle stream, and the delivery latency of each output line to every subscriber, from the
//! moment the agent wrote it (the line is the agent's clock in nanoseconds) to the moment
//! the subscriber read it. `VM0_BENCH_STREAMS` sets how many (default 10,000);
//! `VM0_BENCH_SERVER` names another vm0-server binary to measure (a baseline's). Run with
//! `cargo xtask bench` (or `cargo bench -p vm0-server --bench streams`).

#![allow(clippy::print_stdout)] // Printing is what this program is for.

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long the agent stays silent first: the streams open and sit idle meanwhile.
const SILENT_SECS: u64 = 20;
/// How long the latencies are gathered, once the agent prints.
const MEASURED: Duration = Duration::from_secs(5);

/// The release server, killed when dropped.
struct Server {
    child: Child,
    url: String,
    token: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// Starts the server over `data`, serving `streams` connections and a few more.
fn start(data: &std::path::Path, streams: usize) -> Server {
    let connections = (streams + 64).to_string();
    // Another build of the server, to compare it with this one under the same subscribers.
    let binary = std::env::var("VM0_BENCH_SERVER").ok().filter(|path| !path.is_empty());
    let binary = binary.unwrap_or_else(|| env!("CARGO_BIN_EXE_vm0-server").to_string());
    let mut child = Command::new(binary)
        .args(["--listen", "127.0.0.1:0", "--log", "warn", "--rate-limit", "0"])
        .args(["--max-connections", &connections])
        .args(["--unsandboxed-runs", "--data-dir"])
        .arg(data)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut url, mut token) = (String::new(), String::new());
    for line in lines.by_ref().map_while(Result::ok) {
        if let Some(rest) = line.strip_prefix("vm0-server listening on ") {
            url = rest.trim().to_string();
        }
        if let Some(found) = line.split_whitespace().find(|w| w.starts_with("vm0_live_")) {
            token = found.trim_matches('"').to_string();
            break;
        }
    }
    std::thread::spawn(move || lines.for_each(drop));
    Server { child, url, token }
}

/// The server's resident memory, in KiB.
fn resident_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn now_ns() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos()
}

/// Raises this process's open-file limit to its hard limit: each stream is a socket.
fn raise_file_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit read and write the one struct given.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
}

/// One subscriber: sends `request` to `address`, reads the run's events, and once
/// `measuring` is set records each output line's latency in `latencies`. HTTP by hand on a
/// socket, a task and a read for each message: the subscribers share the machine's two
/// cores with the server, and a full client's connection task and body channel doubled
/// what each message cost them.
async fn subscribe(
    address: String,
    request: Arc<[u8]>,
    opened: Arc<tokio::sync::Semaphore>,
    measuring: Arc<std::sync::atomic::AtomicBool>,
    latencies: Arc<Mutex<Vec<f64>>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(&address).await.unwrap();
    socket.set_nodelay(true).unwrap();
    socket.write_all(&request).await.unwrap();
    let (mut pending, mut buffer, mut head) = (Vec::new(), vec![0u8; 4096], true);
    let mut mine = Vec::new();
    loop {
        let n = socket.read(&mut buffer).await.unwrap();
        if n == 0 {
            break;
        }
        let read = now_ns();
        pending.extend_from_slice(&buffer[..n]);
        if head {
            let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
            assert!(pending.starts_with(b"HTTP/1.1 200 "), "{}", String::from_utf8_lossy(&pending));
            pending.drain(..end + 4);
            head = false;
            opened.add_permits(1);
        }
        // Each message is one chunk of the chunked body: the chunks' sizes and line ends
        // fall between messages, where they change nothing that is read here.
        while let Some(end) = pending.windows(2).position(|w| w == b"\n\n") {
            if let Some(written) = clock_of(&pending[..end]) {
                if measuring.load(std::sync::atomic::Ordering::Relaxed) {
                    mine.push(read.saturating_sub(written) as f64 / 1e6);
                }
            }
            pending.drain(..end + 2);
        }
    }
    latencies.lock().unwrap().extend(mine);
}

/// How long the subscribers' thread sleeps between two looks at their sockets.
const PACE: Duration = Duration::from_micros(500);

/// Makes the subscribers look at their sockets every `PACE`, all that arrived meanwhile at
/// once, rather than wait in `epoll_wait` for each: a write to a loopback socket whose
/// reader waits there wakes the reader's thread from the writer's system call, a cost
/// that subscribers on other machines would not add to the server. The thread sleeps
/// outside the runtime, and the yield lets the runtime look at every socket without
/// waiting before this runs again. A delivery's delay counts the pause (at most `PACE`).
async fn pace() {
    loop {
        std::thread::sleep(PACE);
        tokio::task::yield_now().await;
    }
}

/// The agent's clock an output message carries, in nanoseconds: its content's digits. Read
/// by hand rather than as JSON, since the subscribers share the machine with the server.
fn clock_of(message: &[u8]) -> Option<u128> {
    let message = std::str::from_utf8(message).unwrap();
    if !message.contains("\nevent: output\n") {
        return None;
    }
    let content = &message[message.find("\"content\":\"")? + 11..];
    let digits = content.find(|c: char| !c.is_ascii_digit()).unwrap_or(content.len());
    Some(content[..digits].parse().unwrap())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    raise_file_limit();
    let streams: usize =
        std::env::var("VM0_BENCH_STREAMS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let data = tempfile::tempdir().unwrap();
    let server = start(data.path(), streams);
    let http = reqwest::Client::new();
    let id = start_clock(&http, &server).await;
    // Settled: the run started, the first connections' memory taken.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = resident_kib(server.child.id());

    let opened = Arc::new(tokio::sync::Semaphore::new(0));
    let measuring = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    let address = server.url.trim_start_matches("http://").to_string();
    let request: Arc<[u8]> = format!(
        "GET /v1/runs/{id}/events HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {}\r\n\
         Accept: text/event-stream\r\nConnection: close\r\n\r\n",
        server.token
    )
    .into_bytes()
    .into();
    let batch = std::env::var("VM0_BENCH_BATCH").ok().and_then(|v| v.parse().ok());
    let batch: usize = batch.filter(|&batch| batch > 0).unwrap_or(streams);
    // Each batch is open before the next starts opening.
    let mut open_so_far = 0;
    for count in 1..=streams {
        let (open, measuring, latencies) = (opened.clone(), measuring.clone(), latencies.clone());
        let task = subscribe(address.clone(), request.clone(), open, measuring, latencies);
        tasks.push(tokio::spawn(task));
        if count % batch == 0 || count == streams {
            opened.acquire_many((count - open_so_far) as u32).await.unwrap().forget();
            open_so_far = count;
        }
    }
    let opening = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = resident_kib(server.child.id());
    let per_stream = (idle.saturating_sub(before)) as f64 / streams as f64;
    println!(
        "{streams} event streams opened in {:.1} s; the server's resident memory {before} KiB \
         before, {idle} KiB with them idle: {per_stream:.1} KiB per idle stream",
        opening.as_secs_f64()
    );
    assert!(
        started.elapsed() < Duration::from_secs(SILENT_SECS - 5),
        "the streams took too long to open: the agent may have printed before all were idle"
    );
    // Until the agent prints, then a while of its lines.
    let silent_until = started + Duration::from_secs(SILENT_SECS);
    tokio::time::sleep_until(silent_until.into()).await;
    let pacer = tokio::spawn(pace());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (server_before, own_before) = (cpu_ticks(server.child.id()), cpu_ticks(std::process::id()));
    measuring.store(true, std::sync::atomic::Ordering::Relaxed);
    tokio::time::sleep(MEASURED).await;
    measuring.store(false, std::sync::atomic::Ordering::Relaxed);
    pacer.abort();
    let (server_after, own_after) = (cpu_ticks(server.child.id()), cpu_ticks(std::process::id()));
    let cancelled = http
        .post(format!("{}/v1/runs/{id}/cancel", server.url))
        .bearer_auth(&server.token)
        .send()
        .await
        .unwrap();
    assert_eq!(cancelled.status(), 200);
    for task in tasks {
        task.await.unwrap();
    }
    let mut all = std::mem::take(&mut *latencies.lock().unwrap());
    all.sort_by(f64::total_cmp);
    assert!(!all.is_empty(), "no output line reached a subscriber while measuring");
    println!(
        "delivery of each output line to each of {streams} subscribers, from the agent's \
         write to the subscriber's read, over {} s ({} deliveries): fastest {:.1} ms, median \
         {:.1} ms, p99 {:.1} ms, slowest {:.1} ms",
        MEASURED.as_secs(),
        all.len(),
        all[0],
        percentile(&all, 0.5),
        percentile(&all, 0.99),
        all[all.len() - 1]
    );
    print_cpu((server_before, server_after), (own_before, own_after), all.len());
}

/// A process's CPU time so far, in clock ticks: in user space, and in the kernel.
fn cpu_ticks(pid: u32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command's name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    (fields[11].parse().unwrap(), fields[12].parse().unwrap())
}

/// Creates the agent that prints its clock after a silence, and runs it: the run's id.
async fn start_clock(http: &reqwest::Client, server: &Server) -> String {
    let script = format!("sleep {SILENT_SECS}; while :; do date +%s%N; sleep 0.2; done");
    let agent = serde_json::json!({"name": "clock", "config": {"command": ["sh", "-c", script]}});
    let created = http
        .post(format!("{}/v1/agents", server.url))
        .bearer_auth(&server.token)
        .json(&agent)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let run: serde_json::Value = http
        .post(format!("{}/v1/runs", server.url))
        .bearer_auth(&server.token)
        .json(&serde_json::json!({"agent": "clock", "prompt": "go"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    run["id"].as_str().unwrap().to_string()
}

/// The CPU time of the server and of the subscribers between two readings (user, kernel),
/// over `deliveries`.
fn print_cpu(server: ((u64, u64), (u64, u64)), own: ((u64, u64), (u64, u64)), deliveries: usize) {
    // Where the time goes: the cores are shared, and a write to a loopback socket also runs
    // the receiving side's TCP in the writer's system call.
    // SAFETY: sysconf reads a constant of the system.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let ms = |ticks: u64| ticks as f64 * 1000.0 / ticks_per_second;
    let (user, kernel) = (server.1 .0 - server.0 .0, server.1 .1 - server.0 .1);
    let own = (own.1 .0 + own.1 .1) - (own.0 .0 + own.0 .1);
    let per = |ticks: u64| ms(ticks) * 1000.0 / deliveries as f64;
    println!(
        "CPU meanwhile: the server {:.0} ms ({:.0} ms in the kernel), {:.1} µs a delivery \
         ({:.1} µs in the kernel); the subscribers {:.0} ms, {:.1} µs a delivery; {} cores",
        ms(user + kernel),
        ms(kernel),
        per(user + kernel),
        per(kernel),
        ms(own),
        per(own),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
}
