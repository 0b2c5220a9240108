//! Every generated file is exactly what `cargo xtask codegen` makes of the spec now.

use xtask::codegen;
use xtask::spec::workspace_root;

#[test]
fn generated_files_match_the_spec() {
    let files = codegen::generate().expect("the spec generates");
    let stale = codegen::stale_files(&workspace_root(), &files);
    let report: String =
        stale.iter().map(|s| format!("{} is stale:\n{}\n", s.path, s.diff)).collect();
    assert!(
        stale.is_empty(),
        "{report}{} generated files are stale; the spec changed without regenerating: run `{}`",
        stale.len(),
        codegen::COMMAND
    );
}

#[test]
fn generation_is_deterministic() {
    let first = codegen::generate().expect("the spec generates");
    let second = codegen::generate().expect("the spec generates");
    assert_eq!(first, second);
}
