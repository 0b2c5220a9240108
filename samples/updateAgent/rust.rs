//! Replace an agent's configuration (a new version, now current): its runs now also sleep 30 s, long enough to cancel one.
#![allow(clippy::print_stdout)] // Printing the answer is what a sample is for.

use serde_json::json;
use vm0_client::{types, Client, Reply};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let client = Client::from_env()?; // VM0_API_URL and VM0_TOKEN
    let agent_id = std::env::var("VM0_AGENT_ID").map_err(|_| "VM0_AGENT_ID is not set")?;
    let config: types::AgentConfig = serde_json::from_value(json!({
        "command": ["sh", "-c", "tee artifact/answer.txt; sleep 30"],
        "timeoutSeconds": 120
    }))?;

    let agent = client
        .update_agent()
        .id(&agent_id)
        .body(types::UpdateAgentRequest { config })
        .send()
        .await
        .body()?;
    println!("{}", serde_json::to_string_pretty(&agent)?);
    Ok(())
}
