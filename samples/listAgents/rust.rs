//! List your agents: the first page, 10 at most.
#![allow(clippy::print_stdout)] // Printing the answer is what a sample is for.

use vm0_client::{Client, Reply};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let client = Client::from_env()?; // VM0_API_URL and VM0_TOKEN

    let page = client.list_agents().limit(10u64).send().await.body()?;
    println!("{}", serde_json::to_string_pretty(&page)?);
    Ok(())
}
