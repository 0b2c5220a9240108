//! The VM0 Public API v1 models: every component schema of `openapi/v1.yaml` as a Rust
//! type with serde and `schemars::JsonSchema`. Strings the spec constrains (names, paths,
//! hashes) are newtypes that check the constraint when built or deserialized.
//!
//! Everything here is generated into `generated.rs` by `cargo xtask codegen`.

#[rustfmt::skip] // Written by `cargo xtask codegen`, which formats it itself.
mod generated;

pub use generated::*;

// The README, which a registry shows, with its example compiled as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
