//! The server's connections: accepted up to a cap, each under timeouts for every stage
//! (its request headers, the pauses inside a request body, its idle time between
//! requests), so that no client, with a token or without, holds connections and file
//! descriptors open for nothing; and the process's file-descriptor limit raised to what
//! the host allows, so that the cap is what decides.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

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
    // (Behind a proxy that speaks HTTP/2 to clients, as in deploy/, nothing changes.)
    let mut builder =
        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new()).http1_only();
    // The header timeout runs from a connection's start and again whenever it waits for
    // its next request, so it also ends idle keep-alive connections.
    builder
        .http1()
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
            let mut byte = [0u8];
            let first_byte = tokio::select! {
                peeked = tokio::time::timeout(limits.timeout, stream.peek(&mut byte)) => peeked,
                _ = stopping.cancelled() => return,
            };
            if matches!(first_byte, Ok(Ok(1))) {
                let connection =
                    builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                watcher.watch(connection.into_owned()).await.ok();
            }
            drop(slot);
        });
    }
    drop(listener);
    stopping.cancel();
    graceful
}
