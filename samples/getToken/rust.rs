//! Get an API token's details (never its value).
#![allow(clippy::print_stdout)] // Printing the answer is what a sample is for.

use vm0_client::{Client, Reply};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let client = Client::from_env()?; // VM0_API_URL and VM0_TOKEN
    let token_id = std::env::var("VM0_TOKEN_ID").map_err(|_| "VM0_TOKEN_ID is not set")?;

    let token = client.get_token().id(&token_id).send().await.body()?;
    println!("{}", serde_json::to_string_pretty(&token)?);
    Ok(())
}
