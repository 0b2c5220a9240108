//! Helpers shared by the cross-crate tests in `it/`.

pub mod processes;
pub mod seeds;
pub mod server;
pub mod wait;
