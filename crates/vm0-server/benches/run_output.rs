//! A run printing 100,000 lines, end to end: from createRun until the `complete` event
//! arrives on the run's event stream, read as a client reads it; then every line is
//! checked in the run's logs. Then the time from createRun to the first output event of
//! a one-line run (the median of 30, in a sandbox). Then the time cancelRun takes to
//! answer `cancelled` for a run whose process left a `setsid` child holding its output
//! open. Run with `cargo xtask bench` (or `cargo bench -p vm0-server --bench run_output`).

#![allow(clippy::print_stdout)] // Printing is what this program is for.

use std::time::Instant;

use futures_util::StreamExt;

const LINES: usize = 100_000;

struct Api {
    http: reqwest::Client,
    url: String,
    token: String,
}

impl Api {
    /// Creates the agent `name` running `command`.
    async fn agent(&self, name: &str, command: serde_json::Value) {
        let agent = serde_json::json!({"name": name, "config": {"command": command}});
        let response = self
            .http
            .post(format!("{}/v1/agents", self.url))
            .bearer_auth(&self.token)
            .json(&agent)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }

    /// Starts a run of the agent `name`; its id.
    async fn run(&self, name: &str) -> String {
        let body = serde_json::json!({"agent": name, "prompt": "go"});
        let run: serde_json::Value = self
            .http
            .post(format!("{}/v1/runs", self.url))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        run["id"].as_str().unwrap().to_string()
    }
}

/// A server over a fresh data directory, isolating runs as `sandbox` says, with the
/// printing agent.
async fn server(data: &std::path::Path, sandbox: vm0_server::Sandbox) -> Api {
    let server =
        vm0_server::bind(vm0_server::Config { sandbox, ..vm0_server::Config::local(data) })
            .await
            .unwrap();
    let (url, token) = (server.url.clone(), server.first_token.clone().unwrap());
    tokio::spawn(server.serve(std::future::pending()));
    let server = Api { http: reqwest::Client::new(), url, token };
    server.agent("printer", serde_json::json!(["seq", "1", LINES.to_string()])).await;
    server
}

/// One run of the printing agent, checked: its time from createRun to the `complete`
/// event.
async fn print_lines(server: &Api) -> f64 {
    let (url, token) = (&server.url, &server.token);
    let started = Instant::now();
    let id = server.run("printer").await;
    let events = server
        .http
        .get(format!("{url}/v1/runs/{id}/events"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let (mut stream, mut text, mut outputs, mut complete) =
        (events.bytes_stream(), String::new(), 0usize, false);
    while let Some(chunk) = stream.next().await {
        text.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
        while let Some(end) = text.find("\n\n") {
            let message: String = text.drain(..end + 2).collect();
            outputs += message.contains("\nevent: output\n") as usize;
            complete |= message.contains("\nevent: complete\n");
        }
    }
    let elapsed = started.elapsed();
    assert!(complete, "the stream ended without its complete event");

    let mut logged = 0usize;
    let mut cursor: Option<String> = None;
    loop {
        let query = match &cursor {
            Some(cursor) => format!("type=agent&limit=100&cursor={cursor}"),
            None => "type=agent&limit=100".to_string(),
        };
        let page: serde_json::Value = server
            .http
            .get(format!("{url}/v1/runs/{id}/logs?{query}"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for entry in page["data"].as_array().unwrap() {
            logged += 1;
            assert_eq!(
                entry["message"],
                logged.to_string(),
                "log entries in order, each line once"
            );
        }
        match page["pagination"]["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    let status: serde_json::Value = server
        .http
        .get(format!("{url}/v1/runs/{id}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!((outputs, logged, status["status"].as_str()), (LINES, LINES, Some("completed")));
    elapsed.as_secs_f64()
}

/// One run of the one-line agent: milliseconds from createRun until its output event
/// arrives on the run's event stream, opened as soon as createRun answers.
async fn first_output(server: &Api) -> f64 {
    let started = Instant::now();
    let id = server.run("echo").await;
    let events = server
        .http
        .get(format!("{}/v1/runs/{id}/events", server.url))
        .bearer_auth(&server.token)
        .send()
        .await
        .unwrap();
    let (mut stream, mut text) = (events.bytes_stream(), String::new());
    while !text.contains("\nevent: output\n") {
        let chunk = stream.next().await.expect("the run prints before it ends").unwrap();
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    started.elapsed().as_secs_f64() * 1000.0
}

fn median(mut times: Vec<f64>) -> f64 {
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

#[tokio::main]
async fn main() {
    let (sandboxed_data, unsandboxed_data) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let server = self::server(
        sandboxed_data.path(),
        vm0_server::Sandbox::Helper(env!("CARGO_BIN_EXE_vm0-server").into()),
    )
    .await;
    let unsandboxed = self::server(unsandboxed_data.path(), vm0_server::Sandbox::Unsandboxed).await;
    // Side by side, alternating, so the sandbox's cost is a ratio on the same machine.
    let (mut inside, mut outside) = (Vec::new(), Vec::new());
    for round in 1..=3 {
        inside.push(print_lines(&server).await);
        outside.push(print_lines(&unsandboxed).await);
        println!(
            "round {round}: {LINES} lines in a sandbox {:.2} s, unsandboxed {:.2} s",
            inside[round - 1],
            outside[round - 1]
        );
    }
    let (inside, outside) = (median(inside), median(outside));
    println!(
        "a run printing {LINES} lines, createRun to the complete event, every line checked in \
         events and logs: {inside:.2} s in a sandbox, {outside:.2} s unsandboxed (medians of 3), \
         ratio {:.2}",
        inside / outside
    );
    server.agent("echo", serde_json::json!(["echo", "hello"])).await;
    let mut firsts = Vec::new();
    for _ in 0..30 {
        firsts.push(first_output(&server).await);
    }
    println!(
        "a one-line run, createRun to its output event on the stream: {:.1} ms in a sandbox \
         (median of 30; fastest {:.1} ms, slowest {:.1} ms)",
        median(firsts.clone()),
        firsts.iter().cloned().fold(f64::INFINITY, f64::min),
        firsts.iter().cloned().fold(0.0, f64::max)
    );
    let (url, token) = (server.url.clone(), server.token.clone());

    server
        .agent(
            "sleeper",
            serde_json::json!(["sh", "-c", "setsid sleep 30 & echo started; sleep 30"]),
        )
        .await;
    let id = server.run("sleeper").await;
    let events = server
        .http
        .get(format!("{url}/v1/runs/{id}/events"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let (mut stream, mut text) = (events.bytes_stream(), String::new());
    while !text.contains("\nevent: output\n") {
        text.push_str(
            std::str::from_utf8(
                &stream.next().await.expect("the run prints before it ends").unwrap(),
            )
            .unwrap(),
        );
    }
    let started = Instant::now();
    let cancelled: serde_json::Value = server
        .http
        .post(format!("{url}/v1/runs/{id}/cancel"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    println!(
        "cancelRun of a running run with a setsid child: answered {} in {} ms",
        cancelled["status"],
        started.elapsed().as_millis()
    );
}
