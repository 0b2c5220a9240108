//! `cargo xtask docs`: the API's documentation as one self-contained page,
//! `target/docs/index.html`. Redoc's standalone bundle (the npm package, pinned in
//! `xtask/lint-tools/`) and the spec are inlined, so the page opens from a file or any
//! static host and makes no request off the machine. `--check` then renders it in
//! headless Chromium, with every outside request refused, and fails unless it shows every
//! operation of the spec and tried no request.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::spec::{self, workspace_root};
use crate::tools::{self, output, text};

/// The one address in Redoc's bundle that the page would load: the logo of its footer.
const REDOC_LOGO: &str = "https://cdn.redoc.ly/redoc/logo-mini.svg";

/// Where Debian's Chromium lives; `cargo xtask ci` installs it when `CI` is set.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// Builds the portal; its path.
pub fn build() -> Result<PathBuf> {
    let root = workspace_root();
    let npm = tools::npm_tools()?;
    let bundle =
        std::fs::read_to_string(npm.join("node_modules/redoc/bundles/redoc.standalone.js"))
            .context("reading Redoc's standalone bundle")?;
    if !bundle.contains(REDOC_LOGO) {
        bail!(
            "Redoc's bundle no longer names {REDOC_LOGO}: check what else it loads, then update \
             xtask/src/docs.rs"
        );
    }
    // An empty image in its place, so that the footer loads nothing.
    let bundle = bundle
        .replace(REDOC_LOGO, "data:image/svg+xml,%3Csvg%20xmlns='http://www.w3.org/2000/svg'/%3E");
    if bundle.contains("</script") {
        bail!("Redoc's bundle holds </script, which would end the page's script early");
    }
    let doc = spec::load()?;
    let title = doc.pointer("/info/title").and_then(Value::as_str).unwrap_or("API");
    // Inside a script element, `</` would end it: JSON lets `/` be escaped.
    let spec_json = serde_json::to_string(&doc)?.replace("</", "<\\/");
    // Redoc with every success response open and JSON samples three levels deep.
    let init = concat!(
        r#"Redoc.init(JSON.parse(document.getElementById("spec").textContent), "#,
        r#"{ expandResponses: "200,201,202,204", jsonSampleExpandLevel: 3 }, "#,
        r#"document.getElementById("redoc"));"#,
    );
    let page = format!(
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} v1</title>
<style>body {{ margin: 0; padding: 0; }}</style>
</head>
<body>
<div id="redoc"></div>
<script id="spec" type="application/json">{spec_json}</script>
<script>{bundle}</script>
<script>
{init}
</script>
</body>
</html>
"#
    );
    let path = root.join("target/docs/index.html");
    std::fs::create_dir_all(path.parent().expect("in a folder"))?;
    std::fs::write(&path, page)?;
    Ok(path)
}

/// Renders `page` in headless Chromium; whether it shows every operation and loaded
/// nothing from outside, after printing what it found.
pub fn check(page: &Path) -> Result<bool> {
    let root = workspace_root();
    let npm = tools::npm_tools()?;
    let wanted: Vec<String> =
        spec::operations(&spec::load()?).iter().map(|op| op.id().to_string()).collect();
    // Beside the node_modules it imports from: ES modules resolve from their own folder.
    let script = npm.join("render.mjs");
    std::fs::copy(root.join("xtask/docs/render.mjs"), &script)?;
    let run = output(
        Command::new("node").arg(&script).arg(format!("file://{}", page.display())).arg(CHROMIUM),
        "node (the portal's render check)",
    )?;
    if !run.status.success() {
        bail!("rendering the portal failed:\n{}", text(&run));
    }
    let found: Value = serde_json::from_slice(&run.stdout)
        .with_context(|| format!("reading the render check's report: {}", text(&run)))?;
    let shown: Vec<&str> =
        found["operations"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    let missing: Vec<&String> = wanted.iter().filter(|id| !shown.contains(&id.as_str())).collect();
    let outside = found["outside"].as_array().cloned().unwrap_or_default();
    let errors = found["errors"].as_array().cloned().unwrap_or_default();
    println!(
        "the portal shows {} of the spec's {} operations; it tried {} requests off the \
         machine; {} script errors",
        wanted.len() - missing.len(),
        wanted.len(),
        outside.len(),
        errors.len()
    );
    for id in &missing {
        println!("  not shown: {id}");
    }
    for url in outside.iter().chain(&errors) {
        println!("  {url}");
    }
    Ok(missing.is_empty() && outside.is_empty() && errors.is_empty())
}
