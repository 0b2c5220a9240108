//! `cargo deny check licenses bans sources`, against `deny.toml`: the licenses the
//! dependencies may have, the crates and duplicate versions they may not, and the
//! registries they may come from. cargo-deny is pinned here and installed from crates.io
//! into `target/cargo-deny` on first use. Its advisories check is left out: it needs the
//! advisory database, which CI here cannot download (`deny.toml` says so too).

use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::process;
use crate::spec::workspace_root;

const VERSION: &str = "0.20.2";

/// Runs the three checks; an error when any fails.
pub fn check() -> Result<()> {
    let binary = process::install("cargo-deny", VERSION, &[])?;
    println!("== cargo deny check licenses bans sources");
    let status = Command::new(&binary)
        // A duplicate's warning without the tree of every crate that pulls it in.
        .args(["deny", "--locked", "check", "--hide-inclusion-graph"])
        .args(["licenses", "bans", "sources"])
        .current_dir(workspace_root())
        .status()
        .with_context(|| format!("starting {}", binary.display()))?;
    if !status.success() {
        bail!("cargo deny check licenses bans sources failed");
    }
    Ok(())
}
