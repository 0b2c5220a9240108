//! The code samples of `samples/<operationId>/`, put into the published `openapi/v1.json`
//! as each operation's `x-codeSamples` (`lang`, `label`, `source`): the extension Redoc,
//! Scalar and ReadMe read, so every portal that loads the spec shows them. The
//! hand-written `openapi/v1.yaml` stays without them; the drift check covers them through
//! `v1.json`.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::spec;

/// The folder of the samples, one folder per operation.
pub const FOLDER: &str = "samples";

/// A kind of sample: its file in an operation's folder, and how portals name it.
pub struct Kind {
    pub file: &'static str,
    pub lang: &'static str,
    pub label: &'static str,
    /// Whether every operation must have one.
    pub required: bool,
}

/// Every kind, in the order portals show them.
pub const KINDS: [Kind; 5] = [
    Kind { file: "curl.sh", lang: "Shell", label: "curl", required: true },
    Kind { file: "cli.sh", lang: "Shell", label: "vm0 CLI", required: false },
    Kind { file: "rust.rs", lang: "Rust", label: "Rust (vm0-client)", required: true },
    Kind { file: "python.py", lang: "Python", label: "Python", required: true },
    Kind { file: "typescript.ts", lang: "TypeScript", label: "TypeScript", required: true },
];

/// `doc` with each operation's samples, read from `root`'s samples folder, as its
/// `x-codeSamples`. An operation without a required kind, or a folder that names no
/// operation, is an error.
pub(super) fn with_code_samples(doc: &Value, root: &Path) -> Result<Value> {
    let mut out = doc.clone();
    let folder = root.join(FOLDER);
    let mut ids = Vec::new();
    for op in spec::operations(doc) {
        let id = op.id().to_string();
        let mut samples = Vec::new();
        for kind in &KINDS {
            let path = folder.join(&id).join(kind.file);
            match std::fs::read_to_string(&path) {
                Ok(source) => samples.push(json!({
                    "lang": kind.lang,
                    "label": kind.label,
                    "source": source,
                })),
                Err(_) if !kind.required => {}
                Err(error) => bail!(
                    "{id} has no {} sample ({}: {error}): every operation needs one",
                    kind.lang,
                    path.display()
                ),
            }
        }
        let pointer = op.pointer();
        let target = out
            .pointer_mut(pointer.trim_start_matches('#'))
            .context("the operation is in the spec")?;
        target["x-codeSamples"] = Value::Array(samples);
        ids.push(id);
    }
    for entry in std::fs::read_dir(&folder).with_context(|| format!("reading {FOLDER}/"))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type()?.is_dir() && !ids.contains(&name) && !IGNORED.contains(&name.as_str())
        {
            bail!("{FOLDER}/{name}/ names no operation of the spec");
        }
    }
    Ok(out)
}

/// Folders of `samples/` that are not an operation's.
const IGNORED: [&str; 1] = ["target"];
