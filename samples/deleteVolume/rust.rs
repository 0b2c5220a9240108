//! Delete a volume and all its versions.

use vm0_client::{Client, Reply};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let client = Client::from_env()?; // VM0_API_URL and VM0_TOKEN
    let volume_id = std::env::var("VM0_VOLUME_ID").map_err(|_| "VM0_VOLUME_ID is not set")?;

    // The API answers 204 No Content: nothing to print on success.
    client.delete_volume().id(&volume_id).send().await.body()?;
    eprintln!("Deleted volume {volume_id}");
    Ok(())
}
