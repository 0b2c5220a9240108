//! `cargo xtask docs`: the API's documentation portal as one self-contained page,
//! `target/docs/index.html`: the page the reference server serves at `/docs`
//! (`crates/vm0-server/src/portal.rs`, compiled in here too), Redoc with each operation's
//! code samples and our try-it console, over the published `openapi/v1.json` inlined, so
//! it opens from a file or any static host and makes no request off the machine. The
//! server's copy of Redoc's bundle (`crates/vm0-server/docs/redoc.standalone.js`) is
//! refreshed from the npm package pinned in `xtask/lint-tools/`. `--check` then renders
//! the page in headless Chromium, with every outside request refused, and fails unless it
//! shows every operation with its samples and tried no request, unless the server's copy
//! of the bundle is the pinned one, and unless the try-it console of the served portal
//! gets an answer from a fresh reference server.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::spec::workspace_root;
use crate::tools::{self, output, text};

#[path = "../../crates/vm0-server/src/portal.rs"]
#[allow(unreachable_pub, dead_code)]
mod portal;

/// The one address in Redoc's bundle that the page would load: the logo of its footer.
const REDOC_LOGO: &str = "https://cdn.redoc.ly/redoc/logo-mini.svg";

/// The server's copy of Redoc's bundle.
const VENDORED: &str = "crates/vm0-server/docs/redoc.standalone.js";

/// Where Debian's Chromium lives; `cargo xtask ci` installs it when `CI` is set.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// Redoc's bundle from the pinned package, with nothing in it that loads from outside.
fn redoc_bundle() -> Result<String> {
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
    Ok(bundle)
}

/// Builds the portal and refreshes the server's copy of the bundle; the portal's path.
pub fn build() -> Result<PathBuf> {
    let root = workspace_root();
    let bundle = redoc_bundle()?;
    if !vendored_is_fresh(&bundle)? {
        std::fs::write(root.join(VENDORED), &bundle)?;
        println!("refreshed {VENDORED} from the pinned Redoc");
    }
    let path = root.join("target/docs/index.html");
    std::fs::create_dir_all(path.parent().expect("in a folder"))?;
    std::fs::write(&path, portal::page(&published()?, &bundle))?;
    Ok(path)
}

/// Whether the server's copy of the bundle is `bundle`.
fn vendored_is_fresh(bundle: &str) -> Result<bool> {
    Ok(std::fs::read_to_string(workspace_root().join(VENDORED)).ok().as_deref() == Some(bundle))
}

/// The published spec, with its code samples.
fn published() -> Result<Value> {
    let json = std::fs::read_to_string(workspace_root().join("openapi/v1.json"))?;
    Ok(serde_json::from_str(&json)?)
}

/// Renders `page` in headless Chromium, then the portal a fresh reference server serves;
/// whether the page shows every operation with each of its samples and loaded nothing
/// from outside, the server's copy of the bundle is the pinned one, and the served
/// portal's try-it console sends `listAgents` and shows 200, after printing what it found.
pub fn check(page: &Path) -> Result<bool> {
    let root = workspace_root();
    let npm = tools::npm_tools()?;
    let fresh = vendored_is_fresh(&redoc_bundle()?)?;
    if !fresh {
        println!("{VENDORED} is not the pinned Redoc's bundle: run `cargo xtask docs`");
    }
    let spec = published()?;
    // Beside the node_modules it imports from: ES modules resolve from their own folder.
    let script = npm.join("render.mjs");
    std::fs::copy(root.join("xtask/docs/render.mjs"), &script)?;
    let found = render(&script, &["static", &format!("file://{}", page.display())])?;
    let mut missing = Vec::new();
    let mut shown = 0;
    for op in crate::spec::operations(&spec) {
        let labels = op.op["x-codeSamples"].as_array().into_iter().flatten();
        let labels: Vec<&str> = labels.filter_map(|s| s["label"].as_str()).collect();
        let tabs = found["operations"][op.id()].as_array();
        let Some(tabs) = tabs else {
            missing.push(format!("{}: not shown", op.id()));
            continue;
        };
        shown += 1;
        for label in labels {
            if !tabs.iter().any(|tab| tab == label) {
                missing.push(format!("{}: no {label} sample", op.id()));
            }
        }
    }
    let problems = problems(&found);
    println!(
        "the portal shows {shown} of the spec's {} operations, {} samples missing; it tried \
         {} requests off the machine or had script errors",
        crate::spec::operations(&spec).len(),
        missing.len(),
        problems.len()
    );
    for line in missing.iter().chain(&problems) {
        println!("  {line}");
    }
    let tried = try_it(&script)?;
    Ok(fresh && missing.is_empty() && problems.is_empty() && tried)
}

/// The served portal's try-it console, driven as a reader would: the token pasted,
/// `listAgents` chosen and sent; whether it showed 200 and nothing left the machine.
fn try_it(script: &Path) -> Result<bool> {
    let root = workspace_root();
    crate::process::cargo(&["build", "--quiet", "--locked", "-p", "vm0-server"])?;
    let data_dir = root.join("target/docs-try-it-data");
    if data_dir.exists() {
        std::fs::remove_dir_all(&data_dir)?;
    }
    let server =
        crate::process::ReferenceServer::start(&root.join("target/debug/vm0-server"), &data_dir)?;
    let found = render(script, &["try-it", &format!("{}/docs", server.url), &server.token])?;
    let problems = problems(&found);
    let status = found["status"].as_str().unwrap_or_default();
    println!("the served portal's try-it sent listAgents and showed {status:?}");
    for line in &problems {
        println!("  {line}");
    }
    Ok(status.starts_with("200") && problems.is_empty())
}

/// Runs the render script with `args` after its own and Chromium; its JSON report.
fn render(script: &Path, args: &[&str]) -> Result<Value> {
    let run = output(
        Command::new("node").arg(script).arg(CHROMIUM).args(args),
        "node (the portal's render check)",
    )?;
    if !run.status.success() {
        bail!("rendering the portal failed:\n{}", text(&run));
    }
    serde_json::from_slice(&run.stdout)
        .with_context(|| format!("reading the render check's report: {}", text(&run)))
}

/// The requests off the machine and the script errors a report lists.
fn problems(found: &Value) -> Vec<String> {
    let lists = [&found["outside"], &found["errors"]];
    let items = lists.into_iter().filter_map(Value::as_array).flatten();
    items.map(|item| item.as_str().unwrap_or_default().to_string()).collect()
}
