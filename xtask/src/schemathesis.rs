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

use std::process::Command;

use anyhow::{Context, Result};

use crate::process::{cargo, ReferenceServer};
use crate::spec::workspace_root;
use crate::tools;

/// Runs schemathesis against a fresh server; whether it found no failure.
pub fn run() -> Result<bool> {
    let root = workspace_root();
    let venv = tools::python_tools()?;
    cargo(&["build", "--quiet", "--locked", "-p", "vm0-server"])?;
    let data_dir = root.join("target/schemathesis-data");
    if data_dir.exists() {
        std::fs::remove_dir_all(&data_dir)?;
    }
    let server = ReferenceServer::start(&root.join("target/debug/vm0-server"), &data_dir)?;

    let invocations: [&[&str]; 2] =
        [&["--exclude-operation-id", "streamRunEvents"], &["--include-operation-id", "streamRunEvents", "--exclude-checks", "response_schema_conformance"]];
    let mut passed = true;
    for scope in invocations {
        let status = Command::new(venv.join("bin/st"))
            .args(["--config-file", "xtask/schemathesis.toml", "run", "openapi/v1.yaml", "--url", &server.url])
            .args(["--header", &format!("Authorization: Bearer {}", server.token)])
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
