//! The runner of `cargo xtask samples`: every sample of `samples/`, language by language,
//! in the order of `samples/order.json`, against a fresh reference server behind the
//! checking proxy (`vm0_tests::conformance`), so that a sample fails when it exits
//! non-zero, prints something other than the manifest says, or gets an answer the spec
//! does not allow. Each failure names the sample's file.
//!
//! `cargo xtask samples` builds what it needs first and passes the folders:
//! `vm0-run-samples <rust binaries> <compiled TypeScript> <vm0 binary's folder>`.

#![allow(clippy::print_stdout)] // Printing the report is what this program is for.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail};
use serde::Deserialize;
use serde_json::{Map, Value};
use vm0_tests::server::TestServer;

/// One step of `order.json` (its semantics are in `samples/README.md`).
#[derive(Deserialize)]
struct Step {
    operation: String,
    #[serde(default)]
    env: Map<String, Value>,
    #[serde(default)]
    gives: Map<String, Value>,
    output: Output,
    cli: Option<CliOutput>,
    wait: Option<String>,
}

#[derive(Deserialize, Clone, Copy, PartialEq)]
#[serde(rename_all = "kebab-case")]
enum Output {
    Json,
    JsonLines,
    None,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "kebab-case")]
enum CliOutput {
    Same,
    Json,
}

/// The languages, each with its file and the folders of what runs it.
#[derive(Clone, Copy)]
enum Lang {
    Curl,
    Python,
    TypeScript,
    Rust,
    Cli,
}

const LANGS: [Lang; 5] = [Lang::Curl, Lang::Python, Lang::TypeScript, Lang::Rust, Lang::Cli];

/// Where the built samples are.
struct Built {
    rust: PathBuf,
    typescript: PathBuf,
    cli: PathBuf,
}

impl Lang {
    fn name(self) -> &'static str {
        match self {
            Lang::Curl => "curl",
            Lang::Python => "python",
            Lang::TypeScript => "typescript",
            Lang::Rust => "rust",
            Lang::Cli => "cli",
        }
    }

    fn file(self) -> &'static str {
        match self {
            Lang::Curl => "curl.sh",
            Lang::Python => "python.py",
            Lang::TypeScript => "typescript.ts",
            Lang::Rust => "rust.rs",
            Lang::Cli => "cli.sh",
        }
    }

    /// The command that runs `operation`'s sample.
    fn command(self, samples: &Path, operation: &str, built: &Built) -> tokio::process::Command {
        let source = samples.join(operation).join(self.file());
        let (program, arg) = match self {
            Lang::Curl | Lang::Cli => ("sh".into(), Some(source)),
            Lang::Python => ("python3".into(), Some(source)),
            Lang::TypeScript => {
                ("node".into(), Some(built.typescript.join(operation).join("typescript.js")))
            }
            Lang::Rust => (built.rust.join(kebab(operation)), None),
        };
        let mut command = tokio::process::Command::new(program);
        command.args(arg);
        if let Lang::Cli = self {
            let path = std::env::var("PATH").unwrap_or_default();
            command.env("PATH", format!("{}:{path}", built.cli.display()));
        }
        command
    }
}

/// `listAgents` as `list-agents`, the name of its Rust sample's binary.
fn kebab(operation: &str) -> String {
    let mut out = String::new();
    for c in operation.chars() {
        if c.is_ascii_uppercase() {
            out.push('-');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [rust, typescript, cli] = <[PathBuf; 3]>::try_from(args).unwrap_or_else(|_| {
        eprintln!("usage: vm0-run-samples <rust binaries> <compiled TypeScript> <vm0's folder>");
        std::process::exit(2)
    });
    let built = Built { rust, typescript, cli };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let samples = root.join("samples");
    let order = std::fs::read_to_string(samples.join("order.json")).expect("samples/order.json");
    let steps: Vec<Step> = serde_json::from_str(&order).expect("order.json is a list of steps");
    let server = TestServer::start().await;
    let scratch = tempfile::tempdir().expect("a scratch folder");
    let (mut ran, mut failures) = (0, Vec::new());
    for lang in LANGS {
        match run_language(&server, lang, &steps, &samples, &built, scratch.path()).await {
            Ok(count) => ran += count,
            Err((count, failure)) => {
                ran += count;
                failures.push(failure);
            }
        }
    }
    for failure in &failures {
        println!("FAILED {failure}\n");
    }
    println!("{ran} samples ran, {} failed", failures.len());
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Runs every step in `lang`; how many samples ran, and the first failure, which ends the
/// language's run (the steps after it need what it would have given).
async fn run_language(
    server: &TestServer,
    lang: Lang,
    steps: &[Step],
    samples: &Path,
    built: &Built,
    scratch: &Path,
) -> Result<usize, (usize, String)> {
    let config = scratch.join(format!("config-{}", lang.name()));
    let mut env: Vec<(String, String)> = vec![
        ("VM0_API_URL".into(), server.url.clone()),
        ("VM0_TOKEN".into(), server.token.clone()),
        ("XDG_CONFIG_HOME".into(), config.display().to_string()),
    ];
    let mut ran = 0;
    for step in steps {
        let expected = match (lang, step.cli) {
            (Lang::Cli, None) => continue,
            (Lang::Cli, Some(CliOutput::Json)) => Output::Json,
            _ => step.output,
        };
        let name = format!("samples/{}/{}", step.operation, lang.file());
        for (key, value) in &step.env {
            let value = value.as_str().unwrap_or_default().replace("{lang}", lang.name());
            set(&mut env, key, value.replace("{tmp}", &scratch.display().to_string()));
        }
        if step.wait.as_deref() == Some("run-ended") {
            let run = env.iter().find(|(k, _)| k == "VM0_RUN_ID").map(|(_, v)| v.clone());
            wait_for_end(server, run.as_deref().unwrap_or_default())
                .await
                .map_err(|e| (ran, format!("{name}: before it, {e}")))?;
        }
        let mut command = lang.command(samples, &step.operation, built);
        command.envs(env.iter().map(|(k, v)| (k, v))).current_dir(scratch);
        let printed = run(command).await.map_err(|e| (ran, format!("{name}: {e}")))?;
        ran += 1;
        let violations = server.take_violations();
        if !violations.is_empty() {
            let said = violations.join("\n");
            return Err((ran, format!("{name}: an answer broke the spec:\n{said}")));
        }
        let output = check_output(&printed, expected).map_err(|e| (ran, format!("{name}: {e}")))?;
        for (key, pointer) in &step.gives {
            let pointer = pointer.as_str().unwrap_or_default();
            let value = output.as_ref().and_then(|o| o.pointer(pointer));
            let value = match value {
                Some(Value::String(text)) => text.clone(),
                Some(other) => other.to_string(),
                None => return Err((ran, format!("{name}: printed nothing at {pointer}"))),
            };
            set(&mut env, key, value);
        }
    }
    Ok(ran)
}

fn set(env: &mut Vec<(String, String)>, key: &str, value: String) {
    env.retain(|(k, _)| k != key);
    env.push((key.to_string(), value));
}

/// Runs a sample to its end, within a minute; what it printed, or why it failed.
async fn run(mut command: tokio::process::Command) -> anyhow::Result<String> {
    command.stdin(std::process::Stdio::null()).kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .map_err(|_| anyhow!("did not end within 60 s"))?
        .map_err(|e| anyhow!("could not start: {e}"))?;
    let (stdout, stderr) =
        (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    if !output.status.success() {
        bail!("{}\nstdout: {stdout}\nstderr: {stderr}", output.status);
    }
    Ok(stdout.into_owned())
}

/// Checks what a sample printed against what its step says; the JSON document it printed,
/// if that is what it prints.
fn check_output(printed: &str, expected: Output) -> anyhow::Result<Option<Value>> {
    let parse = |text: &str| {
        serde_json::from_str::<Value>(text).map_err(|e| anyhow!("printed no JSON ({e}): {text}"))
    };
    match expected {
        Output::Json => parse(printed.trim()).map(Some),
        Output::JsonLines => {
            let events = printed.lines().filter(|l| !l.trim().is_empty());
            let events = events.map(parse).collect::<Result<Vec<_>, _>>()?;
            match events.last() {
                Some(last) if last["event"] == "complete" => Ok(None),
                _ => bail!("printed no complete event last: {printed}"),
            }
        }
        Output::None if printed.trim().is_empty() => Ok(None),
        Output::None => bail!("printed something, where the API answers 204: {printed}"),
    }
}

/// Waits for the run `id` to reach a terminal status.
async fn wait_for_end(server: &TestServer, id: &str) -> anyhow::Result<()> {
    let client = server.client();
    for _ in 0..600 {
        let run = client.get_run().id(id).send().await.map_err(|e| anyhow!("{e}"))?;
        if !matches!(run.status, vm0_types::RunStatus::Pending | vm0_types::RunStatus::Running) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the run {id} did not end within 60 s")
}
