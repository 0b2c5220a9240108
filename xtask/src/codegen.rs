//! `cargo xtask codegen`: everything the spec generates, computed in memory, then either
//! written or compared with what is committed.

use std::path::Path;

use anyhow::{Context, Result};

use crate::spec::{self, workspace_root};

mod client;
mod mcp;
mod output;
mod samples;
mod server;
mod tests;

pub use client::types_view;
pub use output::{bundled_json, rust_file, Allow, Generated, HEADER};
pub use samples::{Kind as SampleKind, FOLDER as SAMPLES, KINDS as SAMPLE_KINDS};
pub use tests::surface;

/// The command that regenerates every generated file.
pub const COMMAND: &str = "cargo xtask codegen";

/// Every generated file, from the spec at the workspace root.
pub fn generate() -> Result<Vec<Generated>> {
    let doc = spec::load()?;
    let published = samples::with_code_samples(&doc, &workspace_root())?;
    let mut files =
        vec![Generated { path: "openapi/v1.json", contents: bundled_json(&published)? }];
    files.extend(client::generate(&doc)?);
    files.extend(server::generate(&doc)?);
    files.push(mcp::generate(&doc)?);
    let for_tests = tests::generate(&doc, &files)?;
    files.extend(for_tests);
    Ok(files)
}

/// A generated file whose committed copy differs from what the spec gives.
#[derive(Debug)]
pub struct Stale {
    /// The file's path, relative to the workspace root.
    pub path: &'static str,
    /// A unified diff from the committed file to the expected one.
    pub diff: String,
}

/// Compares every generated file with the one at `root`; the stale ones, in order.
pub fn stale_files(root: &Path, files: &[Generated]) -> Vec<Stale> {
    files
        .iter()
        .filter_map(|file| {
            let committed = std::fs::read_to_string(root.join(file.path)).unwrap_or_default();
            (committed != file.contents).then(|| Stale {
                path: file.path,
                diff: similar::TextDiff::from_lines(&committed, &file.contents)
                    .unified_diff()
                    .context_radius(3)
                    .header(
                        &format!("{} (committed)", file.path),
                        &format!("{} (from the spec)", file.path),
                    )
                    .to_string(),
            })
        })
        .collect()
}

/// Writes the files that changed; returns how many did.
pub fn write(root: &Path, files: &[Generated]) -> Result<usize> {
    let stale = stale_files(root, files);
    for file in files.iter().filter(|f| stale.iter().any(|s| s.path == f.path)) {
        let path = root.join(file.path);
        std::fs::create_dir_all(path.parent().expect("generated files live in folders"))?;
        std::fs::write(&path, &file.contents)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(stale.len())
}

/// `cargo xtask codegen [--check]`: writes, or with `check` reports Fresh or Stale for each
/// file (with a diff) and fails when any is stale.
pub fn run(check: bool) -> Result<bool> {
    let root = workspace_root();
    let files = generate()?;
    if !check {
        let changed = write(&root, &files)?;
        println!("{changed} of {} generated files changed", files.len());
        return Ok(true);
    }
    let stale = stale_files(&root, &files);
    for file in &files {
        match stale.iter().find(|s| s.path == file.path) {
            Some(s) => println!("Stale  {}\n{}", s.path, s.diff),
            None => println!("Fresh  {}", file.path),
        }
    }
    if stale.is_empty() {
        println!("all {} generated files are fresh", files.len());
    } else {
        println!("{} of {} generated files are stale: run `{COMMAND}`", stale.len(), files.len());
    }
    Ok(stale.is_empty())
}
