//! GET /v1/agents through the reference server against a bare axum handler doing the same
//! two SQL queries (the token by its hash, then a page of agents) on the same database
//! file, with the same pool; and the server as it serves (requests counted and timed for
//! /metrics) against the same server without that, each on a data directory of its own
//! with the same agents, and against the same server without its rate limiter (the others
//! count every request against a limit they never reach). Each round drives one of them
//! with 32 connections for a few seconds; rounds alternate, three each, and the figures
//! are ratios of the medians, since these machines are too noisy for absolute numbers. The
//! servers run with their default settings, their info log formatted as in production
//! (into a sink). Then createAgent with an Idempotency-Key against createAgent without,
//! rounds alternating on the reference server, as the cost of a key. Run with `cargo xtask
//! bench` (or `cargo bench -p vm0-server --bench agents`).

#![allow(clippy::print_stdout)] // Printing is what this program is for.

mod common;

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use sha2::Digest;
use sqlx::SqlitePool;

/// The allocator of the `vm0-server` binary, so the figure is the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CONNECTIONS: usize = 32;
const AGENTS: usize = 20;
const ROUNDS: usize = 3;
const CREATE_ROUNDS: usize = 9;

/// An agent as the bare handler reads and writes it: the same columns and JSON keys.
#[derive(sqlx::FromRow, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Agent {
    id: String,
    name: String,
    current_version_id: String,
    created_at: chrono::DateTime<chrono::Utc>,
    updated_at: chrono::DateTime<chrono::Utc>,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Pagination {
    has_more: bool,
    next_cursor: Option<String>,
}

#[derive(serde::Serialize)]
struct AgentList {
    data: Vec<Agent>,
    pagination: Pagination,
}

/// The bare handler: what any server of this endpoint must do, and nothing else.
async fn bare(
    State(pool): State<SqlitePool>,
    headers: HeaderMap,
) -> Result<axum::Json<AgentList>, StatusCode> {
    let token = headers
        .get("authorization")
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .ok_or(StatusCode::UNAUTHORIZED)?;
    let hash = sha2::Sha256::digest(token.as_bytes()).to_vec();
    let user: String = sqlx::query_scalar("SELECT user_id FROM tokens WHERE token_hash = ?")
        .bind(hash)
        .fetch_optional(&pool)
        .await
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?
        .ok_or(StatusCode::UNAUTHORIZED)?;
    let mut data: Vec<Agent> = sqlx::query_as(
        "SELECT * FROM agents WHERE user_id = ? AND id < ? AND (? IS NULL OR name = ?) \
         ORDER BY id DESC LIMIT ?",
    )
    .bind(&user)
    .bind("~")
    .bind(None::<String>)
    .bind(None::<String>)
    .bind(21)
    .fetch_all(&pool)
    .await
    .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    let has_more = data.len() > 20;
    data.truncate(20);
    Ok(axum::Json(AgentList { data, pagination: Pagination { has_more, next_cursor: None } }))
}

/// Requests per second that `CONNECTIONS` clients get from `url` in one round.
async fn round(url: &str, token: &str) -> f64 {
    let (url, token) = (url.to_string(), token.to_string());
    common::round(
        CONNECTIONS,
        Arc::new(move |http| http.get(&url).bearer_auth(&token)),
        |status, body| {
            assert_eq!(status, 200);
            assert!(body.len() > 100);
        },
    )
    .await
}

#[tokio::main]
async fn main() {
    let filter = std::env::var("VM0_BENCH_LOG").unwrap_or_else(|_| "info".into());
    // As main.rs sets it up when standard error is not a terminal (a file, a journal).
    tracing_subscriber::fmt()
        .with_env_filter(filter.as_str())
        .with_writer(std::io::sink)
        .with_ansi(false)
        .init();
    let data = tempfile::tempdir().unwrap();
    // Every request counted against a rate limit it never reaches, so that the limiter's
    // cost is measured and the floods below are served.
    let config = vm0_server::Config {
        sandbox: vm0_server::Sandbox::Helper(env!("CARGO_BIN_EXE_vm0-server").into()),
        rate_limit: u32::MAX,
        ..vm0_server::Config::local(data.path())
    };
    let (url, token) = serve_with_agents(config.clone(), true).await;
    let unlimited_data = tempfile::tempdir().unwrap();
    let (unlimited, unlimited_token) = serve_with_agents(
        vm0_server::Config {
            data_dir: unlimited_data.path().to_path_buf(),
            rate_limit: 0,
            ..config.clone()
        },
        true,
    )
    .await;
    let uncounted_data = tempfile::tempdir().unwrap();
    let (uncounted, uncounted_token) = serve_with_agents(
        vm0_server::Config { data_dir: uncounted_data.path().to_path_buf(), ..config.clone() },
        false,
    )
    .await;

    // The baseline opens the same file the same way the server does.
    let pool = vm0_server::open_store(&config)
        .await
        .unwrap()
        .sqlite()
        .expect("the default store is SQLite")
        .clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let baseline = format!("http://{}/v1/agents", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(listener, axum::Router::new().route("/v1/agents", get(bare)).with_state(pool))
            .await
    });

    let (mut served, mut without, mut bare) = (Vec::new(), Vec::new(), Vec::new());
    let mut unlimited_rounds = Vec::new();
    for i in 0..ROUNDS {
        served.push(round(&format!("{url}/v1/agents"), &token).await);
        without.push(round(&format!("{uncounted}/v1/agents"), &uncounted_token).await);
        unlimited_rounds.push(round(&format!("{unlimited}/v1/agents"), &unlimited_token).await);
        bare.push(round(&baseline, &token).await);
        println!(
            "round {}: reference server {:.0} req/s, without request metrics {:.0} req/s, \
             without the rate limiter {:.0} req/s, bare axum {:.0} req/s",
            i + 1,
            served[i],
            without[i],
            unlimited_rounds[i],
            bare[i]
        );
    }
    let (served, without, bare) =
        (common::median(served), common::median(without), common::median(bare));
    let unlimited = common::median(unlimited_rounds);
    println!(
        "GET /v1/agents ({AGENTS} agents, {CONNECTIONS} connections): reference server \
         {served:.0} req/s, bare axum {bare:.0} req/s, ratio {:.2}",
        served / bare
    );
    println!(
        "GET /v1/agents with request metrics against without: {served:.0} against \
         {without:.0} req/s, ratio {:.3}",
        served / without
    );
    println!(
        "GET /v1/agents with the rate limiter (every request counted) against without: \
         {served:.0} against {unlimited:.0} req/s, ratio {:.3} (target at least 0.9)",
        served / unlimited
    );

    key_costs(&url, &token).await;
}

/// createAgent with a fresh `Idempotency-Key` against without, on the server at `url`.
async fn key_costs(url: &str, token: &str) {
    // The disk's fsyncs are the noisiest part of this machine: more rounds, each pair's
    // cost taken side by side, in turns of which goes first, and the median of the costs.
    let (mut keyed, mut plain, mut costs) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..CREATE_ROUNDS {
        let (with, without) = if i % 2 == 0 {
            let with = creates(url, token, true).await;
            (with, creates(url, token, false).await)
        } else {
            let without = creates(url, token, false).await;
            (creates(url, token, true).await, without)
        };
        println!(
            "round {}: createAgent with an Idempotency-Key {with:.0} req/s, without \
             {without:.0} req/s, cost {:.2}x",
            i + 1,
            without / with
        );
        keyed.push(with);
        plain.push(without);
        costs.push(without / with);
    }
    let (keyed, plain, cost) =
        (common::median(keyed), common::median(plain), common::median(costs));
    println!(
        "POST /v1/agents ({CONNECTIONS} connections) with an Idempotency-Key against without: \
         {keyed:.0} against {plain:.0} req/s (medians), median cost of {CREATE_ROUNDS} rounds \
         {cost:.2}x (target at most 1.15x)"
    );
}

/// createAgent calls per second that `CONNECTIONS` clients get from the server at `url`,
/// each with a name of its own, and with a fresh `Idempotency-Key` each when `keyed`.
async fn creates(url: &str, token: &str, keyed: bool) -> f64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let (url, token) = (format!("{url}/v1/agents"), token.to_string());
    common::round(
        CONNECTIONS,
        Arc::new(move |http| {
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let body =
                serde_json::json!({"name": format!("made-{n}"), "config": {"command": ["true"]}});
            let request = http.post(&url).bearer_auth(&token).json(&body);
            if keyed {
                request.header("Idempotency-Key", format!("bench-key-{n}"))
            } else {
                request
            }
        }),
        |status, _| assert_eq!(status, 201),
    )
    .await
}

/// Starts a server on `config` with `AGENTS` agents, counting requests for /metrics or
/// not; its URL and first token.
async fn serve_with_agents(config: vm0_server::Config, count_requests: bool) -> (String, String) {
    let mut server = vm0_server::bind(config).await.unwrap();
    server.count_requests = count_requests;
    let (url, token) = (server.url.clone(), server.first_token.clone().unwrap());
    tokio::spawn(server.serve(std::future::pending()));
    let http = reqwest::Client::new();
    for i in 0..AGENTS {
        let body =
            serde_json::json!({"name": format!("agent-{i}"), "config": {"command": ["true"]}});
        let response = http
            .post(format!("{url}/v1/agents"))
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }
    (url, token)
}
