//! `vm0`, the command-line tool of the VM0 Public API v1, built on `vm0-client`.
//!
//! Each command group is a module with its clap `Command` and the code that runs it;
//! `config` keeps the login, `output` prints tables, JSON and errors, and `lookup` finds
//! what an argument names.

#![allow(clippy::print_stdout)] // Printing is what this program is for.

mod agents;
mod auth;
mod config;
mod lookup;
mod mcp;
mod output;
mod runs;
mod storage;
mod tokens;

use std::fmt::Display;
use std::process::ExitCode;
use std::str::FromStr;

use clap::{Parser, Subcommand};

const AFTER_HELP: &str = "\
Log in first with `vm0 auth login`; VM0_API_URL and VM0_TOKEN, when set, override the stored login.

Exit codes: 0 success; 1 an error (printed on standard error with its code and request id); \
2 a usage error;
`vm0 run` also exits 3 when the run failed, 4 when it timed out, 5 when it was cancelled and \
130 when left running.";

/// Manage VM0 agents, run them, and move their files.
#[derive(Parser)]
#[command(name = "vm0", version, after_help = AFTER_HELP, arg_required_else_help = true)]
struct Cli {
    /// Print JSON for scripts instead of tables and messages.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Log in with an API token, show it for CI, or log out.
    #[command(subcommand)]
    Auth(auth::Command),
    /// Create, inspect, update and delete agents.
    #[command(subcommand)]
    Agents(agents::Command),
    /// Run an agent and print its output live until the run ends.
    #[command(
        override_usage = concat!(
            "vm0 run [OPTIONS] <AGENT> <PROMPT>\n",
            "       vm0 run [OPTIONS] --session <ID> <PROMPT>\n",
            "       vm0 run [OPTIONS] --checkpoint <ID> <PROMPT>",
        ),
        after_help = concat!(
            "Exit codes: 0 completed, 3 failed, 4 timed out, 5 cancelled, ",
            "130 left running (Ctrl-C twice), 1 an error, 2 a usage error.",
        )
    )]
    Run(runs::RunArgs),
    /// List runs, show one, cancel one, print its logs or metrics.
    #[command(subcommand)]
    Runs(runs::Command),
    /// Volumes: versioned sets of input files that runs mount.
    #[command(subcommand)]
    Volumes(storage::Command),
    /// Artifacts: versioned sets of files that runs write.
    #[command(subcommand)]
    Artifacts(storage::Command),
    /// List, create and revoke API tokens.
    #[command(subcommand)]
    Tokens(tokens::Command),
    /// Serve the API as MCP tools over stdio, for an AI assistant to call.
    Mcp(mcp::McpArgs),
    /// Print a completion script for your shell.
    #[command(
        after_help = concat!(
            "For example: vm0 completions bash > ~/.local/share/bash-completion/completions/vm0\n",
            "         or: vm0 completions zsh > \"${fpath[1]}/_vm0\"",
        )
    )]
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// A command-line value as an API type, whose own check says what is wrong with it.
pub fn parse_arg<T: FromStr>(value: &str) -> anyhow::Result<T>
where
    T::Err: Display,
{
    value.parse().map_err(|e| anyhow::anyhow!("{value:?}: {e}"))
}

/// A parser for an API enum that lists its values in help and errors, read from the
/// type's JSON Schema so that it follows the spec.
pub fn enum_arg<T>() -> impl clap::builder::TypedValueParser<Value = T>
where
    T: schemars::JsonSchema + FromStr + Clone + Send + Sync + 'static,
    T::Err: Display,
{
    let schema = schemars::schema_for!(T);
    let values: Vec<&'static str> = schema
        .get("enum")
        .and_then(|values| values.as_array())
        .expect("an API enum's schema lists its values")
        .iter()
        .filter_map(|value| value.as_str())
        // Leaked once per parser: clap keeps possible values for the program's life.
        .map(|value| &*Box::leak(value.to_string().into_boxed_str()))
        .collect();
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(values).map(|value| {
        value
            .parse::<T>()
            .unwrap_or_else(|e| panic!("{value}, a value of the schema, does not parse: {e}"))
    })
}

/// The command line, with the volumes' and artifacts' help worded for each.
fn cli_command() -> clap::Command {
    use clap::CommandFactory;
    Cli::command()
        .mut_subcommand("volumes", |c| storage::Kind::Volume.name_in_help(c))
        .mut_subcommand("artifacts", |c| storage::Kind::Artifact.name_in_help(c))
}

fn parse() -> Cli {
    use clap::FromArgMatches;
    Cli::from_arg_matches(&cli_command().get_matches()).unwrap_or_else(|e| e.exit())
}

#[tokio::main]
async fn main() -> ExitCode {
    // Like other Unix tools, end quietly when the reader of our output goes away
    // (`vm0 runs list | head`), instead of panicking on the failed write.
    // SAFETY: restoring a signal's default disposition at start, before any thread uses it.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = parse();
    match dispatch(cli.command, cli.json).await {
        Ok(code) => code,
        Err(error) => {
            output::error(&error);
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command, json: bool) -> anyhow::Result<ExitCode> {
    match command {
        Command::Auth(command) => {
            auth::run(command, json).await?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut cli_command(), "vm0", &mut std::io::stdout());
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    let client = auth::client()?;
    match command {
        Command::Auth(_) | Command::Completions { .. } => unreachable!("handled above"),
        Command::Agents(command) => agents::run(command, &client, json).await?,
        Command::Run(args) => return runs::start(args, &client, json).await,
        Command::Runs(command) => runs::run(command, &client, json).await?,
        Command::Volumes(command) => {
            storage::run(storage::Kind::Volume, command, &client, json).await?
        }
        Command::Artifacts(command) => {
            storage::run(storage::Kind::Artifact, command, &client, json).await?
        }
        Command::Tokens(command) => tokens::run(command, &client, json).await?,
        Command::Mcp(args) => mcp::serve(args, client).await?,
    }
    Ok(ExitCode::SUCCESS)
}
