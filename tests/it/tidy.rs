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
