//! A run printing 100,000 lines, end to end: from createRun until the `complete` event
//! arrives on the run's event stream, read as a client reads it; then every line is
//! checked in the run's logs. Then the time cancelRun takes to answer `cancelled` for a
//! run whose process left a `setsid` child holding its output open. Run with `cargo
//! xtask bench` (or `cargo bench -p vm0-server --bench run_output`).

#![allow(clippy::print_stdout)] // Printing is what this program is for.

use std::time::Instant;

use futures_util::StreamExt;

const LINES: usize = 100_000;

#[tokio::main]
async fn main() {
    let data = tempfile::tempdir().unwrap();
    let server = vm0_server::bind(vm0_server::Config::local(data.path())).await.unwrap();
    let (url, token) = (server.url.clone(), server.first_token.clone().unwrap());
    tokio::spawn(server.serve(std::future::pending()));
    let http = reqwest::Client::new();
    let agent = serde_json::json!({"name": "printer", "config": {"command": ["seq", "1", LINES.to_string()]}});
    assert_eq!(http.post(format!("{url}/v1/agents")).bearer_auth(&token).json(&agent).send().await.unwrap().status(), 201);

    let started = Instant::now();
    let run: serde_json::Value = http
        .post(format!("{url}/v1/runs"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"agent": "printer", "prompt": "go"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = run["id"].as_str().unwrap().to_string();
    let events = http.get(format!("{url}/v1/runs/{id}/events")).bearer_auth(&token).send().await.unwrap();
    let (mut stream, mut text, mut outputs, mut complete) = (events.bytes_stream(), String::new(), 0usize, false);
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
        let page: serde_json::Value = http.get(format!("{url}/v1/runs/{id}/logs?{query}")).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
        for entry in page["data"].as_array().unwrap() {
            logged += 1;
            assert_eq!(entry["message"], logged.to_string(), "log entries in order, each line once");
        }
        match page["pagination"]["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    let status: serde_json::Value = http.get(format!("{url}/v1/runs/{id}")).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
    println!(
        "a run printing {LINES} lines: {:.2} s end to end (createRun to the complete event); {outputs} output events, {logged} agent log entries, status {}",
        elapsed.as_secs_f64(),
        status["status"]
    );
    assert_eq!((outputs, logged), (LINES, LINES));

    let sleeper = serde_json::json!({"name": "sleeper", "config": {"command": ["sh", "-c", "setsid sleep 30 & echo started; sleep 30"]}});
    assert_eq!(http.post(format!("{url}/v1/agents")).bearer_auth(&token).json(&sleeper).send().await.unwrap().status(), 201);
    let run: serde_json::Value = http
        .post(format!("{url}/v1/runs"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"agent": "sleeper", "prompt": "z"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = run["id"].as_str().unwrap().to_string();
    let events = http.get(format!("{url}/v1/runs/{id}/events")).bearer_auth(&token).send().await.unwrap();
    let (mut stream, mut text) = (events.bytes_stream(), String::new());
    while !text.contains("\nevent: output\n") {
        text.push_str(std::str::from_utf8(&stream.next().await.expect("the run prints before it ends").unwrap()).unwrap());
    }
    let started = Instant::now();
    let cancelled: serde_json::Value = http.post(format!("{url}/v1/runs/{id}/cancel")).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
    println!("cancelRun of a running run with a setsid child: answered {} in {} ms", cancelled["status"], started.elapsed().as_millis());
}
