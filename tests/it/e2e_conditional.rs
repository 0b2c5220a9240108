//! Conditional writes against a fresh server: every single-resource answer carries an
//! `ETag`; `updateAgent`, the deletes and the upload commits take `If-Match`; a stale tag
//! is 412 `precondition_failed` and changes nothing; of two writers who read one tag,
//! exactly one wins.

use progenitor_client::ResponseValue;
use reqwest::StatusCode;
use serde_json::{json, Value};
use vm0_tests::server::{api_error, http_client, TestServer};
use vm0_types as types;

use crate::e2e_runs::agent;

fn etag<T>(response: &ResponseValue<T>) -> String {
    let tag = response.headers().get("etag").expect("an ETag header");
    tag.to_str().unwrap().to_string()
}

fn config(word: &str) -> types::AgentConfig {
    serde_json::from_value(json!({"command": ["echo", word]})).unwrap()
}

/// The 412 of a failed precondition, in the envelope.
fn assert_precondition_failed(status: u16, error: &types::ErrorDetail) {
    assert_eq!(status, 412, "{error:?}");
    assert_eq!(error.type_, types::ErrorType::ConflictError);
    assert_eq!(error.code, types::ErrorCode::PreconditionFailed);
    assert_eq!(error.param.as_deref(), Some("If-Match"));
}

#[tokio::test]
async fn a_stale_if_match_is_412_and_the_current_etag_writes() {
    let server = TestServer::start().await;
    let c = server.client();
    let agent = agent(&c, "tagged", json!({"command": ["echo", "one"]})).await;
    let read = c.get_agent().id(&agent.id).send().await.unwrap();
    let first = etag(&read);
    let update = |word: &'static str, tag: &str| {
        c.update_agent().id(&agent.id).if_match(tag).body_map(move |b| b.config(config(word)))
    };

    let updated = update("two", &first).send().await.unwrap();
    let second = etag(&updated);
    assert_ne!(first, second, "an update that changes the agent changes its tag");
    assert_eq!(etag(&c.get_agent().id(&agent.id).send().await.unwrap()), second);

    // The first tag is stale now: refused, and nothing changes.
    let (status, error) = api_error(update("three", &first).send().await);
    assert_precondition_failed(status, &error);
    let now = c.get_agent().id(&agent.id).send().await.unwrap();
    assert_eq!(
        (etag(&now), &now.current_version_id),
        (second.clone(), &updated.current_version_id)
    );
    // So is a weak tag, even of the current state: If-Match compares strongly.
    let (status, error) = api_error(update("three", &format!("W/{second}")).send().await);
    assert_precondition_failed(status, &error);

    // The current tag among others, and `*`, write.
    let listed = format!("{first}, {second}");
    let third = etag(&update("three", &listed).send().await.unwrap());
    assert_eq!(etag(&update("four", "*").send().await.unwrap()).len(), third.len());

    // An update that changes nothing keeps the tag, and still checks it.
    let current = etag(&c.get_agent().id(&agent.id).send().await.unwrap());
    assert_eq!(etag(&update("four", &current).send().await.unwrap()), current);
    let (status, error) = api_error(update("four", &first).send().await);
    assert_precondition_failed(status, &error);

    // A stale delete is refused; the current tag deletes; then it is 404 whatever the tag.
    let (status, error) = api_error(c.delete_agent().id(&agent.id).if_match(&*first).send().await);
    assert_precondition_failed(status, &error);
    c.delete_agent().id(&agent.id).if_match(&*current).send().await.unwrap();
    let (status, _) = api_error(c.delete_agent().id(&agent.id).if_match("*").send().await);
    assert_eq!(status, 404);
}

#[tokio::test]
async fn if_match_is_checked_and_read_only_from_callers_that_know_it() {
    let server = TestServer::start().await;
    let http = http_client(&server.token);
    let agents = format!("{}/v1/agents", server.url);
    let body = json!({"name": "raw", "config": {"command": ["true"]}});
    let created: Value = http.post(&agents).json(&body).send().await.unwrap().json().await.unwrap();
    let url = format!("{agents}/{}", created["id"].as_str().unwrap());
    let put = |tag: &str, version: Option<&str>| {
        let mut request = http.put(&url).header("If-Match", tag);
        if let Some(version) = version {
            request = request.header("api-version", version);
        }
        request.json(&json!({"config": {"command": ["echo", tag]}})).send()
    };

    for bad in ["nope", "\"a", "\"a\" \"b\"", "\"a\",", "**"] {
        let refused = put(bad, None).await.unwrap();
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST, "{bad:?}");
        let error: Value = refused.json().await.unwrap();
        assert_eq!(error["error"]["param"], "If-Match", "{bad:?}: {error}");
    }
    // A client of 1.2.0 knows nothing of If-Match: its header is not read.
    assert_eq!(put("\"stale\"", Some("1.2.0")).await.unwrap().status(), StatusCode::OK);
    assert_eq!(put("\"stale\"", Some("1.3.0")).await.unwrap().status(), 412);
    assert_eq!(put("\"stale\"", None).await.unwrap().status(), 412);

    // A conditional update sent again with its key (its answer lost) answers its first
    // answer, rather than 412 for its own write.
    let read = http.get(&url).send().await.unwrap();
    let tag = read.headers()["etag"].to_str().unwrap().to_string();
    let update = || {
        let body = json!({"config": {"command": ["echo", "keyed"]}});
        let request = http.put(&url).header("If-Match", &tag).header("Idempotency-Key", "put-1");
        request.json(&body).send()
    };
    let first = update().await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let first_tag = first.headers()["etag"].clone();
    let first = first.bytes().await.unwrap();
    let again = update().await.unwrap();
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.headers()["etag"], first_tag, "the ETag is kept with the answer");
    assert_eq!(again.bytes().await.unwrap(), first);
}

/// Ten writers read one tag and write at once: exactly one wins, the others get 412, and
/// the agent has the winner's configuration, in one new version.
#[tokio::test]
async fn of_writers_who_read_one_etag_exactly_one_wins() {
    let server = TestServer::start().await;
    let c = server.client();
    let agent = agent(&c, "raced", json!({"command": ["echo", "start"]})).await;
    let tag = etag(&c.get_agent().id(&agent.id).send().await.unwrap());
    let words: Vec<String> = (0..10).map(|i| format!("writer-{i}")).collect();
    let writes = words.iter().map(|word| {
        let (c, id, tag) = (&c, &agent.id, &tag);
        async move {
            c.update_agent()
                .id(id)
                .if_match(&**tag)
                .body_map(|b| b.config(config(word)))
                .send()
                .await
        }
    });
    let answers = futures::future::join_all(writes).await;
    let mut winners = Vec::new();
    for (word, answer) in words.iter().zip(answers) {
        match answer {
            Ok(_) => winners.push(word),
            Err(refused) => {
                let (status, error) = api_error::<types::Agent>(Err(refused));
                assert_precondition_failed(status, &error);
            }
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    let versions = c.list_agent_versions().id(&agent.id).send().await.unwrap().into_inner();
    assert_eq!(versions.data.len(), 2, "the first and the winner's");
    let current = c
        .get_agent_version()
        .id(&agent.id)
        .version_id(&versions.data[0].id)
        .send()
        .await
        .unwrap()
        .into_inner();
    assert_eq!(current.config, config(winners[0]));
}

#[tokio::test]
async fn volumes_commits_and_tokens_take_if_match() {
    let server = TestServer::start().await;
    let c = server.client();
    let volume = c.create_volume().body_map(|b| b.name("tagged")).send().await.unwrap();
    let empty = etag(&c.get_volume().id(&volume.id).send().await.unwrap());
    let prepare = || async {
        let prepared = c
            .prepare_volume_upload()
            .id(&volume.id)
            .body_map(|b| b.files(vec![]))
            .send()
            .await
            .unwrap()
            .into_inner();
        prepared.upload_session_id.parse::<types::CommitUploadRequestUploadSessionId>().unwrap()
    };
    let commit = |session: types::CommitUploadRequestUploadSessionId, tag: String| {
        let c = &c;
        let id = volume.id.clone();
        async move {
            c.commit_volume_upload()
                .id(id)
                .if_match(tag)
                .body_map(|b| b.upload_session_id(session))
                .send()
                .await
        }
    };

    let first = prepare().await;
    commit(first.clone(), empty.clone()).await.unwrap();
    let committed = etag(&c.get_volume().id(&volume.id).send().await.unwrap());
    assert_ne!(committed, empty);
    // The same commit again answers the version it made, whatever its tag says now.
    commit(first, empty.clone()).await.unwrap();
    // Another session's commit on the stale tag is refused, and leaves the session open.
    let second = prepare().await;
    let (status, error) = api_error(commit(second.clone(), empty.clone()).await);
    assert_precondition_failed(status, &error);
    let versions = c.list_volume_versions().id(&volume.id).send().await.unwrap().into_inner();
    assert_eq!(versions.data.len(), 1);
    commit(second, committed.clone()).await.unwrap();
    let latest = etag(&c.get_volume().id(&volume.id).send().await.unwrap());
    assert_ne!(latest, committed, "the same content committed again is a new state");

    let (status, error) =
        api_error(c.delete_volume().id(&volume.id).if_match(&*committed).send().await);
    assert_precondition_failed(status, &error);
    c.delete_volume().id(&volume.id).if_match(&*latest).send().await.unwrap();

    let token = c.create_token().body_map(|b| b.name("spare")).send().await.unwrap();
    let tag = etag(&c.get_token().id(&token.id).send().await.unwrap());
    let (status, error) = api_error(c.revoke_token().id(&token.id).if_match("\"x\"").send().await);
    assert_precondition_failed(status, &error);
    c.revoke_token().id(&token.id).if_match(&*tag).send().await.unwrap();
}
