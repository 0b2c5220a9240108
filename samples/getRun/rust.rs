//! Get a run: its status, outcome, session, checkpoint, volumes and artifact.
#![allow(clippy::print_stdout)] // Printing the answer is what a sample is for.

use vm0_client::{Client, Reply};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let client = Client::from_env()?; // VM0_API_URL and VM0_TOKEN
    let run_id = std::env::var("VM0_RUN_ID").map_err(|_| "VM0_RUN_ID is not set")?;

    let run = client.get_run().id(&run_id).send().await.body()?;
    println!("{}", serde_json::to_string_pretty(&run)?);
    Ok(())
}
