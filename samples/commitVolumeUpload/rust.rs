//! Upload the file that prepareVolumeUpload declared to its pre-signed URL, then commit the volume's new version.
#![allow(clippy::print_stdout)] // Printing the answer is what a sample is for.

use vm0_client::{types, Client, Reply};

/// The bytes prepareVolumeUpload declared.
const CONTENT: &[u8] = b"Hello from the VM0 samples!\n";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let client = Client::from_env()?; // VM0_API_URL and VM0_TOKEN
    let volume_id = std::env::var("VM0_VOLUME_ID").map_err(|_| "VM0_VOLUME_ID is not set")?;
    let upload_session_id =
        std::env::var("VM0_UPLOAD_SESSION_ID").map_err(|_| "VM0_UPLOAD_SESSION_ID is not set")?;
    let upload_url = std::env::var("VM0_UPLOAD_URL").map_err(|_| "VM0_UPLOAD_URL is not set")?;

    // 1. The file's bytes, to its pre-signed URL (no API token).
    let put = reqwest::Client::new().put(&upload_url).body(CONTENT).send().await?;
    if !put.status().is_success() {
        return Err(format!("the upload failed: {}", put.text().await?).into());
    }

    // 2. The commit: the upload session becomes the volume's new current version.
    let body =
        types::CommitUploadRequest { upload_session_id: upload_session_id.parse()?, message: None };
    let version = client.commit_volume_upload().id(&volume_id).body(body).send().await.body()?;
    println!("{}", serde_json::to_string_pretty(&version)?);
    Ok(())
}
