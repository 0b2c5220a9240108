//! Sharing the server's slots between users: a user who floods the queue does not hold
//! up another's run, and `--max-running-runs-per-user` holds one user to its share.

use std::time::Instant;

use futures::future::join_all;
use serde_json::json;
use vm0_tests::server::TestServer;
use vm0_types::RunStatus;

use crate::e2e_runs::{agent, body, start, wait};

/// A server with two slots, whose clients are the first user's and another's, each with
/// the agent `shell` (`sh -c 'eval "$VM0_PROMPT"'`).
async fn two_users(per_user: usize) -> (TestServer, vm0_client::Client, vm0_client::Client) {
    let server = TestServer::start_with(tempfile::tempdir().unwrap(), |config| {
        vm0_server::Config { max_concurrent_runs: 2, max_running_runs_per_user: per_user, ..config }
    })
    .await;
    let (flooder, other) = (server.client(), server.client_with(&server.user_token("other").await));
    let shell = json!({"command": ["sh", "-c", "eval \"$VM0_PROMPT\""], "timeoutSeconds": 60});
    for c in [&flooder, &other] {
        agent(c, "shell", shell.clone()).await;
    }
    (server, flooder, other)
}

/// One user submits 60 one-second runs on a server of two slots, then another user
/// submits one: it starts at the next free slot, before all but the few of the flood's
/// runs that were executing or starting (first come first served would put 58 before it).
#[tokio::test]
async fn a_user_who_floods_the_queue_does_not_hold_up_another() {
    let (_server, flooder, other) = two_users(0).await;
    let flood = join_all((0..60).map(|_| start(&flooder, body("shell", "sleep 1")))).await;
    let submitted = Instant::now();
    let theirs = start(&other, body("shell", "echo mine")).await;
    let theirs = wait(&other, &theirs.id).await;
    eprintln!("the other user's run completed {:?} after it was submitted", submitted.elapsed());
    assert_eq!(theirs.status, RunStatus::Completed);

    let started = theirs.started_at.expect("it started");
    let mut before = 0;
    for run in &flood {
        let run = flooder.get_run().id(&run.id).send().await.unwrap().into_inner();
        if run.started_at.is_some_and(|at| at < started) {
            before += 1;
        }
        // The rest of the flood is not needed.
        flooder.cancel_run().id(&run.id).send().await.ok();
    }
    assert!(before <= 4, "{before} of the flood's runs started before the other user's");
}

/// With `--max-running-runs-per-user 1` and two slots, one user's three runs execute one
/// after another, while another user's run takes the second slot.
#[tokio::test]
async fn a_user_executes_no_more_runs_at_once_than_the_cap() {
    let (_server, capped, other) = two_users(1).await;
    let runs = join_all((0..3).map(|_| start(&capped, body("shell", "sleep 1")))).await;
    let theirs = start(&other, body("shell", "sleep 1")).await;
    let mut ended = Vec::new();
    for run in &runs {
        ended.push(wait(&capped, &run.id).await);
    }
    ended.sort_by_key(|run| run.started_at);
    for pair in ended.windows(2) {
        let (first, next) = (&pair[0], &pair[1]);
        assert!(
            next.started_at >= first.completed_at,
            "two runs of one user executed at once: {first:?} and {next:?}"
        );
    }
    let theirs = wait(&other, &theirs.id).await;
    assert!(
        theirs.started_at < ended[1].started_at,
        "the other user's run waited behind the capped user's: {theirs:?}"
    );
}
