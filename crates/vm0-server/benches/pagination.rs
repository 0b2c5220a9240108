//! Keyset pagination does not slow down with depth: 50,000 agents, 100 a page, and the
//! time of page 1 against page 500 (the last), each the median of repeated requests
//! through HTTP. Run with `cargo xtask bench` (or `cargo bench -p vm0-server --bench
//! pagination`).

#![allow(clippy::print_stdout)] // Printing is what this program is for.

use std::time::{Duration, Instant};

use vm0_server::store::UserStore;

const AGENTS: usize = 50_000;
const LIMIT: usize = 100;
const REPEATS: usize = 30;

#[tokio::main]
async fn main() {
    let data = tempfile::tempdir().unwrap();
    let config = vm0_server::Config {
        max_concurrent_runs: 1,
        sandbox: vm0_server::Sandbox::Helper(env!("CARGO_BIN_EXE_vm0-server").into()),
        // Deep pages, read as fast as one token can.
        rate_limit: 0,
        ..vm0_server::Config::local(data.path())
    };
    let server = vm0_server::bind(config).await.unwrap();
    let (url, token, app) =
        (server.url.clone(), server.first_token.clone().unwrap(), server.app.clone());
    tokio::spawn(server.serve(std::future::pending()));

    // Seed the agents in one transaction, with ids in creation order as the server makes them.
    let user = app.store.ensure_user("default").await.unwrap();
    let seeded = Instant::now();
    let mut tx = app.store.sqlite().expect("the default store is SQLite").begin().await.unwrap();
    for i in 0..AGENTS {
        sqlx::query(
            "INSERT INTO agents (id, user_id, name, current_version_id, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(format!("ag_{i:026}"))
        .bind(&user.id)
        .bind(format!("agent-{i}"))
        .bind(format!("agv_{i:026}"))
        .bind(chrono::Utc::now())
        .bind(chrono::Utc::now())
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    println!("seeded {AGENTS} agents in {:?}", seeded.elapsed());

    let http = reqwest::Client::new();
    let get = |query: String| {
        let (http, url, token) = (http.clone(), url.clone(), token.clone());
        async move {
            let started = Instant::now();
            let body: serde_json::Value = http
                .get(format!("{url}/v1/agents?{query}"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            (started.elapsed(), body)
        }
    };

    // Walk every page once, keeping the cursors of pages 100 and 500.
    let (mut cursors, mut query, mut pages) = (Vec::new(), format!("limit={LIMIT}"), 0);
    let walked = Instant::now();
    loop {
        let (_, body) = get(query.clone()).await;
        pages += 1;
        assert_eq!(body["data"].as_array().unwrap().len(), LIMIT);
        match body["pagination"]["nextCursor"].as_str() {
            Some(cursor) => {
                cursors.push(cursor.to_string());
                query = format!("limit={LIMIT}&cursor={cursor}");
            }
            None => break,
        }
    }
    assert_eq!(pages, AGENTS / LIMIT);
    println!("walked all {pages} pages in {:?}", walked.elapsed());

    let median = |mut times: Vec<Duration>| {
        times.sort();
        times[times.len() / 2]
    };
    for (page, query) in [
        (1, format!("limit={LIMIT}")),
        (100, format!("limit={LIMIT}&cursor={}", cursors[98])),
        (500, format!("limit={LIMIT}&cursor={}", cursors[498])),
    ] {
        let mut times = Vec::new();
        for _ in 0..REPEATS {
            times.push(get(query.clone()).await.0);
        }
        println!("page {page:>3} of {pages}: median {:?} over {REPEATS} requests", median(times));
    }
}
