//! Create an empty artifact named $VM0_ARTIFACT_NAME.
#![allow(clippy::print_stdout)] // Printing the answer is what a sample is for.

use vm0_client::{types, Client, Reply};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let client = Client::from_env()?; // VM0_API_URL and VM0_TOKEN
    let name = std::env::var("VM0_ARTIFACT_NAME").map_err(|_| "VM0_ARTIFACT_NAME is not set")?;

    let artifact = client
        .create_artifact()
        .body(types::CreateArtifactRequest { name: name.parse()? })
        .send()
        .await
        .body()?;
    println!("{}", serde_json::to_string_pretty(&artifact)?);
    Ok(())
}
