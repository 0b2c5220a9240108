//! The server's connections: accepted up to a cap, each under timeouts for every stage
//! (its request headers, the pauses inside a request body, its idle time between
//! requests), so that no client, with a token or without, holds connections and file
//! descriptors open for nothing; and the process's file-descriptor limit raised to what
//! the host allows, so that the cap is what decides.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use vm0_api::ApiError;

/// The most header lines hyper parses. hyper answers a request past its own limit with a
/// bare 431 before any service sees it; a higher one lets the router refuse the request
/// at the API's limit (`vm0_api::MAX_HEADERS`) in the error envelope, with its request id.
const PARSED_HEADERS: usize = 1024;
/// File descriptors kept beside the connections: the database's, the blobs', the runs'.
const OTHER_FILES: u64 = 512;

/// How long each stage of a connection may take, and how many are served at once.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnectionLimits {
    pub timeout: Duration,
    pub max: usize,
}

/// The limits `timeout` and `max`, with the file-descriptor limit raised to its hard limit
/// and `max` lowered, saying so, when even that leaves too few for it.
pub(crate) fn limits(timeout: Duration, max: usize) -> ConnectionLimits {
    let files = raise_file_limit();
    let room = files.saturating_sub(OTHER_FILES).max(1) as usize;
    if max > room {
        tracing::warn!(
            max_connections = max,
            file_limit = files,
            served = room,
            "the file-descriptor limit leaves room for fewer connections than --max-connections"
        );
    }
    ConnectionLimits { timeout, max: max.min(room) }
}

/// Raises the soft limit on open files to the hard one; the soft limit now.
fn raise_file_limit() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit read and write the one struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    limit.rlim_cur
}

/// Serves `routes` on `listener` until `shutdown` completes; then closes the listener
/// and returns the connections, whose `shutdown` lets them finish the requests in
/// flight. axum's own `serve`, but with `PARSED_HEADERS` and `limits`.
pub(crate) async fn accept(
    listener: TcpListener,
    routes: Router,
    shutdown: impl std::future::Future<Output = ()>,
    limits: ConnectionLimits,
) -> hyper_util::server::graceful::GracefulShutdown {
    // HTTP/1 only: the automatic choice of version reads a connection's first bytes with
    // no timeout at all, so a connection that never sends one would stay open forever.
    // (Behind a proxy that speaks HTTP/2 to clients, as in deploy/, nothing changes.) And
    // hyper's own HTTP/1 server rather than hyper-util's automatic one told to speak only
    // HTTP/1, which still reads the first 24 bytes on their own to look for HTTP/2's
    // preface: hyper's read buffer then grows to 16 KiB at the next read and keeps it for
    // the connection's life, twice what an idle event stream needs (BENCHMARKS.md).
    let mut builder = hyper::server::conn::http1::Builder::new();
    // The header timeout runs from a connection's start and again whenever it waits for
    // its next request, so it also ends idle keep-alive connections.
    builder
        .max_headers(PARSED_HEADERS)
        .timer(TokioTimer::new())
        .header_read_timeout(limits.timeout);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max));
    let mut shutdown = std::pin::pin!(shutdown);
    // Cancelled when the loop ends: connections that have sent nothing yet are dropped.
    let stopping = tokio_util::sync::CancellationToken::new();
    loop {
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                tracing::warn!(
                    max_connections = limits.max,
                    "the connection cap is reached: new connections wait until one closes \
                     (--max-connections)"
                );
                tokio::select! {
                    slot = slots.clone().acquire_owned() => slot.expect("never closed"),
                    _ = &mut shutdown => break,
                }
            }
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Out of file descriptors, say: wait a moment rather than spin.
                Err(error) => {
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        // An event stream writes small frames one after another: without this, Nagle's
        // algorithm holds each behind the client's delayed acknowledgement of the one
        // before, some 40 ms a frame.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::warn!(%error, "could not set TCP_NODELAY on a connection");
        }
        let service = hyper_util::service::TowerToHyperService::new(routes.clone());
        let (builder, watcher, stopping) = (builder.clone(), graceful.watcher(), stopping.clone());
        tokio::spawn(async move {
            // hyper's header timeout starts with a request's first byte: a connection that
            // never sends one is closed here, and at once when the server stops accepting
            // (the drain waits for every watcher, this one's too).
            let head = tokio::select! {
                head = tokio::time::timeout(limits.timeout, first_head(&stream)) => head,
                _ = stopping.cancelled() => return,
            };
            match head {
                Ok(Ok(None)) => {
                    let connection = builder.serve_connection(TokioIo::new(stream), service);
                    watcher.watch(connection).await.ok();
                }
                Ok(Ok(Some(error))) => refuse(stream, error).await,
                _ => {}
            }
            drop(slot);
        });
    }
    drop(listener);
    stopping.cancel();
    graceful
}

/// The most bytes of a connection's first request head that are checked before hyper reads
/// it; a longer head goes to hyper as it is, which answers past its own limit with a bare
/// 431.
const CHECKED_HEAD: usize = 16 * 1024;
/// The bytes looked at first, which hold most heads: a connection that sends a longer
/// one gets a look at `CHECKED_HEAD` bytes. Ten thousand streams opened at once would
/// otherwise each take 16 KiB for that moment, which the allocator keeps (BENCHMARKS.md).
const FIRST_LOOK: usize = 2 * 1024;

/// Waits for the connection's first request head, without reading it (hyper reads it next,
/// from the socket), and answers why it is malformed, if it is: hyper answers a head it
/// cannot parse with a bare 400, outside the API's error envelope. (A later request on a
/// kept-alive connection still gets hyper's: its head is read by hyper alone.) Fails when
/// the connection ends first.
async fn first_head(stream: &tokio::net::TcpStream) -> std::io::Result<Option<ApiError>> {
    let mut buffer = vec![0u8; FIRST_LOOK];
    let mut pause = Duration::from_millis(1);
    let mut seen = 0;
    loop {
        let peeked = stream.peek(&mut buffer).await?;
        if peeked == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let head = &buffer[..peeked];
        if head.windows(4).any(|w| w == b"\r\n\r\n") || peeked == CHECKED_HEAD {
            return Ok(malformed(head));
        }
        if peeked == buffer.len() {
            buffer.resize(CHECKED_HEAD, 0);
            continue;
        }
        // Peeking again at once would find the same bytes: the head is still arriving, and
        // the next look waits a little longer each time nothing came (the caller's timeout
        // ends a head that never does).
        pause = if peeked > seen { Duration::from_millis(1) } else { (pause * 2).min(PEEK_PAUSE) };
        seen = peeked;
        tokio::time::sleep(pause).await;
    }
}

/// The longest wait between two looks at a head still arriving.
const PEEK_PAUSE: Duration = Duration::from_millis(100);

/// Why the request head `head` is malformed, as the API's error, if it is: its request
/// line, a header line (obsolete line folding among them), or its `Content-Length`.
fn malformed(head: &[u8]) -> Option<ApiError> {
    let mut headers = [httparse::EMPTY_HEADER; PARSED_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(head) {
        Err(error) => {
            let what = match error {
                httparse::Error::Token | httparse::Error::Version => {
                    "its request line or a header line"
                }
                httparse::Error::HeaderName | httparse::Error::HeaderValue => "a header line",
                httparse::Error::NewLine | httparse::Error::Status => "its line endings",
                httparse::Error::TooManyHeaders => return None,
            };
            Some(ApiError::invalid_request(format!(
                "The request is not valid HTTP/1.1: {what} is malformed ({error}); header \
                 lines may not be folded onto the next line"
            )))
        }
        // Too long to check here: hyper reads it.
        Ok(httparse::Status::Partial) => None,
        Ok(httparse::Status::Complete(_)) => {
            let lengths: Vec<&[u8]> = request
                .headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case("content-length"))
                .map(|h| h.value)
                .collect();
            let number =
                |v: &[u8]| !v.is_empty() && v.iter().all(u8::is_ascii_digit) && v.len() < 20;
            let bad =
                lengths.iter().any(|v| !number(v)) || lengths.windows(2).any(|w| w[0] != w[1]);
            bad.then(|| {
                ApiError::invalid_parameter(
                    "Content-Length",
                    "Content-Length must be one decimal number of bytes (given once, or \
                     the same each time)",
                )
            })
        }
    }
}

/// Answers `error` in the API's envelope, and closes the connection: after a malformed
/// head, nothing more it sends can be framed.
async fn refuse(mut stream: tokio::net::TcpStream, error: ApiError) {
    tracing::info!(%error, "refused a malformed request");
    let body = serde_json::to_vec(&error.body()).expect("the envelope serializes");
    let head = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n",
        body.len()
    );
    let answer = async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(&body).await?;
        stream.shutdown().await
    };
    tokio::time::timeout(Duration::from_secs(5), answer).await.ok();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_heads_are_named() {
        let param = |head: &[u8]| malformed(head).map(|e| (e.status.as_u16(), e.param));
        assert_eq!(param(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"), None);
        assert_eq!(param(b"GARBAGE\r\n\r\n"), Some((400, None)));
        assert_eq!(param(b"GET / HTTP/1.1\r\nX-A: a\r\n  folded\r\n\r\n"), Some((400, None)));
        for length in ["abc", "-1", "+5", "", "99999999999999999999"] {
            let head = format!("POST / HTTP/1.1\r\nContent-Length: {length}\r\n\r\n");
            assert_eq!(param(head.as_bytes()), Some((400, Some("Content-Length".into()))));
        }
        let twice = b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n";
        assert_eq!(param(twice), Some((400, Some("Content-Length".into()))));
        let same = b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n";
        assert_eq!(param(same), None);
    }
}
