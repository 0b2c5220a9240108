//! A TCP proxy that loses an answer on the way back, for the retry-safety tests of the
//! client and the CLI.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A TCP proxy to `upstream` that forwards everything both ways, except the answer to the
/// first request whose head starts with `request` (`"POST /v1/runs "`): that request
/// reaches the server, and its connection closes as the answer's first bytes come back,
/// the answer unsent (a timeout, a proxy's reset). Its base URL, and a flag that turns
/// true once that request has been seen.
pub async fn swallowing_answer(upstream: &str, request: &'static str) -> (String, Swallowed) {
    let upstream = upstream.trim_start_matches("http://").to_string();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let armed = Arc::new(AtomicBool::new(true));
    let swallowed = Swallowed(armed.clone());
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let server = tokio::net::TcpStream::connect(&upstream).await.unwrap();
            tokio::spawn(relay(client, server, request, armed.clone()));
        }
    });
    (url, swallowed)
}

/// Whether a proxy has lost the answer it was to lose.
pub struct Swallowed(Arc<AtomicBool>);

impl Swallowed {
    pub fn happened(&self) -> bool {
        !self.0.load(Ordering::SeqCst)
    }
}

/// Relays one connection; see [`swallowing_answer`].
async fn relay(
    client: tokio::net::TcpStream,
    server: tokio::net::TcpStream,
    request: &'static str,
    armed: Arc<AtomicBool>,
) {
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_server, mut to_server) = server.into_split();
    let swallow = Arc::new(AtomicBool::new(false));
    let watching = swallow.clone();
    let upward = tokio::spawn(async move {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let n = match from_client.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            // HTTP/1 sends one request at a time: a request's head starts a read here.
            if buffer[..n].starts_with(request.as_bytes()) && armed.swap(false, Ordering::SeqCst) {
                watching.store(true, Ordering::SeqCst);
            }
            if to_server.write_all(&buffer[..n]).await.is_err() {
                return;
            }
        }
    });
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = match from_server.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if swallow.load(Ordering::SeqCst) || to_client.write_all(&buffer[..n]).await.is_err() {
            break;
        }
    }
    upward.abort();
}
