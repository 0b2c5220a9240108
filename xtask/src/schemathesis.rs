//! `cargo xtask schemathesis`: the reference server, started on a free port over a fresh
//! data directory, tested by schemathesis with every check on every operation. The run is
//! seeded, so a failure reproduces; `st` prints the curl command of each.

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

    let status = Command::new(venv.join("bin/st"))
        .args(["--config-file", "xtask/schemathesis.toml", "run", "openapi/v1.yaml", "--url", &server.url])
        .args(["--header", &format!("Authorization: Bearer {}", server.token)])
        .args(["--checks", "all", "--max-examples", "50", "--seed", "1", "--no-color"])
        .current_dir(&root)
        .status()
        .context("running schemathesis")?;
    drop(server);
    Ok(status.success())
}
