//! `cargo xtask`: see `cargo xtask --help`, and `cargo xtask COMMAND --help` for each command.

#![allow(clippy::print_stdout)] // Printing is what this program is for.

use std::process::ExitCode;

use anyhow::Result;
use clap::{CommandFactory, Parser, Subcommand};
use xtask::{
    bench, bench_against, codegen, deny, diff, docs, lint, portability, postgres, process, release,
    s3, samples, schemathesis, spec, tools,
};

/// The workspace's own tooling: what openapi/v1.yaml generates, its lint, its releases,
/// and everything CI runs.
#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    after_help = "Exit codes: 0 success; 1 a check failed (for `diff`, a breaking change); \
                  2 an error, printed as `error: …`, or a usage error."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Regenerate every file that openapi/v1.yaml generates.
    Codegen {
        /// Change nothing; fail, with a diff, when a generated file is stale.
        #[arg(long)]
        check: bool,
    },
    /// Check openapi/v1.yaml: structure, the project's rules, Spectral, Redocly and
    /// openapi-spec-validator (installed into target/lint-tools).
    Lint,
    /// The changes from one spec to another, breaking or not; exits 1 when any is
    /// breaking, 2 when a spec cannot be read.
    Diff {
        /// The old spec: a file, or a git revision of openapi/v1.yaml.
        old: String,
        /// The new spec: a file, or a git revision of openapi/v1.yaml.
        new: String,
        /// How to print the changes.
        #[arg(long, value_enum, default_value_t = diff::Format::Text)]
        format: diff::Format,
    },
    /// Release openapi/v1.yaml as its info.version: the release file, a CHANGELOG.md
    /// entry, and the published crates' versions.
    Release {
        /// Change nothing: compare openapi/v1.yaml with its latest release in
        /// openapi/released/; fail on a breaking change that neither a major version nor
        /// openapi/breaking-changes.yaml allows.
        #[arg(long)]
        check: bool,
    },
    /// Check the dependencies with cargo deny (installed into target/cargo-deny): their
    /// licenses, banned crates and duplicate versions, and the registries they come from,
    /// as deny.toml allows.
    Deny,
    /// Start a throwaway PostgreSQL in target/postgres and print the VM0_TEST_DATABASE_URL
    /// that runs the tests on it; Enter stops it.
    Postgres,
    /// Build the self-contained docs portal, target/docs/index.html (Redoc and the spec
    /// inlined; no request leaves the machine).
    Docs {
        /// Build it, then render it in headless Chromium: every operation shown, no
        /// request off the machine.
        #[arg(long)]
        check: bool,
    },
    /// Run schemathesis against a fresh reference server.
    Schemathesis,
    /// Run every sample of samples/ (curl, Python, TypeScript, Rust, the CLI) against a
    /// fresh reference server, each answer checked against the spec; name each that fails.
    Samples,
    /// Generate clients from openapi/v1.json with openapi-python-client and
    /// openapi-generator (rust, typescript-fetch); fail on any warning about the spec, a
    /// body typed Any, or a tsc --strict error; then a journey through the Python client
    /// against a fresh reference server.
    Portability,
    /// Run the benchmarks (pagination depth, 1 GiB through the server, 1 GiB through the
    /// client) and print their figures; with --against, compare some with a revision.
    Bench {
        /// Instead: build the server's benchmarks named by --bench at this git revision
        /// (in target/bench-baseline) and in the working tree, and run them in turns.
        #[arg(long, value_name = "REV")]
        against: Option<String>,
        /// The benchmarks to compare (with --against).
        #[arg(
            long = "bench",
            value_name = "NAME",
            requires = "against",
            default_values_t = ["agents".to_string(), "run_output".to_string()]
        )]
        benches: Vec<String>,
        /// How many times each side runs (with --against).
        #[arg(long, requires = "against", default_value_t = 3)]
        passes: u32,
    },
    /// Everything CI runs: codegen --check, lint, release --check, fmt --check, deny,
    /// clippy, every test, the end-to-end suites again on PostgreSQL and S3 (s3s-fs,
    /// installed into target/s3s-fs), cargo package of the published crates, samples, docs
    /// --check, portability, schemathesis.
    Ci,
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Some(Command::Codegen { check }) => codegen::run(check),
        Some(Command::Lint) => run_lint(),
        Some(Command::Diff { old, new, format }) => run_diff(&old, &new, format),
        Some(Command::Release { check: true }) => check_release(),
        Some(Command::Release { check: false }) => run_release(),
        Some(Command::Deny) => deny::check().map(|()| true),
        Some(Command::Postgres) => run_postgres(),
        Some(Command::Docs { check: false }) => docs::build().map(|page| {
            println!("{}", page.display());
            true
        }),
        Some(Command::Docs { check: true }) => docs::build().and_then(|page| docs::check(&page)),
        Some(Command::Schemathesis) => schemathesis::run(),
        Some(Command::Samples) => samples::run(),
        Some(Command::Portability) => portability::run(),
        Some(Command::Bench { against: None, .. }) => bench::run(),
        Some(Command::Bench { against: Some(revision), benches, passes }) => {
            bench_against::run(&revision, &benches, passes)
        }
        Some(Command::Ci) => ci(),
        // `cargo xtask` alone lists the commands, and is no error.
        None => Cli::command().print_help().map(|()| true).map_err(Into::into),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        // 2, not 1: `cargo xtask diff` answers 1 for a breaking change, which a script must
        // tell from a spec that could not be read.
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn run_lint() -> Result<bool> {
    let doc = spec::load()?;
    let findings = lint::check(&doc);
    for finding in &findings {
        println!("{}: {finding}", spec::SPEC_PATH);
    }
    println!("project rules: {} findings", findings.len());
    let mut passed = findings.is_empty();
    for verdict in tools::lint(&[spec::SPEC_PATH, "openapi/v1.json"])? {
        passed &= verdict.passed;
        let mark = if verdict.passed { "ok" } else { "FAILED" };
        println!("{}: {mark}\n{}", verdict.tool, indent(&verdict.report));
    }
    Ok(passed)
}

fn check_release() -> Result<bool> {
    let check = release::check(&spec::workspace_root())?;
    print!("{}", check.report());
    Ok(check.passed())
}

fn run_release() -> Result<bool> {
    let released = release::release(&spec::workspace_root(), &release::today())?;
    println!(
        "released {} ({} changes) in {}",
        released.version,
        released.changes,
        released.file.display()
    );
    // Cargo.lock follows the crates' new versions.
    process::cargo(&["update", "--workspace"])?;
    println!("review CHANGELOG.md, then commit openapi/released/, CHANGELOG.md and the manifests");
    Ok(true)
}

fn run_diff(old: &str, new: &str, format: diff::Format) -> Result<bool> {
    let changes = diff::diff(&diff::load(old)?, &diff::load(new)?);
    print!("{}", diff::render(&changes, format));
    Ok(!changes.iter().any(|c| c.breaking))
}

/// The end-to-end suites again, each server on a new database of a PostgreSQL (the one
/// `VM0_TEST_DATABASE_URL` names, else a throwaway one in target/postgres) and a prefix
/// of its own in a bucket of a throwaway S3 server.
fn end_to_end_on_postgres_and_s3() -> Result<()> {
    let mut started = None;
    if std::env::var_os(postgres::TEST_DATABASE_URL).is_none() {
        let postgres = postgres::Postgres::start()?;
        std::env::set_var(postgres::TEST_DATABASE_URL, &postgres.url);
        started = Some(postgres);
    }
    let s3 = s3::S3::start()?;
    let env = s3.env();
    for (name, value) in &env {
        std::env::set_var(name, value);
    }
    let database = std::env::var(postgres::TEST_DATABASE_URL).unwrap_or_default();
    println!("== the end-to-end suites on PostgreSQL at {database} and S3 at {}", s3.endpoint);
    let passed = (|| {
        process::cargo(&[
            "test",
            "--locked",
            "-p",
            "vm0-tests",
            "--test",
            "it",
            "--",
            "e2e_",
            "client_faults",
            "bounded_input",
            "seed_curls",
        ])?;
        process::cargo(&["test", "--locked", "-p", "vm0-cli", "--test", "cli"])?;
        process::cargo(&[
            "test",
            "--locked",
            "-p",
            "vm0-server",
            "--features",
            "failpoints",
            "--test",
            "faults",
            "--test",
            "crash",
            "--test",
            "cluster",
            "--test",
            "scheduler",
            "--test",
            "operations",
        ])
    })();
    for (name, _) in &env {
        std::env::remove_var(name);
    }
    if started.is_some() {
        std::env::remove_var(postgres::TEST_DATABASE_URL);
    }
    passed
}

/// The portal, rendered when Chromium is there. CI installs Debian's package; elsewhere a
/// missing Chromium skips the render, loudly.
fn check_docs() -> Result<bool> {
    let page = docs::build()?;
    if !std::path::Path::new(docs::CHROMIUM).exists() {
        if std::env::var("CI").as_deref() != Ok("true") {
            println!(
                "!! SKIPPED: the portal's render check needs Chromium at {} (apt-get install \
                 chromium); CI installs it",
                docs::CHROMIUM
            );
            return Ok(true);
        }
        println!(
            "installing Chromium (apt-get install chromium), which the portal's render check needs"
        );
        let update = std::process::Command::new("apt-get").args(["update", "-q"]).status()?;
        let install = std::process::Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends", "chromium"])
            .status()?;
        if !update.success() || !install.success() {
            anyhow::bail!("apt-get could not install chromium");
        }
    }
    docs::check(&page)
}

fn run_postgres() -> Result<bool> {
    let postgres = postgres::Postgres::start()?;
    println!("{}={}", postgres::TEST_DATABASE_URL, postgres.url);
    println!("press Enter to stop it");
    std::io::stdin().read_line(&mut String::new())?;
    Ok(true)
}

fn indent(text: &str) -> String {
    text.lines().map(|line| format!("  {line}")).collect::<Vec<_>>().join("\n")
}

fn ci() -> Result<bool> {
    // A fresh CI machine builds once: incremental caches would only take disk space.
    if std::env::var_os("CI").is_some() {
        std::env::set_var("CARGO_INCREMENTAL", "0");
    }
    println!("== cargo xtask codegen --check");
    if !codegen::run(true)? {
        return Ok(false);
    }
    println!("== cargo xtask lint");
    if !run_lint()? {
        return Ok(false);
    }
    println!("== cargo xtask release --check");
    if !check_release()? {
        return Ok(false);
    }
    process::cargo(&["fmt", "--all", "--check"])?;
    deny::check()?;
    process::cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--locked",
        "--",
        "-D",
        "warnings",
    ])?;
    process::cargo(&["test", "--workspace", "--locked"])?;
    end_to_end_on_postgres_and_s3()?;
    // The published crates, as a registry would get them; in one command, so that each
    // builds against the packaged others.
    let mut package = vec!["package", "--locked", "--allow-dirty"];
    for name in release::PUBLISHED {
        package.extend(["-p", name]);
    }
    process::cargo(&package)?;
    println!("== cargo xtask samples");
    if !samples::run()? {
        return Ok(false);
    }
    println!("== cargo xtask docs --check");
    if !check_docs()? {
        return Ok(false);
    }
    println!("== cargo xtask portability");
    if !portability::run()? {
        return Ok(false);
    }
    println!("== cargo xtask schemathesis");
    schemathesis::run()
}
