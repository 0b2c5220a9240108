//! Tokens and authentication end to end.

use vm0_tests::server::{api_error, TestServer};
use vm0_tests::wait::{within, DEADLINE};

#[tokio::test]
async fn a_token_is_shown_once_works_and_stops_when_revoked() {
    let server = TestServer::start().await;
    let c = server.client();
    let created = c
        .create_token()
        .body_map(|b| b.name("ci").expires_in_days(std::num::NonZeroU64::new(7).unwrap()))
        .send()
        .await
        .unwrap()
        .into_inner();
    let value = created.token.to_string();
    assert!(vm0_api::is_token(&value));
    assert_eq!(created.token_prefix, value[..12]);
    assert!(created.last_used_at.is_none());
    let days = (created.expires_at - created.created_at).num_days();
    assert_eq!(days, 7);

    let theirs = server.client_with(&value);
    theirs.list_agents().send().await.unwrap();
    let got = c.get_token().id(&created.id).send().await.unwrap().into_inner();
    assert!(got.last_used_at.is_some(), "lastUsedAt is kept");
    let body = serde_json::to_string(&got).unwrap();
    assert!(!body.contains(&value[12..]), "the value is never returned again");
    let listed = c.list_tokens().send().await.unwrap().into_inner();
    assert!(listed.data.iter().any(|t| t.id == created.id));
    assert!(!serde_json::to_string(&listed).unwrap().contains(&value[12..]));

    c.revoke_token().id(&created.id).send().await.unwrap();
    let (status, error) = api_error(theirs.list_agents().send().await);
    assert_eq!((status, error.code.to_string().as_str()), (401, "invalid_api_key"));
    assert_eq!(api_error(c.get_token().id(&created.id).send().await).0, 404);
    assert_eq!(api_error(c.revoke_token().id(&created.id).send().await).0, 404);
}

#[tokio::test]
async fn expired_unknown_and_malformed_tokens_are_401() {
    let server = TestServer::start().await;
    let expired = server.expired_token().await;
    let unknown = format!("vm0_live_{}", "0".repeat(64));
    for token in [expired.as_str(), unknown.as_str(), "vm0_live_short", "sk-not-ours"] {
        let (status, error) = api_error(server.client_with(token).list_agents().send().await);
        assert_eq!(
            (status, error.type_.to_string().as_str()),
            (401, "authentication_error"),
            "{token}"
        );
    }
    let no_auth = vm0_client::Client::builder().base_url(&server.url).build().unwrap();
    assert_eq!(api_error(no_auth.list_agents().send().await).0, 401);
}

#[tokio::test]
async fn a_token_sees_only_its_users_tokens() {
    let server = TestServer::start().await;
    let mine = server.client();
    let created =
        mine.create_token().body_map(|b| b.name("mine")).send().await.unwrap().into_inner();
    let theirs = server.client_with(&server.user_token("eve").await);
    assert_eq!(api_error(theirs.get_token().id(&created.id).send().await).0, 404);
    assert_eq!(api_error(theirs.revoke_token().id(&created.id).send().await).0, 404);
    assert!(theirs
        .list_tokens()
        .send()
        .await
        .unwrap()
        .into_inner()
        .data
        .iter()
        .all(|t| t.id != created.id));
    server.client_with(&created.token.to_string()).list_agents().send().await.unwrap();
}

/// The event streams opened with a token end within 5 s of the token's revocation, though
/// their run goes on: they are cut as a new request with the token would be refused. A
/// stream of the same run opened with another token stays open. (The server looks each
/// token up once for all the streams it holds.)
#[tokio::test]
async fn a_revoked_tokens_open_event_streams_end() {
    use futures::StreamExt;
    let server = TestServer::start().await;
    let c = server.client();
    let created = c.create_token().body_map(|b| b.name("watcher")).send().await.unwrap();
    let created = created.into_inner();
    let config = serde_json::json!({"command": ["sh", "-c", "echo started; sleep 60"]});
    let config = vm0_types::AgentConfig(config.as_object().unwrap().clone());
    c.create_agent().body_map(|b| b.name("sleeper").config(config)).send().await.unwrap();
    let request =
        vm0_types::CreateRunRequest::builder().agent(Some("sleeper".parse().unwrap())).prompt("x");
    let run = c.create_run().body(request).send().await.unwrap().into_inner();
    let open = |token: String| {
        let url = format!("{}/v1/runs/{}/events", server.url, run.id);
        async move {
            let response = reqwest::Client::new().get(url).bearer_auth(token).send().await.unwrap();
            assert_eq!(response.status(), 200);
            let mut stream = response.bytes_stream();
            let mut seen = String::new();
            let started = async {
                while !seen.contains("started") {
                    let chunk = stream.next().await.unwrap().unwrap();
                    seen.push_str(&String::from_utf8_lossy(&chunk));
                }
            };
            within(DEADLINE, "the run's first line on a stream", started).await;
            stream
        }
    };
    let revoked_token = created.token.to_string();
    let mut first = open(revoked_token.clone()).await;
    let mut second = open(revoked_token.clone()).await;
    // A stream of the token that its client closes first: the others still end.
    drop(open(revoked_token).await);
    let mut other = open(server.token.clone()).await;
    c.revoke_token().id(&created.id).send().await.unwrap();
    let revoked = std::time::Instant::now();
    let ended = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while let Some(Ok(_)) = first.next().await {}
        while let Some(Ok(_)) = second.next().await {}
    })
    .await;
    assert!(ended.is_ok(), "a stream was still open 5 s after the revocation");
    eprintln!("both streams ended {:?} after their token's revocation", revoked.elapsed());
    let still = c.get_run().id(&run.id).send().await.unwrap().into_inner();
    assert_eq!(still.status, vm0_types::RunStatus::Running, "the run goes on");
    // The other token's stream is still open: it gets the end of the run when cancelled.
    c.cancel_run().id(&run.id).send().await.unwrap();
    let mut rest = String::new();
    let read = async {
        while let Some(Ok(chunk)) = other.next().await {
            rest.push_str(&String::from_utf8_lossy(&chunk));
        }
    };
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), read).await;
    assert!(read.is_ok() && rest.contains("event: complete"), "{rest}");
}
