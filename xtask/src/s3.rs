//! A throwaway S3-compatible server for the tests: s3s-fs, installed from crates.io into
//! `target/s3s-fs` on first use and serving a bucket from `target/s3-test`, stopped when
//! dropped. s3s-fs checks SigV4 signatures, pre-signed URLs included, which is what the
//! tests need of it; it builds with cargo alone, where Garage or MinIO would need a
//! download outside any registry and moto a Python environment that ignores signatures.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::process;
use crate::spec::workspace_root;

const VERSION: &str = "0.14.1";
/// The bucket the tests store blobs in, each server under a prefix of its own.
pub const BUCKET: &str = "vm0-test";
const ACCESS_KEY: &str = "vm0-test-access-key";
const SECRET_KEY: &str = "vm0-test-secret-key";

/// A running s3s-fs.
pub struct S3 {
    /// Its endpoint, such as `http://127.0.0.1:39001`.
    pub endpoint: String,
    child: Child,
}

impl S3 {
    /// Installs s3s-fs if needed and starts it on a free port of 127.0.0.1, over an empty
    /// bucket.
    pub fn start() -> Result<S3> {
        let binary = process::install("s3s-fs", VERSION, &["--features", "binary"])?;
        let root = workspace_root().join("target/s3-test");
        if root.exists() {
            std::fs::remove_dir_all(&root)?;
        }
        std::fs::create_dir_all(root.join(BUCKET))?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new(&binary)
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--access-key",
                ACCESS_KEY,
                "--secret-key",
                SECRET_KEY,
            ])
            .arg(&root)
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let s3 = S3 { endpoint: format!("http://127.0.0.1:{port}"), child };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if started.elapsed() > Duration::from_secs(30) {
                bail!("s3s-fs did not listen on port {port} within 30 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(s3)
    }

    /// The variables that point a test server at this bucket: the tests' own, and the
    /// standard AWS ones the server reads its credentials and region from.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("VM0_TEST_BLOB_STORE", format!("s3://{BUCKET}")),
            ("VM0_TEST_S3_ENDPOINT", self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}
