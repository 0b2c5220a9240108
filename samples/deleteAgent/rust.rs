//! Delete an agent and all its versions (its runs are kept).

use vm0_client::{Client, Reply};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let client = Client::from_env()?; // VM0_API_URL and VM0_TOKEN
    let agent_id = std::env::var("VM0_AGENT_ID").map_err(|_| "VM0_AGENT_ID is not set")?;

    // The API answers 204 No Content: nothing to print on success.
    client.delete_agent().id(&agent_id).send().await.body()?;
    eprintln!("Deleted agent {agent_id}");
    Ok(())
}
