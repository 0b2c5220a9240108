//! A 1 GiB file pushed to a volume and pulled back through the pre-signed URLs of the
//! release server binary: the server's peak resident memory (VmHWM) and the throughput,
//! beside a plain copy of the same bytes over loopback. Run with `cargo xtask bench` (or
//! `cargo bench -p vm0-server --bench transfer`). Set VM0_BENCH_BYTES to change the size.

#![allow(clippy::print_stdout)] // Printing is what this program is for.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use futures_util::StreamExt;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn mib_per_s(bytes: u64, seconds: f64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / seconds
}

#[tokio::main]
async fn main() {
    let size: u64 =
        std::env::var("VM0_BENCH_BYTES").ok().and_then(|v| v.parse().ok()).unwrap_or(1 << 30);
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("source.bin");
    let hash = write_source(&source, size);

    let (mut child, url, token) = start_server(&work.path().join("data"));
    let pid = child.id();
    let idle = peak_rss_kib(pid);
    let http = reqwest::Client::new();
    let (id, push) = push(&http, &url, &token, &source, size, &hash).await;
    let after_push = peak_rss_kib(pid);
    let pull = pull(&http, &url, &token, &id, &work.path().join("pulled.bin"), size, &hash).await;
    let after_pull = peak_rss_kib(pid);
    child.kill().ok();
    child.wait().ok();
    let copy = plain_copy(&source, &work.path().join("copied.bin"), size);

    let mib = size as f64 / (1024.0 * 1024.0);
    println!("file: {mib:.0} MiB, sha256 {hash}");
    println!(
        "server peak RSS: {} MiB idle, {} MiB after the push, {} MiB after the pull",
        idle / 1024,
        after_push / 1024,
        after_pull / 1024
    );
    println!(
        "push (PUT to the pre-signed URL, hashed and synced): {push:.2} s, {:.0} MiB/s",
        mib_per_s(size, push)
    );
    println!(
        "pull (GET from the pre-signed URL, hashed, to disk): {pull:.2} s, {:.0} MiB/s",
        mib_per_s(size, pull)
    );
    println!(
        "plain copy over loopback (file to socket to file): {copy:.2} s, {:.0} MiB/s",
        mib_per_s(size, copy)
    );
}

/// Writes `size` pseudo-random bytes to `path`, hashed as they are written; their SHA-256.
fn write_source(path: &Path, size: u64) -> String {
    let mut hasher = Sha256::new();
    {
        let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
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
            hasher.update(&block[..n]);
            file.write_all(&block[..n]).unwrap();
            left -= n as u64;
        }
    }
    hex::encode(hasher.finalize())
}

/// The release server binary over `data`, its URL and the first user's token.
fn start_server(data: &Path) -> (Child, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vm0-server"))
        .args(["--listen", "127.0.0.1:0", "--log", "warn", "--data-dir"])
        .arg(data)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines().map_while(Result::ok);
    let url = lines.next().unwrap().trim_start_matches("vm0-server listening on ").to_string();
    let token = lines
        .find_map(|l| l.split_whitespace().find(|w| w.starts_with("vm0_live_")).map(str::to_string))
        .unwrap();
    std::thread::spawn(move || lines.for_each(drop));
    (child, url, token)
}

/// `source` pushed to a new volume through its pre-signed URL: the volume, and the
/// seconds the upload took.
async fn push(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    source: &Path,
    size: u64,
    hash: &str,
) -> (String, f64) {
    let api = |method: reqwest::Method, path: &str, body: Value| {
        http.request(method, format!("{url}{path}")).bearer_auth(token).json(&body).send()
    };
    let volume: Value = api(reqwest::Method::POST, "/v1/volumes", json!({"name": "bench"}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = volume["id"].as_str().unwrap().to_string();
    let files = json!({"files": [{"path": "big.bin", "size": size, "hash": hash}]});
    let prepared: Value = api(reqwest::Method::POST, &format!("/v1/volumes/{id}/upload"), files)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    let started = Instant::now();
    let file = tokio::fs::File::open(source).await.unwrap();
    let body =
        reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024));
    let put = http
        .put(prepared["files"][0]["uploadUrl"].as_str().unwrap())
        .header("content-length", size)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 204, "{}", put.text().await.unwrap());
    let push = started.elapsed().as_secs_f64();
    let committed = api(
        reqwest::Method::POST,
        &format!("/v1/volumes/{id}/commit"),
        json!({"uploadSessionId": prepared["uploadSessionId"]}),
    )
    .await
    .unwrap();
    assert_eq!(committed.status(), 200);
    (id, push)
}

/// The volume `id`'s file pulled through its pre-signed URL into `target`, checked
/// against `size` and `hash`: the seconds it took.
async fn pull(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    id: &str,
    target: &Path,
    size: u64,
    hash: &str,
) -> f64 {
    let download: Value = http
        .get(format!("{url}/v1/volumes/{id}/download"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let started = Instant::now();
    let response =
        http.get(download["files"][0]["downloadUrl"].as_str().unwrap()).send().await.unwrap();
    let mut stream = response.bytes_stream();
    let (mut hasher, mut received) = (Sha256::new(), 0u64);
    let mut sink = tokio::fs::File::create(target).await.unwrap();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        received += chunk.len() as u64;
        hasher.update(&chunk);
        sink.write_all(&chunk).await.unwrap();
    }
    let pull = started.elapsed().as_secs_f64();
    assert_eq!((received, hex::encode(hasher.finalize())), (size, hash.to_string()));
    pull
}

/// The same bytes through a plain copy over loopback (a TCP socket, file to file): the
/// seconds it took.
fn plain_copy(source: &Path, target: &Path, size: u64) -> f64 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let target = target.to_path_buf();
    let receiver = std::thread::spawn(move || {
        let (mut socket, _) = listener.accept().unwrap();
        std::io::copy(&mut socket, &mut std::fs::File::create(target).unwrap()).unwrap()
    });
    let started = Instant::now();
    let mut socket = std::net::TcpStream::connect(address).unwrap();
    std::io::copy(&mut std::fs::File::open(source).unwrap(), &mut socket).unwrap();
    drop(socket);
    assert_eq!(receiver.join().unwrap(), size);
    started.elapsed().as_secs_f64()
}
