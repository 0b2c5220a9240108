//! The `vm0` binary against a real reference server, each test with its own server, data
//! and configuration directory. Standard input is never a terminal here, so these tests
//! also pin down the non-interactive behaviour: tokens from standard input, `--yes`
//! required, Ctrl-C cancelling at once, no progress bars.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use serde_json::Value;

/// A reference server on a free port, and a configuration directory of its own.
struct Env {
    /// The server behind a proxy that checks every response against the spec
    /// (`vm0_tests::conformance`); a test fails on any that breaks it.
    url: String,
    violations: vm0_tests::conformance::Violations,
    token: String,
    config: tempfile::TempDir,
    _data: tempfile::TempDir,
    runtime: tokio::runtime::Runtime,
}

/// What a `vm0` invocation did.
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

/// How long a test waits for `vm0` (or a line from it) before it fails.
const DEADLINE: Duration = Duration::from_secs(60);

/// Waits for `child` to exit and collects what it printed, within [`DEADLINE`]; kills it
/// and fails the test, naming `what`, otherwise.
fn finish(child: Child, what: &str) -> Output {
    let pid = child.id();
    let (done, exited) = mpsc::channel();
    std::thread::spawn(move || done.send(child.wait_with_output()).ok());
    match exited.recv_timeout(DEADLINE) {
        Ok(output) => output.unwrap(),
        Err(_) => {
            // SAFETY: signalling our own child, which the thread above has not seen exit.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("{what}: no exit within {DEADLINE:?}")
        }
    }
}

/// Runs `command` with its output captured, within [`DEADLINE`].
fn output(command: &mut Command) -> Out {
    let what = format!(
        "vm0 {}",
        command.get_args().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" ")
    );
    finish(command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap(), &what).into()
}

impl From<Output> for Out {
    fn from(output: Output) -> Out {
        Out {
            code: output.status.code().expect("vm0 exited rather than being killed"),
            stdout: String::from_utf8(output.stdout).expect("UTF-8 output"),
            stderr: String::from_utf8(output.stderr).expect("UTF-8 errors"),
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            vm0_tests::conformance::assert_clean(&self.violations);
        }
    }
}

impl Env {
    /// A fresh server, not yet logged in to.
    fn new() -> Env {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let data = tempfile::tempdir().unwrap();
        let database_url =
            runtime.block_on(vm0_server::testing::database_url(data.path())).unwrap();
        let blob_store = runtime.block_on(vm0_server::testing::blob_store(data.path())).unwrap();
        let config = vm0_server::Config {
            database_url,
            blob_store,
            sample_interval: std::time::Duration::from_millis(100),
            // These tests are about the command line; the sandbox is tested with the server.
            sandbox: vm0_server::Sandbox::Unsandboxed,
            ..vm0_server::Config::local(data.path())
        };
        let server = runtime.block_on(vm0_server::bind(config)).unwrap();
        let token = server.first_token.clone().unwrap();
        let (url, violations) = runtime.block_on(vm0_tests::conformance::start(server.url.clone()));
        runtime.spawn(server.serve(std::future::pending()));
        Env { url, violations, token, config: tempfile::tempdir().unwrap(), _data: data, runtime }
    }

    /// A fresh server, logged in to with its first token.
    fn logged_in() -> Env {
        let env = Env::new();
        let out = env
            .run_with_input(&["auth", "login", "--api-url", &env.url], &format!("{}\n", env.token));
        assert_eq!(out.code, 0, "login failed: {}", out.stderr);
        env
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_vm0"));
        command
            .args(args)
            .env("XDG_CONFIG_HOME", self.config.path())
            .env("HOME", self.config.path())
            .env_remove("VM0_TOKEN")
            .env_remove("VM0_API_URL")
            .stdin(Stdio::null());
        command
    }

    fn run(&self, args: &[&str]) -> Out {
        output(&mut self.command(args))
    }

    fn run_with_input(&self, args: &[&str], input: &str) -> Out {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        finish(child, &format!("vm0 {}", args.join(" "))).into()
    }

    /// Runs a command that must succeed; its standard output.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_eq!(out.code, 0, "vm0 {} exited {}: {}", args.join(" "), out.code, out.stderr);
        out.stdout
    }

    /// Runs a command that must succeed with `--json`; its output, parsed.
    fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.push("--json");
        let stdout = self.ok(&args);
        serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("vm0 {} printed no JSON ({e}): {stdout}", args.join(" ")))
    }

    /// Runs a command that must fail with `code`; its standard error.
    fn fails(&self, code: i32, args: &[&str]) -> String {
        let out = self.run(args);
        assert_eq!(
            out.code,
            code,
            "vm0 {} exited {} (stdout {:?}, stderr {:?})",
            args.join(" "),
            out.code,
            out.stdout,
            out.stderr
        );
        out.stderr
    }

    fn config_file(&self) -> PathBuf {
        self.config.path().join("vm0").join("config.json")
    }

    /// Writes an agent configuration running `script` with sh, and creates the agent.
    fn agent(&self, name: &str, script: &str, dir: &Path) {
        let file = dir.join(format!("{name}.json"));
        std::fs::write(&file, serde_json::json!({ "command": ["sh", "-c", script] }).to_string())
            .unwrap();
        self.ok(&["agents", "create", name, "--config", file.to_str().unwrap()]);
    }
}

/// An API error as the CLI prints it: the message, then the code and the request id.
fn assert_api_error(stderr: &str, code: &str) {
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains(&format!("code: {code}")), "no code {code} in {stderr:?}");
    assert!(stderr.contains("request id: req_"), "no request id in {stderr:?}");
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn auth_login_status_setup_token_and_logout() {
    let env = Env::new();
    assert!(env.fails(1, &["agents", "list"]).contains("not logged in"));

    // A token the API refuses is not stored.
    let refused = env.run_with_input(
        &["auth", "login", "--api-url", &env.url],
        &format!("vm0_live_{}\n", "0".repeat(64)),
    );
    assert_eq!(refused.code, 1);
    assert_api_error(&refused.stderr, "invalid_api_key");
    assert!(!env.config_file().exists());
    let malformed = env.run_with_input(&["auth", "login", "--api-url", &env.url], "not-a-token\n");
    assert_eq!(malformed.code, 1);
    assert!(malformed.stderr.contains("Malformed API token"), "{}", malformed.stderr);
    let schemeless = env.run_with_input(
        &["auth", "login", "--api-url", env.url.trim_start_matches("http://")],
        &format!("{}\n", env.token),
    );
    assert_eq!(schemeless.code, 1);
    assert!(schemeless.stderr.contains("give an http:// or https:// URL"), "{}", schemeless.stderr);

    // A file left readable by others is made private by the next login.
    std::fs::create_dir_all(env.config_file().parent().unwrap()).unwrap();
    std::fs::write(env.config_file(), "{}").unwrap();
    std::fs::set_permissions(env.config_file(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let login = env.run_with_input(
        &["auth", "login", "--api-url", &env.url, "--json"],
        &format!("{}\n", env.token),
    );
    assert_eq!(login.code, 0, "{}", login.stderr);
    let login: Value = serde_json::from_str(&login.stdout).unwrap();
    assert_eq!(login["tokenName"], "first token");
    assert_eq!(mode(&env.config_file()), 0o600);
    let stored: Value =
        serde_json::from_str(&std::fs::read_to_string(env.config_file()).unwrap()).unwrap();
    assert_eq!(stored, serde_json::json!({ "apiUrl": env.url, "token": env.token }));

    let status = env.json(&["auth", "status"]);
    assert_eq!(
        (status["valid"].as_bool(), status["source"].as_str()),
        (Some(true), Some("config file"))
    );
    assert_eq!(env.ok(&["auth", "setup-token"]), format!("{}\n", env.token));
    assert_eq!(env.json(&["auth", "setup-token"])["token"], env.token.as_str());
    env.ok(&["agents", "list"]);

    // The environment overrides the file: a revoked token from VM0_TOKEN is refused.
    let created = env.json(&["tokens", "create", "short-lived"]);
    let other = created["token"].as_str().unwrap();
    env.ok(&["tokens", "revoke", created["id"].as_str().unwrap(), "--yes"]);
    let out = output(env.command(&["agents", "list"]).env("VM0_TOKEN", other));
    assert_eq!(out.code, 1);
    assert_api_error(&out.stderr, "invalid_api_key");
    let out = output(env.command(&["auth", "status"]).env("VM0_TOKEN", other));
    assert_eq!(out.code, 1, "status exits 1 when the token in effect is refused");

    // The stored token is not sent to another API named by VM0_API_URL.
    let out = output(env.command(&["agents", "list"]).env("VM0_API_URL", "http://127.0.0.1:9"));
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("not logged in to http://127.0.0.1:9"), "{}", out.stderr);

    assert!(env.ok(&["auth", "logout"]).contains("Logged out"));
    assert!(!env.config_file().exists());
    assert!(env.fails(1, &["auth", "setup-token"]).contains("not logged in"));
    // With only the environment, commands work without a file.
    let out = output(
        env.command(&["agents", "list", "--json"])
            .env("VM0_TOKEN", &env.token)
            .env("VM0_API_URL", &env.url),
    );
    assert_eq!((out.code, out.stdout.trim()), (0, "[]"), "{}", out.stderr);
}

#[test]
fn agents_create_get_update_versions_delete() {
    let env = Env::logged_in();
    let dir = tempfile::tempdir().unwrap();
    let config = serde_json::json!({ "command": ["sh", "-c", "echo hi"], "timeoutSeconds": 60 });
    let file = dir.path().join("agent.json");
    std::fs::write(&file, config.to_string()).unwrap();
    let file = file.to_str().unwrap();

    let created = env.json(&["agents", "create", "helper", "--config", file]);
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(created["name"], "helper");
    let stderr = env.fails(1, &["agents", "create", "helper", "--config", file]);
    assert_api_error(&stderr, "resource_already_exists");
    assert!(stderr.contains("param: name"), "{stderr}");
    assert!(env
        .fails(1, &["agents", "create", "Not_A_Name", "--config", file])
        .contains("doesn't match pattern"));
    std::fs::write(dir.path().join("list.json"), "[1, 2]").unwrap();
    let list_file = dir.path().join("list.json");
    assert!(env
        .fails(1, &["agents", "create", "other", "--config", list_file.to_str().unwrap()])
        .contains("must be a JSON object"));

    let listed = env.json(&["agents", "list"]);
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["id"], id.as_str());
    let table = env.ok(&["agents", "list"]);
    assert!(table.starts_with("NAME") && table.contains(&id), "{table}");

    // By name and by id alike, with the current version's configuration.
    let got = env.json(&["agents", "get", "helper"]);
    assert_eq!(got["version"]["config"], config);
    assert_eq!(env.json(&["agents", "get", &id])["id"], id.as_str());

    let updated = serde_json::json!({ "command": ["sh", "-c", "echo bye"] });
    let out = env.run_with_input(
        &["agents", "update", "helper", "--config", "-", "--json"],
        &updated.to_string(),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let versions = env.json(&["agents", "versions", "helper"]);
    let numbers: Vec<u64> =
        versions.as_array().unwrap().iter().map(|v| v["versionNumber"].as_u64().unwrap()).collect();
    assert_eq!(numbers.len(), 2);
    assert!(numbers.contains(&1) && numbers.contains(&2));
    assert_eq!(env.json(&["agents", "get", "helper"])["version"]["config"], updated);
    assert_eq!(
        env.json(&["agents", "get", "helper", "--version", "1"])["version"]["config"],
        config
    );

    // Without a terminal, deleting needs --yes.
    assert!(env.fails(1, &["agents", "delete", "helper"]).contains("pass --yes"));
    env.ok(&["agents", "get", "helper"]);
    env.ok(&["agents", "delete", "helper", "--yes"]);
    assert!(env
        .fails(1, &["agents", "get", "helper"])
        .contains("no agent has the id or name \"helper\""));
}

#[test]
fn run_streams_output_and_exits_by_how_the_run_ended() {
    let env = Env::logged_in();
    let dir = tempfile::tempdir().unwrap();
    env.agent(
        "echo",
        r#"echo "prompt: $VM0_PROMPT"; echo "var: $GREETING"; echo "secret: $TOKEN""#,
        dir.path(),
    );
    env.agent("failer", "echo before; exit 7", dir.path());
    std::fs::write(
        dir.path().join("slow.json"),
        r#"{"command": ["sleep", "30"], "timeoutSeconds": 1}"#,
    )
    .unwrap();
    env.ok(&[
        "agents",
        "create",
        "slow",
        "--config",
        dir.path().join("slow.json").to_str().unwrap(),
    ]);

    let out = env.run(&[
        "run",
        "echo",
        "say hi",
        "--var",
        "GREETING=hello",
        "--secret",
        "TOKEN=s3cr3t-value",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, "prompt: say hi\nvar: hello\nsecret: ***\n");
    assert!(out.stderr.contains("[running]") && out.stderr.contains("completed"), "{}", out.stderr);

    // --var KEY alone takes the value from the environment.
    let out =
        output(env.command(&["run", "echo", "x", "--var", "GREETING"]).env("GREETING", "from env"));
    assert!(out.stdout.contains("var: from env"), "{}", out.stdout);

    let out = env.run(&["run", "failer", "go"]);
    assert_eq!((out.code, out.stdout.as_str()), (3, "before\n"));
    assert!(out.stderr.contains("failed"), "{}", out.stderr);
    assert_eq!(env.run(&["run", "slow", "go"]).code, 4);

    // --json prints the run as it ended.
    let ended = env.json(&["run", "echo", "quiet"]);
    assert_eq!(ended["status"], "completed");
    assert_eq!(ended["prompt"], "quiet");

    assert!(env
        .fails(1, &["run", "missing", "go"])
        .contains("no agent has the id or name \"missing\""));
    let stderr = env.fails(1, &["run", "echo", "go", "--volume", "nowhere"]);
    assert_api_error(&stderr, "resource_not_found");
    assert!(stderr.contains("param: volumes.nowhere"), "{stderr}");
    assert_eq!(env.run(&["run", "echo"]).code, 2, "a missing prompt is a usage error");
}

#[test]
fn run_prints_each_line_on_the_stream_the_agent_wrote_it_to() {
    let env = Env::logged_in();
    let dir = tempfile::tempdir().unwrap();
    env.agent("both", "echo out 1; echo err 1 >&2; echo out 2; echo err 2 >&2", dir.path());
    let out = env.run(&["run", "both", "go"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, "out 1\nout 2\n");
    let errors: Vec<&str> = out.stderr.lines().filter(|l| l.starts_with("err ")).collect();
    assert_eq!(errors, ["err 1", "err 2"], "{}", out.stderr);
}

#[test]
fn ctrl_c_without_a_terminal_cancels_the_run() {
    let env = Env::logged_in();
    let dir = tempfile::tempdir().unwrap();
    env.agent(
        "ticker",
        "i=0; while [ $i -lt 300 ]; do echo tick $i; i=$((i+1)); sleep 0.1; done",
        dir.path(),
    );
    let mut child = env
        .command(&["run", "ticker", "go"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Its standard output, line by line as it comes; the channel closes at its end.
    let (line, lines) = mpsc::channel();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    std::thread::spawn(move || {
        stdout.lines().map_while(Result::ok).try_for_each(|l| line.send(l)).ok()
    });
    assert_eq!(lines.recv_timeout(DEADLINE).expect("the first tick within the deadline"), "tick 0");
    // SAFETY: signalling our own child, which is still running (it has not been waited for).
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let out: Out = finish(child, "vm0 run after Ctrl-C").into();
    let mut printed = 0;
    loop {
        match lines.recv_timeout(DEADLINE) {
            Ok(_) => printed += 1,
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {
                panic!("the standard output of vm0 run did not end within {DEADLINE:?} of its exit")
            }
        }
    }
    assert_eq!(out.code, 5, "{}", out.stderr);
    assert!(printed < 299, "the run went on to the end");
    assert!(
        out.stderr.contains("Cancelling run") && out.stderr.contains("cancelled"),
        "{}",
        out.stderr
    );
}

#[test]
fn runs_list_get_logs_metrics_and_cancel() {
    let env = Env::logged_in();
    let dir = tempfile::tempdir().unwrap();
    env.agent("counter", "for i in 1 2 3 4 5; do echo line $i; sleep 0.2; done", dir.path());

    let started = env.json(&["run", "counter", "count", "--detach"]);
    let id = started["id"].as_str().unwrap().to_string();
    assert_eq!(
        env.ok(&["run", "counter", "again", "--detach"]).lines().count(),
        1,
        "--detach prints the id alone"
    );

    // Following the logs returns once the run has ended, with every line once, in order.
    let followed = env.ok(&["runs", "logs", &id, "--follow", "--type", "agent"]);
    let messages: Vec<&str> = followed.lines().map(|l| l.rsplit("  ").next().unwrap()).collect();
    assert_eq!(messages, ["line 1", "line 2", "line 3", "line 4", "line 5"]);
    let entries = env.json(&["runs", "logs", &id]);
    assert!(entries.as_array().unwrap().iter().any(|e| e["type"] == "system"), "{entries}");
    let agent_only = env.json(&["runs", "logs", &id, "--type", "agent"]);
    assert_eq!(agent_only.as_array().unwrap().len(), 5);
    assert_eq!(env.run(&["runs", "logs", &id, "--type", "bogus"]).code, 2);

    // Following by sequence: a burst of 300 lines, stored in batches while the follower
    // polls, comes out whole, each entry once and in the order stored.
    env.agent("burst", "i=0; while [ $i -lt 300 ]; do echo burst $i; i=$((i+1)); done", dir.path());
    let burst = env.json(&["run", "burst", "go", "--detach"]);
    let burst = burst["id"].as_str().unwrap();
    let followed: Vec<serde_json::Value> = env
        .ok(&["runs", "logs", burst, "--follow", "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let sequences: Vec<u64> = followed.iter().map(|e| e["sequence"].as_u64().unwrap()).collect();
    assert_eq!(sequences, (1..=followed.len() as u64).collect::<Vec<_>>());
    assert_eq!(
        serde_json::Value::from(followed),
        env.json(&["runs", "logs", burst]),
        "what --follow printed is the whole log"
    );

    let run = env.json(&["runs", "get", &id]);
    assert_eq!(
        (run["status"].as_str(), run["prompt"].as_str()),
        (Some("completed"), Some("count"))
    );
    assert!(env.ok(&["runs", "get", &id]).contains("completed"));
    let metrics = env.json(&["runs", "metrics", &id]);
    assert!(metrics["summary"]["totalDurationMs"].as_i64().unwrap() >= 1000, "{metrics}");
    env.ok(&["runs", "metrics", &id]);

    let listed = env.json(&["runs", "list", "--agent", "counter"]);
    assert!(listed.as_array().unwrap().iter().any(|r| r["id"] == id.as_str()));
    assert_eq!(env.json(&["runs", "list", "--limit", "1"]).as_array().unwrap().len(), 1);
    let completed = env.json(&["runs", "list", "--status", "completed"]);
    assert!(completed.as_array().unwrap().iter().all(|r| r["status"] == "completed"));

    // A run that has ended cannot be cancelled; the API says why.
    assert_api_error(&env.fails(1, &["runs", "cancel", &id]), "invalid_state");
    assert_api_error(&env.fails(1, &["runs", "get", "run_missing"]), "resource_not_found");
}

/// Every file under `dir`, by relative path, with its bytes.
fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                out.push((
                    path.strip_prefix(root).unwrap().display().to_string(),
                    std::fs::read(&path).unwrap(),
                ));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

#[test]
fn volumes_and_artifacts_round_trip_directories() {
    let env = Env::logged_in();
    let work = tempfile::tempdir().unwrap();
    let notes = work.path().join("notes");
    std::fs::create_dir_all(notes.join("deep/er")).unwrap();
    std::fs::write(notes.join("a.txt"), "first\n").unwrap();
    std::fs::write(notes.join("empty"), "").unwrap();
    std::fs::write(
        notes.join("deep/er/bytes.bin"),
        (0..=255u8).cycle().take(3 << 20).collect::<Vec<u8>>(),
    )
    .unwrap();

    let stderr = env.fails(1, &["volumes", "push", notes.to_str().unwrap()]);
    assert!(stderr.contains("vm0 volumes create notes"), "{stderr}");
    let created = env.json(&["volumes", "create", "notes"]);
    assert!(
        created["currentVersionId"].is_null() && created.get("currentVersion").is_none(),
        "{created}"
    );
    let pushed = env.run(&["volumes", "push", notes.to_str().unwrap(), "-m", "first", "--json"]);
    assert_eq!(pushed.code, 0, "{}", pushed.stderr);
    assert_eq!(pushed.stderr, "", "no progress bar without a terminal");
    let first: Value = serde_json::from_str(&pushed.stdout).unwrap();
    assert_eq!((first["fileCount"].as_i64(), first["message"].as_str()), (Some(3), Some("first")));
    assert_eq!(first["volumeId"], created["id"]);

    let back = work.path().join("back");
    env.ok(&["volumes", "pull", "notes", back.to_str().unwrap()]);
    assert_eq!(tree(&back), tree(&notes), "pulled byte for byte");
    assert!(env
        .fails(1, &["volumes", "pull", "notes", back.to_str().unwrap()])
        .contains("not empty"));

    // A second version; the first stays reachable.
    std::fs::write(notes.join("a.txt"), "second\n").unwrap();
    env.ok(&["volumes", "push", notes.to_str().unwrap(), "--name", "notes"]);
    assert_eq!(env.json(&["volumes", "versions", "notes"]).as_array().unwrap().len(), 2);
    let got = env.json(&["volumes", "get", "notes"]);
    assert_eq!(got["fileCount"], 3);
    assert_eq!(
        (&got["currentVersion"]["id"], &got["currentVersion"]["volumeId"]),
        (&got["currentVersionId"], &created["id"]),
        "{got}"
    );
    env.ok(&["volumes", "pull", "notes", back.to_str().unwrap(), "--force"]);
    assert_eq!(std::fs::read_to_string(back.join("a.txt")).unwrap(), "second\n");
    let old = work.path().join("old");
    env.ok(&[
        "volumes",
        "pull",
        "notes",
        old.to_str().unwrap(),
        "--version",
        first["id"].as_str().unwrap(),
    ]);
    assert_eq!(std::fs::read_to_string(old.join("a.txt")).unwrap(), "first\n");
    // Without a directory, the pull goes to ./NAME.
    let parent = work.path().join("elsewhere");
    std::fs::create_dir(&parent).unwrap();
    let out = output(env.command(&["volumes", "pull", "notes"]).current_dir(&parent));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(tree(&parent.join("notes")), tree(&notes));

    // A run mounts the volume and writes the artifact, which then pulls.
    env.ok(&["artifacts", "create", "results"]);
    env.agent("reader", "cat volumes/notes/a.txt > artifact/copy.txt; echo done", work.path());
    assert_eq!(
        env.ok(&["run", "reader", "copy", "--volume", "notes", "--artifact", "results"]),
        "done\n"
    );
    let results = work.path().join("results");
    env.ok(&["artifacts", "pull", "results", results.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(results.join("copy.txt")).unwrap(), "second\n");
    let listed = env.json(&["artifacts", "list"]);
    assert_eq!(listed[0]["name"], "results");
    assert!(
        listed[0].get("currentVersion").is_none(),
        "a listing has no current version: {listed}"
    );
    let versions = env.json(&["artifacts", "versions", "results"]);
    assert_eq!(
        (&versions[0]["artifactId"], &versions[0]["id"]),
        (&listed[0]["id"], &listed[0]["currentVersionId"]),
        "{versions}"
    );
    assert!(env.ok(&["artifacts", "versions", "results"]).contains("current"));

    assert!(env.fails(1, &["volumes", "delete", "notes"]).contains("pass --yes"));
    env.ok(&["volumes", "delete", "notes", "--yes"]);
    assert!(env.fails(1, &["volumes", "get", "notes"]).contains("no volume has the id or name"));
}

#[test]
fn tokens_create_list_and_revoke() {
    let env = Env::logged_in();
    let created = env.json(&["tokens", "create", "ci", "--expires-in-days", "7"]);
    let value = created["token"].as_str().unwrap().to_string();
    let out = output(env.command(&["agents", "list"]).env("VM0_TOKEN", &value));
    assert_eq!(out.code, 0, "the new token works: {}", out.stderr);

    let listed = env.json(&["tokens", "list"]);
    let names: Vec<&str> =
        listed.as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 2);
    assert!(names.contains(&"ci") && names.contains(&"first token"));
    assert!(!env.ok(&["tokens", "list"]).contains(&value), "a listing never shows a token's value");
    assert!(env
        .fails(1, &["tokens", "create", "bad", "--expires-in-days", "0"])
        .contains("at least 1"));

    // By name when only one token has it; by id otherwise.
    env.ok(&["tokens", "create", "twin"]);
    env.ok(&["tokens", "create", "twin"]);
    assert!(env
        .fails(1, &["tokens", "revoke", "twin", "--yes"])
        .contains("2 tokens are named \"twin\""));
    env.ok(&["tokens", "revoke", "ci", "--yes"]);
    let out = output(env.command(&["agents", "list"]).env("VM0_TOKEN", &value));
    assert_eq!(out.code, 1);
    assert_api_error(&out.stderr, "invalid_api_key");
}

#[test]
fn errors_go_to_standard_error_with_a_non_zero_exit() {
    let env = Env::logged_in();
    // Nothing listens there.
    let out = output(
        env.command(&["agents", "list"])
            .env("VM0_TOKEN", &env.token)
            .env("VM0_API_URL", "http://127.0.0.1:9"),
    );
    assert_eq!((out.code, out.stdout.as_str()), (1, ""));
    assert!(
        out.stderr.starts_with("error: ") && out.stderr.contains("127.0.0.1:9"),
        "{}",
        out.stderr
    );
    assert_eq!(env.run(&["agents", "frobnicate"]).code, 2);
    assert_eq!(env.run(&[]).code, 2);
}

#[test]
fn run_continues_sessions_and_checkpoints() {
    let env = Env::logged_in();
    let dir = tempfile::tempdir().unwrap();
    // Each run prints what the session's earlier runs left, then adds its prompt.
    env.agent(
        "notes",
        r#"cat notes.txt 2>/dev/null; echo "out: $VM0_PROMPT"; echo "$VM0_PROMPT" >> notes.txt"#,
        dir.path(),
    );

    let out = env.run(&["run", "notes", "first", "--verbose"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, "out: first\n");
    assert!(
        out.stderr.contains("Metrics: duration ") && out.stderr.contains("peak memory"),
        "--verbose: {}",
        out.stderr
    );
    let listed = env.json(&["runs", "list", "--limit", "1"]);
    let first = env.json(&["runs", "get", listed[0]["id"].as_str().unwrap()]);
    let (session, checkpoint) = (
        first["sessionId"].as_str().unwrap().to_string(),
        first["checkpointId"].as_str().unwrap().to_string(),
    );
    assert!(out.stderr.contains(&format!("vm0 run --session {session} PROMPT")), "{}", out.stderr);

    assert_eq!(env.ok(&["run", "--session", &session, "second"]), "first\nout: second\n");
    assert_eq!(
        env.ok(&["run", "--checkpoint", &checkpoint, "third"]),
        "first\nout: third\n",
        "a checkpoint starts from that run's state"
    );
    let continued = env.json(&["run", "--session", &session, "fourth"]);
    assert_eq!(continued["sessionId"], session.as_str());

    // The words must fit the origin: usage errors, as clap's are.
    assert!(env
        .fails(2, &["run", "--session", &session, "notes", "fifth"])
        .contains("give only the prompt"));
    assert!(env.fails(2, &["run", "notes"]).contains("vm0 run --session ID PROMPT"));
    assert_eq!(env.run(&["run", "--session", &session, "--checkpoint", &checkpoint, "x"]).code, 2);
}

#[test]
fn run_shows_a_spinner_on_a_terminal() {
    let env = Env::logged_in();
    let dir = tempfile::tempdir().unwrap();
    env.agent("slow", "sleep 1; echo done", dir.path());
    // script(1) gives vm0 a terminal; what it printed there comes back on script's output.
    let vm0 = env!("CARGO_BIN_EXE_vm0");
    let mut script = Command::new("script");
    script.args(["-qec", &format!("{vm0} run slow go"), "/dev/null"]);
    for (name, value) in env.command(&[]).get_envs() {
        match value {
            Some(value) => script.env(name, value),
            None => script.env_remove(name),
        };
    }
    let out = output(script.stdin(Stdio::null()));
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert!(
        out.stdout.contains("run running") || out.stdout.contains("run pending"),
        "no spinner: {:?}",
        out.stdout
    );
    assert!(out.stdout.contains("done"), "{:?}", out.stdout);
    assert!(!out.stdout.contains("[running]"), "status lines beside the spinner: {:?}", out.stdout);
}

#[test]
fn version_ids_are_short_in_tables_and_taken_back() {
    let env = Env::logged_in();
    let dir = tempfile::tempdir().unwrap();
    let files = dir.path().join("inputs");
    std::fs::create_dir(&files).unwrap();
    env.ok(&["volumes", "create", "inputs"]);
    std::fs::write(files.join("a.txt"), "one").unwrap();
    env.ok(&["volumes", "push", files.to_str().unwrap()]);
    std::fs::write(files.join("a.txt"), "two").unwrap();
    env.ok(&["volumes", "push", files.to_str().unwrap()]);
    let versions = env.json(&["volumes", "versions", "inputs"]);
    let old = versions[1]["id"].as_str().unwrap().to_string();
    assert_eq!(old.len(), 64);

    let table = env.ok(&["volumes", "versions", "inputs"]);
    assert!(!table.contains(&old), "a whole version id in the table:\n{table}");
    let short = table
        .lines()
        .find_map(|l| {
            l.split_whitespace().next().filter(|id| old.starts_with(id) && id.len() >= 12)
        })
        .expect("the old version's short id");
    // Made by the token that pushed it, by name.
    assert!(table.lines().nth(1).unwrap().contains("first token"), "{table}");

    let pulled = dir.path().join("pulled");
    env.ok(&["volumes", "pull", "inputs", pulled.to_str().unwrap(), "--version", short]);
    assert_eq!(std::fs::read_to_string(pulled.join("a.txt")).unwrap(), "one");
    env.agent("reader", "cat volumes/inputs/a.txt", dir.path());
    assert_eq!(env.ok(&["run", "reader", "go", "--volume", &format!("inputs:{short}")]), "one\n");
    assert!(env
        .fails(1, &["volumes", "pull", "inputs", "--version", "0000000000"])
        .contains("no version has the id or name"));
}

#[test]
fn completions_for_each_shell() {
    let env = Env::new();
    for (shell, mark) in [
        ("bash", "complete -F _vm0"),
        ("zsh", "#compdef vm0"),
        ("fish", "complete -c vm0"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let script = env.ok(&["completions", shell]);
        assert!(script.contains(mark), "{shell}: no {mark:?}");
        assert!(
            script.contains("artifacts")
                && script.contains("session")
                && script.contains("checkpoint"),
            "{shell}: the commands and options are not all there"
        );
    }
    assert_eq!(env.run(&["completions", "tcsh"]).code, 2);
}

#[test]
fn help_reads_well() {
    let env = Env::new();
    let groups: &[&[&str]] = &[
        &[],
        &["auth"],
        &["auth", "login"],
        &["agents"],
        &["agents", "create"],
        &["run"],
        &["completions"],
        &["runs"],
        &["runs", "list"],
        &["runs", "logs"],
        &["volumes"],
        &["volumes", "push"],
        &["volumes", "pull"],
        &["artifacts"],
        &["tokens"],
        &["tokens", "create"],
        &["mcp"],
    ];
    let mut all = String::new();
    for group in groups {
        let mut args = group.to_vec();
        args.push("--help");
        all.push_str(&format!("$ vm0 {}\n{}\n", args.join(" "), env.ok(&args)));
    }
    insta::assert_snapshot!("help", all);
}

/// `vm0 run --detach` through a proxy that loses the answer to its createRun: the client
/// sends it again under the same Idempotency-Key, the command exits 0 with the run's id,
/// and exactly one run exists.
#[test]
fn run_detach_survives_a_lost_answer_and_starts_one_run() {
    let env = Env::logged_in();
    let dir = tempfile::tempdir().unwrap();
    env.agent("once", "echo once", dir.path());
    let (proxy, swallowed) =
        env.runtime.block_on(vm0_tests::proxy::swallowing_answer(&env.url, "POST /v1/runs "));
    let mut command = env.command(&["run", "once", "go", "--detach"]);
    let out: Out = output(command.env("VM0_API_URL", &proxy).env("VM0_TOKEN", &env.token));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(swallowed.happened(), "the proxy lost the createRun answer");
    let runs = env.json(&["runs", "list"]);
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["id"].as_str(), Some(out.stdout.trim()));
}
