//! Get an agent.
#![allow(clippy::print_stdout)] // Printing the answer is what a sample is for.

use vm0_client::{Client, Reply};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let client = Client::from_env()?; // VM0_API_URL and VM0_TOKEN
    let agent_id = std::env::var("VM0_AGENT_ID").map_err(|_| "VM0_AGENT_ID is not set")?;

    let agent = client.get_agent().id(&agent_id).send().await.body()?;
    println!("{}", serde_json::to_string_pretty(&agent)?);
    Ok(())
}
