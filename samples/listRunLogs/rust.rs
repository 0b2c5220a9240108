//! List a run's log entries, oldest first: the first page, 10 at most.
#![allow(clippy::print_stdout)] // Printing the answer is what a sample is for.

use vm0_client::{types, Client, Reply};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let client = Client::from_env()?; // VM0_API_URL and VM0_TOKEN
    let run_id = std::env::var("VM0_RUN_ID").map_err(|_| "VM0_RUN_ID is not set")?;

    let page = client
        .list_run_logs()
        .id(&run_id)
        .order(types::SortOrder::Asc)
        .limit(10u64)
        .send()
        .await
        .body()?;
    println!("{}", serde_json::to_string_pretty(&page)?);
    Ok(())
}
