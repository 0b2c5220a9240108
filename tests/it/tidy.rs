//! The workspace's hand-written Rust keeps the tidy rules of `vm0_tests::tidy`: no import
//! cycle between the files of one crate, no function over 100 lines, no line over 100
//! columns, no `Result<_, String>`.

use vm0_tests::tidy;
use xtask::spec::workspace_root;

#[test]
fn the_workspace_is_tidy() {
    let root = workspace_root();
    let sources = tidy::read_sources(&root, &tidy::source_dirs(&root)).expect("sources read");
    assert!(
        sources.iter().any(|s| s.path.starts_with("crates/vm0-server/src"))
            && sources.iter().any(|s| s.path.starts_with("tests/it"))
            && sources.len() > 100,
        "read only {} files",
        sources.len()
    );
    let violations = tidy::check(&sources);
    let report: Vec<String> = violations.iter().map(ToString::to_string).collect();
    assert!(violations.is_empty(), "{} untidy places:\n{}", violations.len(), report.join("\n"));
}

/// ARCHITECTURE.md's codemap names every hand-written source file, so that a newcomer
/// finds where anything lives from it (by the file's name in backticks, alone or at the
/// end of a path).
#[test]
fn the_codemap_names_every_source_file() {
    let root = workspace_root();
    let map = std::fs::read_to_string(root.join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let sources = tidy::read_sources(&root, &tidy::source_dirs(&root)).expect("sources read");
    let unnamed: Vec<String> = sources
        .iter()
        .filter(|source| !source.is_generated())
        .filter(|source| {
            let name = source.path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            !map.contains(&format!("`{name}`")) && !map.contains(&format!("/{name}`"))
        })
        .map(|source| source.path.display().to_string())
        .collect();
    assert!(unnamed.is_empty(), "ARCHITECTURE.md does not name:\n{}", unnamed.join("\n"));
}
