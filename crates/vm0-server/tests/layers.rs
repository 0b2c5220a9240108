//! The server's modules form layers, each using only the ones below it: ids, secrets and
//! cursors; then the store and the blobs; then the runs engine; then the API; then the
//! library's routes and the binary. A module that reaches up is a cycle in the making,
//! so this test reads every `crate::` path in `src/` and fails on one that does; and
//! within a layer, no two files may use each other, directly or through others (the
//! workspace's tidy rule, `vm0_tests::tidy::cycles`).

use std::path::Path;

/// Each top-level module and its layer; a module may use its own layer and those below.
const LAYERS: &[(&str, u8)] = &[
    ("defaults", 0),
    ("ids", 0),
    ("metrics", 0),
    ("paths", 0),
    ("secrets", 0),
    ("cursor", 1),
    ("store", 2),
    ("blobs", 3),
    ("testing", 3),
    ("runs", 4),
    ("api", 5),
    ("backup", 6),
    ("lib", 6),
];

fn layer(module: &str) -> u8 {
    LAYERS
        .iter()
        .find(|(name, _)| *name == module)
        .unwrap_or_else(|| panic!("module {module} has no layer in tests/layers.rs"))
        .1
}

/// The top-level module a source file belongs to.
fn module_of(relative: &Path) -> String {
    let first = relative.components().next().unwrap().as_os_str().to_string_lossy().into_owned();
    match first.trim_end_matches(".rs") {
        "main" | "lib" => "lib".to_string(),
        other => other.to_string(),
    }
}

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_module_uses_one_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut violations = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&src).unwrap();
        let module = module_of(relative);
        let text = std::fs::read_to_string(file).unwrap();
        // `crate::a::b`, and every name of a `crate::{a, b}` group.
        for (at, _) in text.match_indices("crate::") {
            let rest = &text[at + "crate::".len()..];
            let names: Vec<&str> = match rest.strip_prefix('{') {
                Some(group) => group[..group.find('}').unwrap()]
                    .split(',')
                    .map(|n| n.trim().split("::").next().unwrap().trim())
                    .collect(),
                None => {
                    vec![rest.split(|c: char| !(c.is_alphanumeric() || c == '_')).next().unwrap()]
                }
            };
            for name in
                names.into_iter().filter(|n| !n.is_empty() && LAYERS.iter().any(|(m, _)| m == n))
            {
                if layer(name) > layer(&module) {
                    violations
                        .push(format!("{} ({module}) uses crate::{name}", relative.display()));
                }
            }
        }
    }
    assert!(violations.is_empty(), "modules reaching up a layer:\n{}", violations.join("\n"));
    assert!(files.len() > 20, "read only {} files", files.len());
}

#[test]
fn no_files_use_each_other() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let sources = vm0_tests::tidy::read_sources(root, &[root.join("src")]).unwrap();
    let cycles = vm0_tests::tidy::cycles(&sources);
    let report: Vec<String> = cycles.iter().map(ToString::to_string).collect();
    assert!(cycles.is_empty(), "import cycles between files of src/:\n{}", report.join("\n"));
    assert!(sources.len() > 20, "read only {} files", sources.len());
}
