//! Start a run of an agent on a prompt, with a volume mounted and an artifact to write; it executes asynchronously.
#![allow(clippy::print_stdout)] // Printing the answer is what a sample is for.

use std::collections::HashMap;

use vm0_client::{types, Client, Reply};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let client = Client::from_env()?; // VM0_API_URL and VM0_TOKEN
    let agent_id = std::env::var("VM0_AGENT_ID").map_err(|_| "VM0_AGENT_ID is not set")?;
    let volume_name = std::env::var("VM0_VOLUME_NAME").map_err(|_| "VM0_VOLUME_NAME is not set")?;
    let artifact_name =
        std::env::var("VM0_ARTIFACT_NAME").map_err(|_| "VM0_ARTIFACT_NAME is not set")?;
    let body = types::CreateRunRequest::builder()
        .agent_id(Some(types::CreateRunRequestAgentId::try_from(agent_id)?))
        .prompt("Say hello")
        .volumes(HashMap::from([(volume_name, "latest".to_string())]))
        .artifact_name(Some(types::StorageName::try_from(artifact_name)?));

    let run = client.create_run().body(body).send().await.body()?;
    println!("{}", serde_json::to_string_pretty(&run)?);
    Ok(())
}
