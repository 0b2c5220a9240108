//! The API surface (operations, server trait, client builders, types) as an insta
//! snapshot. `cargo xtask codegen` writes the snapshot with the code, so a spec change
//! shows up in review as a diff of `snapshots/it__surface__api_surface.snap`.

use xtask::{codegen, spec};

#[test]
fn api_surface() {
    let doc = spec::load().unwrap();
    let generated = codegen::generate().unwrap();
    let surface = codegen::surface(&doc, &generated).unwrap();
    insta::assert_snapshot!("api_surface", surface);
}
