//! Revoke an API token: requests made with it fail from now on.

use vm0_client::{Client, Reply};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let client = Client::from_env()?; // VM0_API_URL and VM0_TOKEN
    let token_id = std::env::var("VM0_TOKEN_ID").map_err(|_| "VM0_TOKEN_ID is not set")?;

    // The API answers 204 No Content: nothing to print on success.
    client.revoke_token().id(&token_id).send().await.body()?;
    eprintln!("Revoked token {token_id}");
    Ok(())
}
