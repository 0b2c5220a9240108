//! Get the pre-signed URLs of an artifact's current files and save each under $VM0_DOWNLOAD_DIR.
#![allow(clippy::print_stdout)] // Printing the answer is what a sample is for.

use std::path::Path;

use vm0_client::{Client, Transfer};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let client = Client::from_env()?; // VM0_API_URL and VM0_TOKEN
    let artifact_id = std::env::var("VM0_ARTIFACT_ID").map_err(|_| "VM0_ARTIFACT_ID is not set")?;
    let dir = std::env::var("VM0_DOWNLOAD_DIR").unwrap_or_else(|_| "vm0-download".into());

    // downloadArtifact (the current version: None), then every file fetched from its
    // pre-signed URL and checked against its size and SHA-256 before it takes its name.
    let download =
        client.pull_artifact(&artifact_id, None, Path::new(&dir), &Transfer::default()).await?;
    println!("{}", serde_json::to_string_pretty(&download)?);
    Ok(())
}
