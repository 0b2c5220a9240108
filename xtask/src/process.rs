//! The programs the xtask commands start: cargo, the tools it installs from crates.io, and
//! the reference server.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::spec::workspace_root;

/// Runs `cargo ARGS` in the workspace, after a header naming it; an error names it too.
pub fn cargo(args: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    println!("== cargo {}", args.join(" "));
    if !Command::new(cargo).args(args).current_dir(workspace_root()).status()?.success() {
        bail!("cargo {} failed", args.join(" "));
    }
    Ok(())
}

/// The binary of `krate` at exactly `version`, installed from crates.io with `cargo install
/// --locked` (and the `extra` arguments) into `target/KRATE` on first use. Its build goes
/// in a folder of its own, removed afterwards: hundreds of megabytes that nothing needs
/// again.
pub fn install(krate: &str, version: &str, extra: &[&str]) -> Result<PathBuf> {
    let root = workspace_root().join("target").join(krate);
    let binary = root.join("bin").join(krate);
    if binary.exists() {
        return Ok(binary);
    }
    println!("== installing {krate} {version} into target/{krate}");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["install", krate, "--version", &format!("={version}"), "--locked"])
        .args(extra)
        .arg("--root")
        .arg(&root)
        .env("CARGO_TARGET_DIR", root.join("build"))
        .status()?;
    if !status.success() {
        bail!("installing {krate} failed");
    }
    std::fs::remove_dir_all(root.join("build")).ok();
    Ok(binary)
}

/// A reference server started on a free port over `data_dir`, with the URL and first
/// token it printed; killed when dropped, however the command ends.
pub struct ReferenceServer {
    child: Child,
    pub url: String,
    pub token: String,
}

impl ReferenceServer {
    /// Starts the `vm0-server` binary at `binary` over a fresh `data_dir`.
    pub fn start(binary: &Path, data_dir: &Path) -> Result<ReferenceServer> {
        let child = Command::new(binary)
            .args(["--listen", "127.0.0.1:0", "--log", "warn", "--data-dir"])
            .arg(data_dir)
            // Every request counted against a rate limit that the tools driving the server
            // as fast as they can never reach: the RateLimit fields are on every answer.
            .args(["--rate-limit", "1000000"])
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        // Held from here, so that the server is killed if it does not start as expected.
        let mut server = ReferenceServer { child, url: String::new(), token: String::new() };
        let stdout = server.child.stdout.take().expect("stdout is piped");
        let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
        // The server prints its URL first, then its first token.
        for line in lines.by_ref() {
            if let Some(rest) = line.strip_prefix("vm0-server listening on ") {
                server.url = rest.trim().to_string();
            }
            if let Some(found) = line.split_whitespace().find(|w| w.starts_with("vm0_live_")) {
                server.token = found.trim_matches('"').to_string();
                break;
            }
        }
        if server.url.is_empty() || server.token.is_empty() {
            bail!("{} did not print its URL and first token", binary.display());
        }
        // Whatever else it prints is read, so that it never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Ok(server)
    }
}

impl Drop for ReferenceServer {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}
