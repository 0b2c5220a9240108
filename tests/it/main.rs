//! The cross-crate tests, in one binary so that linking happens once.

mod drift;
mod lint_rules;
mod recorder;
mod router;
mod spec_sources;
