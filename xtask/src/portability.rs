//! `cargo xtask portability`: the spec as other people's tools read it. Clients are
//! generated from `openapi/v1.json` by openapi-python-client and by openapi-generator
//! (`rust` and `typescript-fetch`); the check fails on any warning either gives about the
//! spec, on any request body the Python client types as `Any`, and on any error of
//! `tsc --strict` in the TypeScript client. Then a journey through the generated Python
//! client runs against a fresh reference server, every raw response validated by
//! openapi-core (`xtask/portability/journey.py`). Everything is installed into `target/`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::process::{cargo, ReferenceServer};
use crate::spec::workspace_root;
use crate::tools::{self, bin, output, text};

/// openapi-generator's notices that are about the target language, not the spec: names it
/// renames because they are keywords or types there (`type`, `Error`), or because a media
/// type is no identifier. Every other warning fails the check.
const LANGUAGE_NOTICES: &[&str] = &[
    "cannot be used as a model name. Renamed to",
    "cannot be used as a field/variable name. Renamed to",
    "cannot be used as a parameter name. Renamed to",
];

/// The spec every tool reads: the bundled JSON twin, as a docs portal or generator gets it.
const SPEC: &str = "openapi/v1.json";

/// What one step found; the check passes when no step found anything.
struct Step {
    name: String,
    findings: Vec<String>,
}

/// Runs every step and prints what each found; whether all found nothing.
pub fn run() -> Result<bool> {
    let root = workspace_root();
    let venv = tools::portability_tools()?;
    let npm = tools::npm_tools()?;
    let out = root.join("target/portability");
    if out.exists() {
        std::fs::remove_dir_all(&out)?;
    }
    std::fs::create_dir_all(&out)?;

    let python_client = out.join("python/vm0_public_api_client");
    let steps = vec![
        python_generation(&root, &venv, &out, &python_client)?,
        openapi_generator(&root, &venv, "rust", &out.join("rust"))?,
        openapi_generator(&root, &venv, "typescript-fetch", &out.join("typescript"))?,
        typescript(&npm, &out.join("typescript"))?,
        journey(&root, &venv, &python_client)?,
    ];
    let mut passed = true;
    for step in &steps {
        passed &= step.findings.is_empty();
        println!("{}: {} findings", step.name, step.findings.len());
        for finding in &step.findings {
            println!("  {finding}");
        }
    }
    Ok(passed)
}

/// The Python client, with openapi-python-client's warnings and every body typed `Any`.
fn python_generation(root: &Path, venv: &Path, out: &Path, client: &Path) -> Result<Step> {
    // Its post-hooks format the code with ruff, which is no part of the spec's quality.
    let config = out.join("openapi-python-client.yaml");
    std::fs::write(&config, "post_hooks: []\n")?;
    let run = output(
        Command::new(venv.join("bin/openapi-python-client"))
            .args(["generate", "--path", SPEC, "--meta", "none", "--overwrite", "--output-path"])
            .arg(client)
            .arg("--config")
            .arg(&config)
            .current_dir(root),
        "openapi-python-client",
    )?;
    let said = text(&run);
    // Its warnings start "Warning(s) encountered" and each problem "Unable to parse".
    let mut findings: Vec<String> = said
        .lines()
        .filter(|l| l.starts_with("Warning") || l.starts_with("Unable") || l.starts_with("Error"))
        .map(str::to_string)
        .collect();
    if !run.status.success() {
        findings.push(format!("openapi-python-client failed:\n{said}"));
        return Ok(Step { name: "openapi-python-client".into(), findings });
    }
    for file in files(&client.join("api"), "py")? {
        let code = std::fs::read_to_string(&file)?;
        if code.lines().any(|l| l.trim() == "body: Any,") {
            findings.push(format!(
                "{}: the request body is typed Any",
                file.strip_prefix(root).unwrap_or(&file).display()
            ));
        }
    }
    Ok(Step { name: "openapi-python-client".into(), findings })
}

/// One openapi-generator client, with every warning that is not a language notice.
fn openapi_generator(root: &Path, venv: &Path, generator: &str, out: &Path) -> Result<Step> {
    let run = output(
        Command::new(venv.join("bin/openapi-generator-cli"))
            .args(["generate", "--input-spec", SPEC, "--generator-name", generator, "--output"])
            .arg(out)
            .current_dir(root),
        "openapi-generator (Java 17 is needed)",
    )?;
    let said = text(&run);
    let mut findings: Vec<String> = said
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains("ERROR"))
        .filter(|l| !LANGUAGE_NOTICES.iter().any(|n| l.contains(n)))
        .map(str::to_string)
        .collect();
    findings.dedup();
    if !run.status.success() {
        findings.push(format!("openapi-generator {generator} failed:\n{said}"));
    }
    Ok(Step { name: format!("openapi-generator {generator}"), findings })
}

/// `tsc --strict` over the TypeScript client.
fn typescript(npm: &Path, client: &Path) -> Result<Step> {
    let sources = files(client, "ts")?;
    let run = output(
        Command::new(bin(npm, "tsc"))
            .args([
                "--strict",
                "--noEmit",
                "--target",
                "es2020",
                "--module",
                "es2020",
                "--moduleResolution",
                "node",
                "--lib",
                "es2020,dom",
            ])
            .args(&sources),
        "tsc",
    )?;
    let findings = if run.status.success() {
        Vec::new()
    } else {
        text(&run).lines().map(str::to_string).collect()
    };
    Ok(Step { name: "tsc --strict".into(), findings })
}

/// The Python journey against a fresh reference server.
fn journey(root: &Path, venv: &Path, client: &Path) -> Result<Step> {
    cargo(&["build", "--quiet", "--locked", "-p", "vm0-server"])?;
    let data_dir = root.join("target/portability-data");
    if data_dir.exists() {
        std::fs::remove_dir_all(&data_dir)?;
    }
    let server = ReferenceServer::start(&root.join("target/debug/vm0-server"), &data_dir)?;
    let run = output(
        Command::new(venv.join("bin/python"))
            .arg(root.join("xtask/portability/journey.py"))
            .args(["--url", &server.url, "--token", &server.token, "--spec", SPEC, "--client"])
            .arg(client.parent().context("the client lives in a folder")?)
            .current_dir(root),
        "the Python journey",
    )?;
    drop(server);
    let said = text(&run);
    println!("{said}");
    let mut findings: Vec<String> =
        said.lines().filter_map(|l| l.strip_prefix("FINDING ")).map(str::to_string).collect();
    if !run.status.success() && findings.is_empty() {
        findings.push(format!("the journey failed:\n{said}"));
    }
    Ok(Step { name: "the Python journey".into(), findings })
}

/// Every file under `dir` whose name ends with `.ext`, sorted.
fn files(dir: &Path, ext: &str) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
        {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == ext) {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}
