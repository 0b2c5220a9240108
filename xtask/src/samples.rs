//! `cargo xtask samples`: every sample of `samples/` run against a fresh reference server,
//! through the proxy that checks every answer against the spec. This builds what the
//! samples need (the `vm0` binary, the Rust samples, the TypeScript ones with the pinned
//! `tsc`), then hands over to `tests/src/bin/vm0-run-samples.rs`, which runs them in the
//! order of `samples/order.json` and names each sample that fails.

use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::codegen::SAMPLES;
use crate::process;
use crate::spec::workspace_root;
use crate::tools;

pub fn run() -> Result<bool> {
    let root = workspace_root();
    process::cargo(&["build", "--locked", "-p", "vm0-tests", "--bins", "-p", "vm0-cli"])?;
    process::cargo(&["build", "--locked", "-p", "vm0-samples"])?;
    let npm = tools::npm_tools()?;
    let compiled = root.join("target/samples/typescript");
    let mut sources = Vec::new();
    for entry in std::fs::read_dir(root.join(SAMPLES)).context("reading samples/")? {
        let source = entry?.path().join("typescript.ts");
        if source.exists() {
            sources.push(source);
        }
    }
    sources.sort();
    println!("== tsc: {} TypeScript samples into {}", sources.len(), compiled.display());
    // One compilation: every sample a module of its own (some have no import), each
    // output under its operation's folder.
    let status = Command::new(tools::bin(&npm, "tsc"))
        .args(["--strict", "--target", "es2022", "--module", "nodenext", "--types", "node"])
        .arg("--typeRoots")
        .arg(npm.join("node_modules/@types"))
        .args(["--moduleDetection", "force", "--rootDir"])
        .arg(root.join(SAMPLES))
        .arg("--outDir")
        .arg(&compiled)
        .args(&sources)
        .status()
        .context("running tsc")?;
    if !status.success() {
        bail!("tsc could not compile the TypeScript samples");
    }
    let debug = root.join("target/debug");
    let status = Command::new(debug.join("vm0-run-samples"))
        .arg(&debug)
        .arg(&compiled)
        .arg(&debug)
        .current_dir(&root)
        .status()
        .context("running vm0-run-samples")?;
    Ok(status.success())
}
