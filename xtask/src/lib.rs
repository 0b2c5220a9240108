//! The workspace's own tooling, run as `cargo xtask <command>`: code generation from the
//! spec, the spec's lint, and the CI entry point. It is a library too, so that the tests
//! can regenerate and lint in memory.

#![allow(clippy::print_stdout)] // Printing is what this program is for.

pub mod bench;
pub mod bench_against;
pub mod codegen;
pub mod deny;
pub mod diff;
pub mod docs;
pub mod lint;
pub mod portability;
pub mod postgres;
pub mod process;
pub mod release;
pub mod s3;
pub mod samples;
pub mod schemathesis;
pub mod spec;
pub mod tools;
pub mod version;
