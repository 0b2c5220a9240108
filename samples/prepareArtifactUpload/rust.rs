//! Declare the files of an artifact's next version (one file, hello.txt) and get where to upload each.
#![allow(clippy::print_stdout)] // Printing the answer is what a sample is for.

use sha2::{Digest, Sha256};
use vm0_client::{types, Client, Reply};

/// The file's bytes.
const CONTENT: &[u8] = b"Hello from the VM0 samples!\n";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let client = Client::from_env()?; // VM0_API_URL and VM0_TOKEN
    let artifact_id = std::env::var("VM0_ARTIFACT_ID").map_err(|_| "VM0_ARTIFACT_ID is not set")?;

    let file = types::UploadFile {
        path: "hello.txt".parse()?,
        size: CONTENT.len() as i64,
        hash: format!("{:x}", Sha256::digest(CONTENT)).parse()?,
    };
    let body =
        types::PrepareUploadRequest { files: vec![file], message: Some("Add hello.txt".parse()?) };
    let upload =
        client.prepare_artifact_upload().id(&artifact_id).body(body).send().await.body()?;
    // Next: PUT each file's bytes to its upload_url, then commit the upload_session_id.
    // (`Client::push_artifact` does all three for a whole folder.)
    println!("{}", serde_json::to_string_pretty(&upload)?);
    Ok(())
}
