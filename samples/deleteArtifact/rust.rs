//! Delete an artifact and all its versions.

use vm0_client::{Client, Reply};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let client = Client::from_env()?; // VM0_API_URL and VM0_TOKEN
    let artifact_id = std::env::var("VM0_ARTIFACT_ID").map_err(|_| "VM0_ARTIFACT_ID is not set")?;

    // The API answers 204 No Content: nothing to print on success.
    client.delete_artifact().id(&artifact_id).send().await.body()?;
    eprintln!("Deleted artifact {artifact_id}");
    Ok(())
}
