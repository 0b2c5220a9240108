//! GET /v1/agents and createAgent on the embedded SQLite against the same on PostgreSQL:
//! two reference servers side by side, each on its own backend, driven in alternating
//! rounds of a few seconds by 32 connections (lists) or 8 (creates, each a new agent and
//! its first version in one transaction). The figures are requests per second and the
//! ratio of the medians, PostgreSQL over SQLite, since these machines are too noisy for
//! absolute numbers. PostgreSQL is the server `VM0_TEST_DATABASE_URL` names (`cargo xtask
//! bench` starts a throwaway one in target/postgres); without it, this says so and stops.

#![allow(clippy::print_stdout)] // Printing is what this program is for.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The allocator of the `vm0-server` binary, so the figures are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ROUNDS: usize = 3;

struct Target {
    url: String,
    token: String,
    _data: tempfile::TempDir,
}

async fn start(postgres: bool) -> Target {
    let data = tempfile::tempdir().unwrap();
    let database_url =
        if postgres { vm0_server::testing::database_url(data.path()).await.unwrap() } else { None };
    let config = vm0_server::Config {
        database_url,
        sandbox: vm0_server::Sandbox::Unsandboxed,
        // The backends' throughput, which one token's flood measures.
        rate_limit: 0,
        ..vm0_server::Config::local(data.path())
    };
    let server = vm0_server::bind(config).await.unwrap();
    let (url, token) = (server.url.clone(), server.first_token.clone().unwrap());
    tokio::spawn(server.serve(std::future::pending()));
    let http = reqwest::Client::new();
    for i in 0..20 {
        let body =
            serde_json::json!({"name": format!("seed-{i}"), "config": {"command": ["true"]}});
        assert_eq!(
            http.post(format!("{url}/v1/agents"))
                .bearer_auth(&token)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status(),
            201
        );
    }
    Target { url, token, _data: data }
}

/// Requests per second that `connections` clients get in one round, each request
/// `create` (a new agent) or a GET of the first page.
async fn round(target: &Target, connections: usize, create: bool) -> f64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let (url, token) = (format!("{}/v1/agents", target.url), target.token.clone());
    let request = move |http: &reqwest::Client| {
        let request = if create {
            let name = format!("agent-{}", NEXT.fetch_add(1, Ordering::Relaxed));
            http.post(&url)
                .json(&serde_json::json!({"name": name, "config": {"command": ["true"]}}))
        } else {
            http.get(&url)
        };
        request.bearer_auth(&token)
    };
    common::round(connections, Arc::new(request), |status, _| {
        assert!(status.is_success(), "{status}")
    })
    .await
}

#[tokio::main]
async fn main() {
    if std::env::var_os(vm0_server::testing::TEST_DATABASE_URL).is_none() {
        println!(
            "backends: skipped, no PostgreSQL: set {} (cargo xtask bench does)",
            vm0_server::testing::TEST_DATABASE_URL
        );
        return;
    }
    let (sqlite, postgres) = (start(false).await, start(true).await);
    for (what, connections, create) in [("GET /v1/agents", 32, false), ("createAgent", 8, true)] {
        let (mut on_sqlite, mut on_postgres) = (Vec::new(), Vec::new());
        for i in 0..ROUNDS {
            on_sqlite.push(round(&sqlite, connections, create).await);
            on_postgres.push(round(&postgres, connections, create).await);
            println!(
                "{what} round {}: SQLite {:.0} req/s, PostgreSQL {:.0} req/s",
                i + 1,
                on_sqlite[i],
                on_postgres[i]
            );
        }
        let (s, p) = (common::median(on_sqlite), common::median(on_postgres));
        println!(
            "{what}: SQLite {s:.0} req/s, PostgreSQL {p:.0} req/s (medians of {ROUNDS}); \
             PostgreSQL/SQLite = {:.2}",
            p / s
        );
    }
}
