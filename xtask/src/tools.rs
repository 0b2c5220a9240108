//! The tools that live outside Rust: from npm, Spectral and Redocly, Redoc (the docs
//! portal's renderer), playwright-core and TypeScript; from PyPI, openapi-spec-validator
//! and schemathesis, and in a venv of their own the portability check's generators and
//! validator. Their versions are pinned in `xtask/lint-tools/`; they are installed into
//! `target/lint-tools/` on first use, and again whenever the pins change, so a fresh clone
//! needs nothing but Node.js, npm, Python 3 (and Java for openapi-generator).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::spec::workspace_root;

/// What one tool said: whether it passed, and its report.
pub struct Verdict {
    /// The tool's name.
    pub tool: &'static str,
    /// Whether it found neither errors nor warnings.
    pub passed: bool,
    /// Its findings, or its one-line summary when it passed.
    pub report: String,
}

/// Runs the three tools on `files` (paths relative to the workspace root).
pub fn lint(files: &[&str]) -> Result<Vec<Verdict>> {
    let root = workspace_root();
    let dir = root.join("target/lint-tools");
    install_npm(&root, &dir)?;
    install_python(&root, &dir)?;
    Ok(vec![
        spectral(&root, &dir, files)?,
        redocly(&root, &dir, files)?,
        spec_validator(&root, &dir, files)?,
    ])
}

/// Copies a pin file into the tools folder and says whether it changed since the last install.
fn refresh_pin(from: &Path, to: &Path) -> Result<bool> {
    let wanted = std::fs::read(from).with_context(|| format!("reading {}", from.display()))?;
    if std::fs::read(to).ok().as_deref() == Some(&wanted[..]) {
        return Ok(false);
    }
    std::fs::create_dir_all(to.parent().expect("pin files live in a folder"))?;
    std::fs::write(to, wanted)?;
    Ok(true)
}

fn install_npm(root: &Path, dir: &Path) -> Result<()> {
    let pins = root.join("xtask/lint-tools");
    let changed = refresh_pin(&pins.join("package.json"), &dir.join("package.json"))?
        | refresh_pin(&pins.join("package-lock.json"), &dir.join("package-lock.json"))?;
    let installed = ["spectral", "redocly", "tsc"].iter().all(|tool| bin(dir, tool).exists());
    if !changed && installed && dir.join("node_modules/redoc/bundles/redoc.standalone.js").exists()
    {
        return Ok(());
    }
    eprintln!("installing the npm tools into {} (npm ci)", dir.display());
    // Install scripts are skipped: the linters need none, and they only phone home.
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error"])
        .current_dir(dir)
        .status()
        .context("running npm; Node.js and npm are needed for the OpenAPI linters")?;
    if !status.success() {
        std::fs::remove_file(dir.join("package-lock.json")).ok();
        bail!("npm ci failed in {}", dir.display());
    }
    Ok(())
}

/// The Python tools' folder, installed: `venv/bin/<tool>` are their commands.
pub fn python_tools() -> Result<PathBuf> {
    let root = workspace_root();
    let dir = root.join("target/lint-tools");
    install_python(&root, &dir)?;
    Ok(dir.join("venv"))
}

/// The npm tools' folder, installed: `node_modules/` holds them.
pub fn npm_tools() -> Result<PathBuf> {
    let root = workspace_root();
    let dir = root.join("target/lint-tools");
    install_npm(&root, &dir)?;
    Ok(dir)
}

/// The portability check's venv, installed: `bin/<tool>` are its commands.
pub fn portability_tools() -> Result<PathBuf> {
    let root = workspace_root();
    let venv = root.join("target/lint-tools/portability-venv");
    install_venv(&venv, &root.join("xtask/lint-tools/portability.txt"), "openapi-python-client")?;
    Ok(venv)
}

fn install_python(root: &Path, dir: &Path) -> Result<()> {
    install_venv(
        &dir.join("venv"),
        &root.join("xtask/lint-tools/requirements.txt"),
        "openapi-spec-validator",
    )
}

/// A venv at `venv` with the pins of `pins`, unless it has them already (`probe` is one
/// of its commands).
fn install_venv(venv: &Path, pins: &Path, probe: &str) -> Result<()> {
    let stamp = venv.join("requirements.txt");
    if venv.join("bin").join(probe).exists()
        && std::fs::read(&stamp).ok() == std::fs::read(pins).ok()
    {
        return Ok(());
    }
    eprintln!("installing {} into {} (pip)", pins.display(), venv.display());
    run_checked(Command::new("python3").args(["-m", "venv"]).arg(venv), "python3 -m venv")?;
    run_checked(
        Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
            .arg(pins),
        "pip install",
    )?;
    std::fs::copy(pins, &stamp)?;
    Ok(())
}

fn run_checked(command: &mut Command, what: &str) -> Result<()> {
    let status = command.status().with_context(|| format!("running {what}"))?;
    if !status.success() {
        bail!("{what} failed");
    }
    Ok(())
}

pub(crate) fn output(command: &mut Command, tool: &str) -> Result<Output> {
    command.output().with_context(|| format!("running {tool}"))
}

pub(crate) fn bin(dir: &Path, name: &str) -> PathBuf {
    dir.join("node_modules/.bin").join(name)
}

pub(crate) fn text(output: &Output) -> String {
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    text.trim().to_string()
}

fn spectral(root: &Path, dir: &Path, files: &[&str]) -> Result<Verdict> {
    let out = output(
        Command::new(bin(dir, "spectral"))
            .args(["lint", "--ruleset", ".spectral.yaml", "--fail-severity", "warn"])
            .args(files)
            .current_dir(root),
        "spectral",
    )?;
    Ok(Verdict {
        tool: "spectral (spectral:oas)",
        passed: out.status.success(),
        report: text(&out),
    })
}

fn redocly(root: &Path, dir: &Path, files: &[&str]) -> Result<Verdict> {
    let out = output(
        Command::new(bin(dir, "redocly"))
            .args(["lint", "--config", "redocly.yaml", "--format", "json"])
            .args(files)
            .env("REDOCLY_TELEMETRY", "off")
            .env("REDOCLY_SUPPRESS_UPDATE_NOTICE", "true")
            .current_dir(root),
        "redocly",
    )?;
    // One JSON report per file, one after the other.
    let reports = serde_json::Deserializer::from_slice(&out.stdout)
        .into_iter::<Value>()
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("reading redocly's JSON reports; it said:\n{}", text(&out)))?;
    let total = |key: &str| {
        reports.iter().filter_map(|r| r.pointer(&format!("/totals/{key}"))?.as_u64()).sum::<u64>()
    };
    let (errors, warnings) = (total("errors"), total("warnings"));
    let mut lines = Vec::new();
    for problem in reports.iter().filter_map(|r| r.get("problems")?.as_array()).flatten() {
        let location = problem.pointer("/location/0");
        let field = |p: &str| {
            location
                .and_then(|l| l.pointer(p))
                .map(|v| v.to_string().trim_matches('"').to_string())
                .unwrap_or_default()
        };
        lines.push(format!(
            "{}:{}:{} {} [{}] {}: {}",
            field("/source/ref"),
            field("/start/line"),
            field("/start/col"),
            field("/pointer"),
            problem.get("ruleId").and_then(Value::as_str).unwrap_or("?"),
            problem.get("severity").and_then(Value::as_str).unwrap_or("?"),
            problem.get("message").and_then(Value::as_str).unwrap_or("?"),
        ));
    }
    lines.push(format!("{errors} errors, {warnings} warnings"));
    Ok(Verdict {
        tool: "redocly (recommended)",
        passed: errors == 0 && warnings == 0 && out.status.success(),
        report: lines.join("\n"),
    })
}

fn spec_validator(root: &Path, dir: &Path, files: &[&str]) -> Result<Verdict> {
    let out = output(
        Command::new(dir.join("venv/bin/openapi-spec-validator")).args(files).current_dir(root),
        "openapi-spec-validator",
    )?;
    Ok(Verdict { tool: "openapi-spec-validator", passed: out.status.success(), report: text(&out) })
}
