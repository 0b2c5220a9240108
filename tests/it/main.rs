//! The cross-crate tests, in one binary so that linking happens once.

mod bounded_input;
mod client_faults;
mod conformance;
mod drift;
mod e2e_agents;
mod e2e_client;
mod e2e_conditional;
mod e2e_fairness;
mod e2e_idempotency;
mod e2e_retention;
mod e2e_runs;
mod e2e_sandbox;
mod e2e_storage;
mod e2e_tokens;
#[rustfmt::skip] // Written by `cargo xtask codegen`, which formats it itself.
mod generated_components;
mod keeper;
mod lint_rules;
mod recorder;
mod router;
mod schemas;
mod seed_curls;
mod spec_diff;
mod spec_releases;
mod spec_sources;
mod surface;
mod tidy;
