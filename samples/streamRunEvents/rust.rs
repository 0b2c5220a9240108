//! Follow a run's events until it ends, one JSON object per line: {"id", "event", "data"}.
#![allow(clippy::print_stdout)] // Printing the events is what a sample is for.

use futures::TryStreamExt;
use serde_json::json;
use vm0_client::{Client, RunEvent};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let client = Client::from_env()?; // VM0_API_URL and VM0_TOKEN
    let run_id = std::env::var("VM0_RUN_ID").map_err(|_| "VM0_RUN_ID is not set")?;

    // The run's events from the first, typed; the client resumes a dropped connection with
    // Last-Event-ID and leaves out heartbeats. The stream ends after the `complete` event.
    let mut events = client.run_events(&run_id);
    while let Some(event) = events.try_next().await? {
        let line = match event {
            RunEvent::Status { id, status } => {
                json!({"id": id, "event": "status", "data": {"status": status}})
            }
            RunEvent::Output { id, content, stream } => {
                json!({"id": id, "event": "output", "data": {"content": content, "stream": stream}})
            }
            RunEvent::Error { id, message } => {
                json!({"id": id, "event": "error", "data": {"message": message}})
            }
            RunEvent::Complete { id, status, execution_time_ms } => json!({
                "id": id,
                "event": "complete",
                "data": {"status": status, "executionTimeMs": execution_time_ms}
            }),
        };
        println!("{line}");
    }
    Ok(())
}
