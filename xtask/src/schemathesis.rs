//! `cargo xtask schemathesis`: the reference server, started on a free port over a fresh
//! data directory, tested by schemathesis with every check on every operation. The run is
//! seeded, so a failure reproduces; `st` prints the curl command of each.
//!
//! One exception, made in the second invocation: schemathesis reads an SSE response
//! schema as OpenAPI 3.2's itemSchema, where `data` is the raw text of the data line, to
//! be decoded through contentMediaType/contentSchema, keywords an OpenAPI 3.0 schema
//! cannot hold. Our 3.0 spec's `RunEvent` describes `data` as the JSON that line holds,
//! which is what the generated types read, so response_schema_conformance does not apply
//! to streamRunEvents. Its events are checked by `tests/it/e2e_runs.rs`, and its error
//! envelope is the one every other operation is checked for.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::spec::workspace_root;
use crate::tools;

/// Kills the server when the run ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

/// Runs schemathesis against a fresh server; whether it found no failure.
pub fn run() -> Result<bool> {
    let root = workspace_root();
    let venv = tools::python_tools()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let built = Command::new(&cargo).args(["build", "--quiet", "--locked", "-p", "vm0-server"]).current_dir(&root).status()?;
    if !built.success() {
        bail!("building vm0-server failed");
    }
    let data_dir = root.join("target/schemathesis-data");
    if data_dir.exists() {
        std::fs::remove_dir_all(&data_dir)?;
    }
    let mut child = Command::new(root.join("target/debug/vm0-server"))
        .args(["--listen", "127.0.0.1:0", "--log", "warn", "--data-dir"])
        .arg(&data_dir)
        .stdout(Stdio::piped())
        .spawn()
        .context("starting vm0-server")?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let server = Running(child);

    // The server prints its URL first, then its first token.
    let (mut url, mut token) = (None, None);
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        if let Some(rest) = line.strip_prefix("vm0-server listening on ") {
            url = Some(rest.trim().to_string());
        }
        if let Some(found) = line.split_whitespace().find(|w| w.starts_with("vm0_live_")) {
            token = Some(found.trim_matches('"').to_string());
            break;
        }
    }
    let (Some(url), Some(token)) = (url, token) else { bail!("vm0-server did not print its URL and first token") };

    let invocations: [&[&str]; 2] =
        [&["--exclude-operation-id", "streamRunEvents"], &["--include-operation-id", "streamRunEvents", "--exclude-checks", "response_schema_conformance"]];
    let mut passed = true;
    for scope in invocations {
        let status = Command::new(venv.join("bin/st"))
            .args(["--config-file", "xtask/schemathesis.toml", "run", "openapi/v1.yaml", "--url", &url])
            .args(["--header", &format!("Authorization: Bearer {token}")])
            .args(["--checks", "all", "--max-examples", "50", "--seed", "1", "--no-color"])
            .args(scope)
            .current_dir(&root)
            .status()
            .context("running schemathesis")?;
        passed &= status.success();
    }
    drop(server);
    Ok(passed)
}
