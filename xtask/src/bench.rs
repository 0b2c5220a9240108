//! `cargo xtask bench`: the server's benchmarks (`cargo bench -p vm0-server`: pagination
//! depth, GET /v1/agents against a bare axum baseline, a 100,000-line run, the server's
//! memory under hostile output and bodies, a 1 GiB transfer, GET /v1/agents and
//! createAgent on SQLite against PostgreSQL, three instances on PostgreSQL and S3 against
//! one), then the client's transfer benchmark: the release `push_pull` example pushes and
//! pulls a 1 GiB directory through a release server, and its peak resident memory comes
//! from `wait4`'s resource usage for that one process; a plain copy of the same bytes over
//! loopback is timed beside it.

use std::io::Write;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::process::{cargo, ReferenceServer};
use crate::spec::workspace_root;

/// The size of the client benchmark's file; `VM0_BENCH_BYTES` changes it.
fn bench_bytes() -> u64 {
    std::env::var("VM0_BENCH_BYTES").ok().and_then(|v| v.parse().ok()).unwrap_or(1 << 30)
}

/// Every benchmark, in release builds; their figures go to standard output.
pub fn run() -> Result<bool> {
    for name in ["pagination", "agents", "run_output", "hostile", "transfer", "streams"] {
        cargo(&["bench", "--quiet", "--locked", "-p", "vm0-server", "--bench", name])?;
    }
    // SQLite against PostgreSQL, on a throwaway cluster unless one is named.
    let _postgres = match std::env::var_os(crate::postgres::TEST_DATABASE_URL) {
        Some(_) => None,
        None => {
            let postgres = crate::postgres::Postgres::start()?;
            std::env::set_var(crate::postgres::TEST_DATABASE_URL, &postgres.url);
            Some(postgres)
        }
    };
    cargo(&["bench", "--quiet", "--locked", "-p", "vm0-server", "--bench", "backends"])?;
    // Three instances on that PostgreSQL and a throwaway S3 server.
    let s3 = crate::s3::S3::start()?;
    for (name, value) in s3.env() {
        std::env::set_var(name, value);
    }
    cargo(&["bench", "--quiet", "--locked", "-p", "vm0-server", "--bench", "cluster"])?;
    drop(s3);
    cargo(&[
        "build",
        "--quiet",
        "--release",
        "--locked",
        "-p",
        "vm0-server",
        "-p",
        "vm0-client",
        "--bin",
        "vm0-server",
        "--example",
        "push_pull",
    ])?;
    client_transfer()?;
    Ok(true)
}

fn client_transfer() -> Result<()> {
    let root = workspace_root();
    let work = root.join("target/bench-client");
    if work.exists() {
        std::fs::remove_dir_all(&work)?;
    }
    let (source, pulled, data) = (work.join("source"), work.join("pulled"), work.join("data"));
    std::fs::create_dir_all(&source)?;
    let size = bench_bytes();
    // One file of pseudo-random megabyte blocks.
    {
        let mut file = std::io::BufWriter::new(std::fs::File::create(source.join("big.bin"))?);
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut block = vec![0u8; 1 << 20];
        let mut left = size;
        while left > 0 {
            for chunk in block.chunks_mut(8) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
            }
            let n = left.min(block.len() as u64) as usize;
            file.write_all(&block[..n])?;
            left -= n as u64;
        }
    }

    let server = ReferenceServer::start(&root.join("target/release/vm0-server"), &data)?;

    let started = Instant::now();
    let client = Command::new(root.join("target/release/examples/push_pull"))
        .args(["bench"])
        .arg(&source)
        .arg(&pulled)
        .env("VM0_API_URL", &server.url)
        .env("VM0_TOKEN", &server.token)
        .spawn()
        .context("starting the push_pull example")?;
    let (status, peak_kib) = wait_with_peak_rss(client.id())?;
    let elapsed = started.elapsed();
    drop(server);
    if !status {
        bail!("the push_pull example failed");
    }
    let same = files_equal(&source.join("big.bin"), &pulled.join("big.bin"))?;

    // The same bytes through a plain copy over loopback.
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let address = listener.local_addr()?;
    let target = work.join("copied.bin");
    let receiver = std::thread::spawn(move || -> std::io::Result<u64> {
        let (mut socket, _) = listener.accept()?;
        std::io::copy(&mut socket, &mut std::fs::File::create(target)?)
    });
    let copy_started = Instant::now();
    let mut socket = std::net::TcpStream::connect(address)?;
    std::io::copy(&mut std::fs::File::open(source.join("big.bin"))?, &mut socket)?;
    drop(socket);
    receiver.join().expect("the receiver runs")?;
    let copy = copy_started.elapsed().as_secs_f64();
    std::fs::remove_dir_all(&work).ok();

    let mib = size as f64 / (1024.0 * 1024.0);
    println!(
        "client push and pull of {mib:.0} MiB: {:.2} s in all, pulled copy identical: {same}",
        elapsed.as_secs_f64()
    );
    println!("client peak RSS (push_pull example, release): {} MiB", peak_kib / 1024);
    println!(
        "plain copy over loopback (file to socket to file): {copy:.2} s, {:.0} MiB/s",
        mib / copy
    );
    Ok(())
}

/// Waits for the child `pid`; whether it succeeded, and its peak resident memory in KiB.
fn wait_with_peak_rss(pid: u32) -> Result<(bool, i64)> {
    let mut status = 0;
    // SAFETY: wait4 fills `status` and `usage`, both owned here, for our own child.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::wait4(pid as i32, &mut status, 0, &mut usage) < 0 {
            bail!("wait4 failed: {}", std::io::Error::last_os_error());
        }
        usage
    };
    Ok((libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, usage.ru_maxrss))
}

fn files_equal(a: &std::path::Path, b: &std::path::Path) -> Result<bool> {
    use std::io::Read;
    let (mut a, mut b) = (std::fs::File::open(a)?, std::fs::File::open(b)?);
    let (mut x, mut y) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = a.read(&mut x)?;
        if n == 0 {
            return Ok(b.read(&mut y)? == 0);
        }
        if b.read_exact(&mut y[..n]).is_err() || x[..n] != y[..n] {
            return Ok(false);
        }
    }
}
