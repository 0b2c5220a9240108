//! `cargo xtask bench --against REV`: the server's benchmarks at a git revision and in
//! the working tree, run in turns in one command, so that a change's cost is read side by
//! side on a machine whose speed drifts from minute to minute. The revision is checked
//! out into `target/bench-baseline/` and built there with a target folder of its own,
//! whose binaries never take the working tree's place.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::spec::workspace_root;

/// Builds benchmark `names` of vm0-server at `revision` and in the working tree, then
/// runs each `passes` times, the two in turns, printing the figures of each.
pub fn run(revision: &str, names: &[String], passes: u32) -> Result<bool> {
    let root = workspace_root();
    let baseline = root.join("target/bench-baseline");
    let checkout = baseline.join("src");
    if checkout.exists() {
        // A checkout left by an interrupted run: removed whether git still knows it or not.
        if git(&root, &["worktree", "remove", "--force", &path_str(&checkout)?]).is_err() {
            std::fs::remove_dir_all(&checkout)?;
        }
    }
    git(&root, &["worktree", "prune"])?;
    git(&root, &["worktree", "add", "--detach", &path_str(&checkout)?, revision])?;
    let before = build(&checkout, &baseline.join("target"), names)?;
    let after = build(&root, &root.join("target"), names)?;
    for pass in 1..=passes {
        for ((name, old), (_, new)) in before.iter().zip(&after) {
            for (label, binary, dir) in [(revision, old, &checkout), ("working tree", new, &root)] {
                println!("== {name}, pass {pass} of {passes}, {label}");
                let status = Command::new(binary)
                    .arg("--bench")
                    .current_dir(dir.join("crates/vm0-server"))
                    .status()
                    .with_context(|| format!("running {}", binary.display()))?;
                if !status.success() {
                    bail!("the {name} benchmark at {label} failed ({status})");
                }
            }
        }
    }
    git(&root, &["worktree", "remove", "--force", &path_str(&checkout)?])?;
    Ok(true)
}

/// The release binaries of vm0-server's benchmarks `names` in the workspace at `dir`,
/// built into `target`, in the order of `names`.
fn build(dir: &Path, target: &Path, names: &[String]) -> Result<Vec<(String, PathBuf)>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", target)
        .args(["bench", "--no-run", "--locked", "-p", "vm0-server"])
        .args(["--message-format", "json-render-diagnostics"]);
    for name in names {
        command.args(["--bench", name]);
    }
    println!("== building the benchmarks in {}", dir.display());
    let output = command.output().context("running cargo bench --no-run")?;
    if !output.status.success() {
        bail!("building the benchmarks in {} failed", dir.display());
    }
    // Each benchmark's executable, from cargo's messages about the artifacts it built.
    let mut built = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let message: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
        let is_bench = message["target"]["kind"]
            .as_array()
            .is_some_and(|kinds| kinds.iter().any(|kind| kind == "bench"));
        if let (true, Some(name), Some(executable)) =
            (is_bench, message["target"]["name"].as_str(), message["executable"].as_str())
        {
            built.push((name.to_string(), PathBuf::from(executable)));
        }
    }
    names
        .iter()
        .map(|name| {
            built
                .iter()
                .find(|(built, _)| built == name)
                .cloned()
                .with_context(|| format!("cargo built no benchmark named {name}"))
        })
        .collect()
}

fn git(dir: &Path, args: &[&str]) -> Result<()> {
    let status = Command::new("git").args(args).current_dir(dir).status()?;
    if !status.success() {
        bail!("git {} failed", args.join(" "));
    }
    Ok(())
}

fn path_str(path: &Path) -> Result<String> {
    path.to_str().map(str::to_string).context("a path that is not UTF-8")
}
