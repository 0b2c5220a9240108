//! Create an agent named $VM0_AGENT_NAME whose runs echo their prompt into the artifact file answer.txt.
#![allow(clippy::print_stdout)] // Printing the answer is what a sample is for.

use serde_json::json;
use vm0_client::{types, Client, Reply};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let client = Client::from_env()?; // VM0_API_URL and VM0_TOKEN
    let name = std::env::var("VM0_AGENT_NAME").map_err(|_| "VM0_AGENT_NAME is not set")?;
    // The reference server's executor runs `command` in a sandbox: the prompt is on its
    // standard input, and the run's artifact is the folder artifact/.
    let config: types::AgentConfig = serde_json::from_value(json!({
        "command": ["tee", "artifact/answer.txt"],
        "timeoutSeconds": 60
    }))?;

    let agent = client
        .create_agent()
        .body(types::CreateAgentRequest { name: name.parse()?, config })
        .send()
        .await
        .body()?;
    println!("{}", serde_json::to_string_pretty(&agent)?);
    Ok(())
}
