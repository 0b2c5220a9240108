//! `vm0-server token create` on a data directory that does not exist yet: the command
//! makes it, prints a token, and a server started over that directory accepts the token.

use std::process::Command;

#[tokio::test]
async fn token_create_makes_a_missing_data_directory() {
    let parent = tempfile::tempdir().unwrap();
    let data_dir = parent.path().join("not").join("there").join("yet");
    let output = Command::new(env!("CARGO_BIN_EXE_vm0-server"))
        .args(["--log", "warn", "--data-dir"])
        .arg(&data_dir)
        .args(["token", "create", "--user", "u", "--name", "n"])
        .env_remove("VM0_DATABASE_URL")
        .output()
        .unwrap();
    let (stdout, stderr) =
        (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(
        output.status.success(),
        "token create ended with {}; stdout: {stdout}; stderr: {stderr}",
        output.status
    );
    let token = stdout.trim();
    assert!(
        token.starts_with("vm0_live_") && !token.contains(char::is_whitespace),
        "token create printed {stdout:?}"
    );
    assert!(data_dir.join("vm0.db").is_file(), "no database in {}", data_dir.display());

    // The server over that directory knows the user and its token, and makes no other.
    let server = vm0_server::bind(vm0_server::Config {
        sandbox: vm0_server::Sandbox::Helper(env!("CARGO_BIN_EXE_vm0-server").into()),
        ..vm0_server::Config::local(&data_dir)
    })
    .await
    .expect("the server starts");
    assert!(server.first_token.is_none(), "the server made a first token although a user exists");
    let url = server.url.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve(async {
        stopped.await.ok();
    }));
    let response = reqwest::Client::new()
        .get(format!("{url}/v1/agents"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status().as_u16(),
        200,
        "the printed token was refused: {}",
        response.text().await.unwrap_or_default()
    );
    stop.send(()).ok();
    tokio::time::timeout(std::time::Duration::from_secs(30), serving)
        .await
        .expect("the server stops")
        .unwrap()
        .unwrap();
}

/// The server's options are global: they may follow the subcommand as well as precede it.
#[test]
fn options_may_follow_the_subcommand() {
    let parent = tempfile::tempdir().unwrap();
    let data_dir = parent.path().join("data");
    let output = Command::new(env!("CARGO_BIN_EXE_vm0-server"))
        .args(["token", "create", "--user", "u", "--name", "n", "--log", "warn", "--data-dir"])
        .arg(&data_dir)
        .env_remove("VM0_DATABASE_URL")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).trim().starts_with("vm0_live_"));
    assert!(data_dir.join("vm0.db").is_file(), "--data-dir after the subcommand was not used");
}
