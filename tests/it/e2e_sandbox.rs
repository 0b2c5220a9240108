//! Runs in their sandboxes, tried as a hostile agent would: what a run can see and
//! reach, its limits, and that nothing it starts outlives it.

use serde_json::json;
use vm0_client::RunEvent;
use vm0_tests::processes;
use vm0_tests::server::TestServer;
use vm0_tests::wait::until_run_event;
use vm0_types::{self as types, RunStatus};

use crate::e2e_runs::{agent, body, start, wait};

/// The lines a run printed on standard output and error.
async fn printed(c: &vm0_client::Client, run: &str) -> Vec<String> {
    let logs = c
        .list_run_logs()
        .id(run)
        .type_(types::LogTypeFilter::Agent)
        .limit(100)
        .send()
        .await
        .unwrap()
        .into_inner()
        .data;
    logs.into_iter().map(|l| l.message).collect()
}

/// Runs `script` under bash with the agent configuration `extra`; the run as it ended.
async fn run_script(
    c: &vm0_client::Client,
    name: &str,
    extra: serde_json::Value,
    script: &str,
) -> types::RunDetail {
    let mut config =
        json!({"command": ["bash", "-c", "eval \"$VM0_PROMPT\""], "timeoutSeconds": 60});
    config.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    agent(c, name, config).await;
    let created = start(c, body(name, script)).await;
    wait(c, &created.id).await
}

#[tokio::test]
async fn a_run_sees_its_working_directory_and_a_read_only_system_only() {
    let server = TestServer::start().await;
    let c = server.client();
    let data = server.data_dir.path().display().to_string();
    // A first run leaves a file in its session, for the second to look for.
    let first = run_script(&c, "first", json!({}), "echo secret > mine.txt").await;
    assert_eq!(first.status, RunStatus::Completed, "{first:?}");
    let other_session = server.data_dir.path().join("sessions").join(&first.session_id);
    assert!(other_session.join("mine.txt").exists());

    let port = server.url.rsplit(':').next().unwrap().to_string();
    let script = format!(
        concat!(
            r#"echo "uid $(id -u) pwd $(pwd) home $HOME"
echo "root $(ls / | tr '\n' ' ')"
"#,
            "for path in ../../vm0.db {data}/vm0.db {data}/blobs {other}/mine.txt ",
            "/proc/1/root{data}; ",
            r#"do test -e "$path" && echo "sees $path"; done
echo x > /usr/escape 2>/dev/null && echo "wrote /usr"
echo x > /etc/escape 2>/dev/null && echo "wrote /etc"
echo ok > /tmp/scratch && echo "tmp $(cat /tmp/scratch)"
echo "processes $(ls /proc | grep -c '^[0-9]')"
(exec 3<>/dev/tcp/127.0.0.1/{port}) 2>/dev/null && echo "reached the server"
echo "hostname $(hostname)"
echo done"#
        ),
        data = data,
        other = other_session.display(),
        port = port,
    );
    let run = run_script(&c, "prober", json!({}), &script).await;
    assert_eq!(run.status, RunStatus::Completed, "{run:?}");
    let lines = printed(&c, &run.id).await;
    assert_eq!(lines[0], "uid 1000 pwd /work home /work", "{lines:?}");
    assert_eq!(lines[1], "root bin dev etc lib lib64 proc sbin tmp usr work ", "{lines:?}");
    assert!(
        !lines.iter().any(|l| l.starts_with("sees ")
            || l.starts_with("wrote ")
            || l == "reached the server"),
        "{lines:#?}"
    );
    assert!(lines.contains(&"tmp ok".to_string()), "{lines:?}");
    // bash, the subshell of `$(...)`, and ls: nothing of the host's.
    let processes: usize =
        lines.iter().find_map(|l| l.strip_prefix("processes ")).unwrap().parse().unwrap();
    assert!(processes <= 4, "{lines:?}");
    assert!(lines.contains(&"hostname vm0".to_string()), "{lines:?}");
    assert_eq!(lines.last().map(String::as_str), Some("done"));
}

#[tokio::test]
async fn the_network_is_there_only_when_the_agent_asks_for_it() {
    let server = TestServer::start().await;
    let c = server.client();
    let port = server.url.rsplit(':').next().unwrap().to_string();
    let script = format!(
        "(exec 3<>/dev/tcp/127.0.0.1/{port}) 2>/dev/null && echo reached || echo unreachable"
    );
    let closed = run_script(&c, "closed", json!({}), &script).await;
    assert_eq!(printed(&c, &closed.id).await, vec!["unreachable"]);
    let open = run_script(&c, "open", json!({"network": true}), &script).await;
    assert_eq!(printed(&c, &open.id).await, vec!["reached"]);
}

#[tokio::test]
async fn a_run_past_a_limit_fails_naming_it() {
    let server = TestServer::start().await;
    let c = server.client();
    let grow = "python3 -c 'import time\na = []\nwhile True:\n    \
                a.append(bytes(range(256)) * 16384); time.sleep(0.05)'";
    let cases = [
        ("memory", json!({"maxMemoryMib": 64}), grow.to_string(), "maxMemoryMib"),
        (
            "tasks",
            json!({"maxProcesses": 8}),
            "for i in $(seq 20); do sleep 30.0424301 & done; wait".to_string(),
            "maxProcesses",
        ),
        // A fork bomb at the largest maxProcesses a server allows by default: held by the
        // kernel (a control group's pids.max) where the host lets the server make one.
        (
            "bomb",
            json!({"maxProcesses": 1024}),
            "bomb() { bomb | bomb & }; bomb; sleep 30.0424301".to_string(),
            "maxProcesses",
        ),
        ("cpu", json!({"maxCpuSeconds": 1}), "while :; do :; done".to_string(), "maxCpuSeconds"),
        (
            "file",
            json!({"maxFileSizeMib": 1}),
            "head -c 2000000 /dev/zero > big; echo after".to_string(),
            "maxFileSizeMib",
        ),
        // Files in /tmp and /dev/shm are memory, each held to half the limit and counted
        // in it: neither they nor the process alone go past it, together they do.
        (
            "tmpfs",
            json!({"maxMemoryMib": 64}),
            "head -c 31M /dev/zero > /tmp/a; head -c 31M /dev/zero > /dev/shm/b; exec python3 -c \
                'import time; x = bytearray(8 << 20); time.sleep(30.0424301)'"
                .to_string(),
            "maxMemoryMib",
        ),
        // The working directory's limits hold at the end too, between samples.
        (
            "disk",
            json!({"maxDiskMib": 4}),
            "head -c 3M /dev/zero > a; head -c 3M /dev/zero > b".to_string(),
            "maxDiskMib",
        ),
        (
            "files",
            json!({"maxFiles": 100}),
            "mkdir d; for i in $(seq 300); do : > d/$i; done".to_string(),
            "maxFiles",
        ),
        (
            "lots-of-files",
            json!({"maxFiles": 100}),
            "mkdir d; for i in $(seq 300); do : > d/$i; done; sleep 30.0424301".to_string(),
            "maxFiles",
        ),
    ];
    for (name, limit, script, named) in cases {
        let run = run_script(&c, name, limit, &script).await;
        assert_eq!(run.status, RunStatus::Failed, "{name}: {run:?}");
        // Stopped by a sample, long before the sleep of the cases that sleep would end.
        assert!(run.execution_time_ms.unwrap_or(0) < 20_000, "{name}: {run:?}");
        let error = run.error.unwrap_or_default();
        assert!(
            error.contains(named),
            "{name}: {error}; it printed {:?}",
            printed(&c, &run.id).await
        );
    }
    // The processes past the limit ended with their run.
    processes::until_gone(&["30.0424301"]).await;
}

/// Where the host let the server make control groups (its runs' folder `vm0-runs` is
/// there), every process of a sandbox is born in its run's group: the helper joins it
/// before it makes the sandbox.
#[tokio::test]
async fn a_sandbox_is_born_in_its_runs_control_group() {
    let server = TestServer::start().await;
    let c = server.client();
    let run = run_script(&c, "groups", json!({}), "cat /proc/self/cgroup").await;
    assert_eq!(run.status, RunStatus::Completed, "{run:?}");
    let printed = printed(&c, &run.id).await;
    let held = |controller: &str| {
        let line = printed.iter().find(|l| l.split(':').nth(1) == Some(controller));
        line.is_some_and(|l| l.contains("/vm0-runs/"))
    };
    let hierarchies = ["/sys/fs/cgroup/pids", "/sys/fs/cgroup/memory", "/sys/fs/cgroup"];
    let made = |root: &str| holds_folder(std::path::Path::new(root), "vm0-runs", 4);
    match (made(hierarchies[0]), made(hierarchies[1]), made(hierarchies[2])) {
        (true, true, _) => assert!(held("pids") && held("memory"), "{printed:?}"),
        (false, false, true) => assert!(held(""), "{printed:?}"),
        _ => eprintln!("SKIPPED: this host gives the server no control groups"),
    }
}

/// Whether `root` or a folder within `depth` levels below it holds a folder `name`.
fn holds_folder(root: &std::path::Path, name: &str, depth: usize) -> bool {
    let folders = std::fs::read_dir(root).into_iter().flatten().flatten();
    folders.filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).any(|entry| {
        entry.file_name() == name || (depth > 1 && holds_folder(&entry.path(), name, depth - 1))
    })
}

/// Only `/tmp` and `/dev/shm` can be written outside the working directory: the rest
/// of `/dev` is read-only, and no user namespace can be made for a tmpfs of the run's
/// own, so no file is held in memory that no limit counts.
#[tokio::test]
async fn dev_is_read_only_but_for_its_devices_and_shm() {
    let server = TestServer::start().await;
    let c = server.client();
    let script = "echo x 2>/dev/null > /dev/extra && echo 'wrote /dev'; \
                  echo x > /dev/null && echo null; echo x > /dev/shm/s && echo shm; \
                  df -m /tmp /dev/shm | tail -n 2 | awk '{print $2}'; \
                  unshare -r true 2>/dev/null && echo 'made a user namespace'; echo done";
    let run = run_script(&c, "dev", json!({"maxMemoryMib": 100}), script).await;
    assert_eq!(run.status, RunStatus::Completed, "{run:?}");
    // Each of /tmp and /dev/shm holds half the memory limit.
    assert_eq!(printed(&c, &run.id).await, ["null", "shm", "50", "50", "done"]);
}

#[tokio::test]
async fn a_timeout_kills_what_left_the_process_group_too() {
    let server = TestServer::start().await;
    let c = server.client();
    agent(
        &c,
        "escaper",
        json!({"command": ["sh", "-c", "eval \"$VM0_PROMPT\""], "timeoutSeconds": 1}),
    )
    .await;
    // A double fork, and a new session: neither is a child of the agent any more.
    let escape = "(setsid sh -c 'sleep 30.0424601' &) ; (sh -c 'sleep 30.0424602 &' &); \
                  echo started; sleep 30";
    let created = start(&c, body("escaper", escape)).await;
    until_run_event(
        &c,
        &created.id,
        "the output \"started\"",
        |e| matches!(e, RunEvent::Output { content, .. } if content == "started"),
    )
    .await;
    let run = wait(&c, &created.id).await;
    assert_eq!(run.status, RunStatus::Timeout, "{run:?}");
    processes::until_gone(&["30.0424601", "30.0424602"]).await;
}

#[tokio::test]
async fn a_host_that_cannot_sandbox_refuses_runs_unless_told_otherwise() {
    let missing = |config| vm0_server::Config {
        sandbox: vm0_server::Sandbox::Helper("/nonexistent/helper".into()),
        ..config
    };
    let server = TestServer::start_with(tempfile::tempdir().unwrap(), missing).await;
    let c = server.client();
    let refused = run_script(&c, "refused", json!({}), "echo ran").await;
    assert_eq!(refused.status, RunStatus::Failed);
    let error = refused.error.unwrap_or_default();
    assert!(error.contains("cannot sandbox") && error.contains("--unsandboxed-runs"), "{error}");
    assert!(printed(&c, &refused.id).await.is_empty(), "nothing ran");

    let unsandboxed =
        |config| vm0_server::Config { sandbox: vm0_server::Sandbox::Unsandboxed, ..config };
    let server = TestServer::start_with(tempfile::tempdir().unwrap(), unsandboxed).await;
    let c = server.client();
    // Unsandboxed, a run is the server's user: it sees the data directory.
    let run = run_script(
        &c,
        "trusted",
        json!({}),
        "test -e ../../secrets.key && echo sees the sealing key",
    )
    .await;
    assert_eq!(
        (run.status, printed(&c, &run.id).await),
        (RunStatus::Completed, vec!["sees the sealing key".to_string()])
    );
}

#[tokio::test]
async fn a_run_is_no_user_of_the_host_that_matters() {
    let server = TestServer::start().await;
    let c = server.client();
    let script = "cat /etc/shadow >/dev/null 2>&1 && echo read shadow
(echo '|/bin/true' > /proc/sys/kernel/core_pattern) 2>/dev/null && echo wrote a sysctl
cp /bin/true setuid && chmod u+s setuid
echo done";
    let run = run_script(&c, "nobody", json!({}), script).await;
    assert_eq!(
        (run.status, printed(&c, &run.id).await),
        (RunStatus::Completed, vec!["done".to_string()])
    );
    // On the host, what the run made belongs to no one who matters: the server's user when
    // it is not root, and nobody when it is.
    let made = std::fs::metadata(
        server.data_dir.path().join("sessions").join(&run.session_id).join("setuid"),
    )
    .unwrap();
    let owner = std::os::unix::fs::MetadataExt::uid(&made);
    // SAFETY: geteuid has no preconditions.
    let server_user = unsafe { libc::geteuid() };
    assert_eq!(owner, if server_user == 0 { 65534 } else { server_user });
}

#[tokio::test]
async fn links_a_run_leaves_are_never_followed() {
    let server = TestServer::start().await;
    let c = server.client();
    let victim = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(victim.path(), "original").unwrap();
    let data = server.data_dir.path().display().to_string();

    // An artifact folder replaced by a link to the data directory.
    let loot = c.create_artifact().body_map(|b| b.name("loot")).send().await.unwrap().into_inner();
    let config = json!({
        "command": ["sh", "-c", "eval \"$VM0_PROMPT\""],
        "files": {"notes.txt": "from the agent"}
    });
    agent(&c, "linker", config).await;
    let request = body("linker", &format!("rm -rf artifact && ln -s {data} artifact"))
        .artifact_name(Some("loot".parse().unwrap()));
    let run = wait(&c, &start(&c, request).await.id).await;
    assert_eq!(run.status, RunStatus::Failed, "{run:?}");
    assert!(
        run.error.as_deref().unwrap_or_default().contains("artifact/ is not a folder"),
        "{run:?}"
    );
    let artifact = c.get_artifact().id(&loot.id).send().await.unwrap().into_inner();
    assert!(
        artifact.current_version.is_none(),
        "nothing of the data directory was stored: {artifact:?}"
    );

    // The agent's files, written before the next run of the session, through a link the
    // last one left.
    let first = wait(
        &c,
        &start(
            &c,
            body("linker", &format!("rm notes.txt && ln -s {} notes.txt", victim.path().display())),
        )
        .await
        .id,
    )
    .await;
    assert_eq!(first.status, RunStatus::Completed, "{first:?}");
    let session: types::CreateRunRequestSessionId = first.session_id.parse().unwrap();
    let next = types::CreateRunRequest::builder().session_id(Some(session)).prompt("cat notes.txt");
    let second = wait(&c, &start(&c, next).await.id).await;
    assert_eq!(
        (second.status, printed(&c, &second.id).await),
        (RunStatus::Completed, vec!["from the agent".to_string()])
    );
    assert_eq!(std::fs::read_to_string(victim.path()).unwrap(), "original");
}

/// NUL is text no store keeps alike (PostgreSQL refuses it): a request carrying one is
/// refused naming the field, and a run printing one has it stored as U+FFFD, on every
/// backend.
#[tokio::test]
async fn nul_characters_are_refused_in_requests_and_replaced_in_output() {
    let server = TestServer::start().await;
    let c = server.client();
    let http = reqwest::Client::new();
    let body = json!({"name": "nul", "config": {"command": ["sh"], "env": {"A": "x\u{0}y"}}});
    let response = http
        .post(format!("{}/v1/agents", server.url))
        .bearer_auth(&server.token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let error: serde_json::Value = response.json().await.unwrap();
    assert_eq!((status, error["error"]["param"].as_str()), (400, Some("config.env.A")), "{error}");

    let run = run_script(&c, "printer", json!({}), "printf 'a\\000b\\n'").await;
    assert_eq!(
        (run.status, printed(&c, &run.id).await),
        (RunStatus::Completed, vec!["a\u{FFFD}b".to_string()])
    );
}
