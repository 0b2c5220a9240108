//! Create an API token named $VM0_TOKEN_NAME that expires in 30 days; its value is shown this once.
#![allow(clippy::print_stdout)] // Printing the answer is what a sample is for.

use vm0_client::{types, Client, Reply};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let client = Client::from_env()?; // VM0_API_URL and VM0_TOKEN
    let name = std::env::var("VM0_TOKEN_NAME").map_err(|_| "VM0_TOKEN_NAME is not set")?;
    let body =
        types::CreateTokenRequest { name: name.parse()?, expires_in_days: 30u64.try_into()? };

    let token = client.create_token().body(body).send().await.body()?;
    println!("{}", serde_json::to_string_pretty(&token)?);
    Ok(())
}
