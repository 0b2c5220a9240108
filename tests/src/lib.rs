//! Helpers shared by the cross-crate tests in `it/`.

pub mod conformance;
pub mod processes;
pub mod proxy;
pub mod seeds;
pub mod server;
pub mod tidy;
pub mod wait;

// The workspace README's Rust examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
