//! Agents end to end: the generated client against a real server.

use std::collections::BTreeSet;

use serde_json::json;
use vm0_tests::server::{api_error, TestServer};
use vm0_types::AgentConfig;

fn config(value: serde_json::Value) -> AgentConfig {
    AgentConfig(value.as_object().unwrap().clone())
}

#[tokio::test]
async fn an_agent_lives_through_its_versions() {
    let server = TestServer::start().await;
    let c = server.client();
    let first = json!({"command": ["echo", "one"]});
    let agent = c
        .create_agent()
        .body_map(|b| b.name("my-agent").config(config(first.clone())))
        .send()
        .await
        .unwrap()
        .into_inner();
    assert!(agent.id.starts_with("ag_"));
    assert_eq!(agent.created_at, agent.updated_at);

    let got = c.get_agent().id(&agent.id).send().await.unwrap().into_inner();
    assert_eq!(got, agent);

    // The same configuration again makes no version.
    let same = c
        .update_agent()
        .id(&agent.id)
        .body_map(|b| b.config(config(first.clone())))
        .send()
        .await
        .unwrap()
        .into_inner();
    assert_eq!(same.current_version_id, agent.current_version_id);
    // Another one does.
    let second = json!({"command": ["echo", "two"]});
    let updated = c
        .update_agent()
        .id(&agent.id)
        .body_map(|b| b.config(config(second.clone())))
        .send()
        .await
        .unwrap()
        .into_inner();
    assert_ne!(updated.current_version_id, agent.current_version_id);

    let versions = c.list_agent_versions().id(&agent.id).send().await.unwrap().into_inner();
    let numbers: Vec<u64> = versions.data.iter().map(|v| v.version_number.get()).collect();
    assert_eq!(numbers, vec![2, 1], "newest first");
    assert_eq!(versions.data[0].id, updated.current_version_id);
    assert!(!versions.pagination.has_more);

    let v1 = c
        .get_agent_version()
        .id(&agent.id)
        .version_id(&agent.current_version_id)
        .send()
        .await
        .unwrap()
        .into_inner();
    assert_eq!(serde_json::Value::Object(v1.config.0), first);
    let v2 = c
        .get_agent_version()
        .id(&agent.id)
        .version_id(&updated.current_version_id)
        .send()
        .await
        .unwrap()
        .into_inner();
    assert_eq!(serde_json::Value::Object(v2.config.0), second);

    let listed = c.list_agents().name("my-agent").send().await.unwrap().into_inner();
    assert_eq!(listed.data.len(), 1);
    assert!(c.list_agents().name("other").send().await.unwrap().into_inner().data.is_empty());

    c.delete_agent().id(&agent.id).send().await.unwrap();
    let (status, error) = api_error(c.get_agent().id(&agent.id).send().await);
    assert_eq!((status, error.code.to_string().as_str()), (404, "resource_not_found"));
    assert_eq!(error.message, format!("No such agent: '{}'", agent.id));
    assert_eq!(api_error(c.list_agent_versions().id(&agent.id).send().await).0, 404);
    assert_eq!(api_error(c.delete_agent().id(&agent.id).send().await).0, 404);
}

#[tokio::test]
async fn names_are_unique_per_user() {
    let server = TestServer::start().await;
    let c = server.client();
    c.create_agent()
        .body_map(|b| b.name("taken").config(config(json!({"command": ["true"]}))))
        .send()
        .await
        .unwrap();
    let (status, error) = api_error(
        c.create_agent()
            .body_map(|b| b.name("taken").config(config(json!({"command": ["true"]}))))
            .send()
            .await,
    );
    assert_eq!(
        (status, error.code.to_string().as_str(), error.param.as_deref()),
        (409, "resource_already_exists", Some("name"))
    );
    // Another user may use the name.
    let other = server.client_with(&server.user_token("someone-else").await);
    other
        .create_agent()
        .body_map(|b| b.name("taken").config(config(json!({"command": ["true"]}))))
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn another_users_agents_are_missing() {
    let server = TestServer::start().await;
    let mine = server.client();
    let agent = mine
        .create_agent()
        .body_map(|b| b.name("private").config(config(json!({"command": ["true"]}))))
        .send()
        .await
        .unwrap()
        .into_inner();
    let theirs = server.client_with(&server.user_token("mallory").await);
    let (status, error) = api_error(theirs.get_agent().id(&agent.id).send().await);
    let (_, missing) = api_error(theirs.get_agent().id("ag_doesnotexist").send().await);
    assert_eq!(status, 404);
    assert_eq!(
        error.message.replace(&agent.id, "X"),
        missing.message.replace("ag_doesnotexist", "X"),
        "the same 404 as a missing id"
    );
    assert_eq!(
        api_error(
            theirs
                .update_agent()
                .id(&agent.id)
                .body_map(|b| b.config(config(json!({"command": ["false"]}))))
                .send()
                .await
        )
        .0,
        404
    );
    assert_eq!(api_error(theirs.delete_agent().id(&agent.id).send().await).0, 404);
    assert_eq!(
        api_error(
            theirs
                .get_agent_version()
                .id(&agent.id)
                .version_id(&agent.current_version_id)
                .send()
                .await
        )
        .0,
        404
    );
    assert!(theirs.list_agents().send().await.unwrap().into_inner().data.is_empty());
    mine.get_agent().id(&agent.id).send().await.unwrap();
}

#[tokio::test]
async fn pages_cover_the_list_once_newest_first() {
    let server = TestServer::start().await;
    let c = server.client();
    let mut created = Vec::new();
    for i in 0..25 {
        let name = format!("agent-{i:02}");
        created.push(
            c.create_agent()
                .body_map(|b| b.name(name.as_str()).config(config(json!({"command": ["true"]}))))
                .send()
                .await
                .unwrap()
                .into_inner()
                .id,
        );
    }
    let (mut seen, mut cursor, mut pages) = (Vec::new(), None::<String>, 0);
    loop {
        let mut request = c.list_agents().limit(10);
        if let Some(cursor) = &cursor {
            request = request.cursor(cursor.as_str());
        }
        let page = request.send().await.unwrap().into_inner();
        pages += 1;
        seen.extend(page.data.iter().map(|a| a.id.clone()));
        assert_eq!(page.pagination.has_more, page.pagination.next_cursor.is_some());
        match page.pagination.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    created.reverse();
    assert_eq!(pages, 3);
    assert_eq!(seen, created, "every agent once, newest first");
    assert_eq!(seen.iter().collect::<BTreeSet<_>>().len(), 25);
}

#[tokio::test]
async fn a_forged_or_foreign_cursor_is_a_400_naming_cursor() {
    let server = TestServer::start().await;
    let c = server.client();
    for i in 0..3 {
        let name = format!("a-{i}");
        c.create_agent()
            .body_map(|b| b.name(name.as_str()).config(config(json!({"command": ["true"]}))))
            .send()
            .await
            .unwrap();
    }
    let page = c.list_agents().limit(1).send().await.unwrap().into_inner();
    let cursor = page.pagination.next_cursor.unwrap();
    // The seed's example cursor, a garbled one, and one for another list.
    let tokens_cursor = {
        c.create_token().body_map(|b| b.name("t")).send().await.unwrap();
        c.list_tokens().limit(1).send().await.unwrap().into_inner().pagination.next_cursor.unwrap()
    };
    let mut tampered = cursor.clone();
    tampered.insert(1, 'x');
    for bad in ["eyJpZCI6ImFnX2RlZiJ9", "%%%", tampered.as_str(), tokens_cursor.as_str()] {
        let (status, error) = api_error(c.list_agents().limit(1).cursor(bad).send().await);
        assert_eq!((status, error.param.as_deref()), (400, Some("cursor")), "{bad}");
    }
    // A cursor of a filtered list does not page the unfiltered one.
    let filtered = c.list_agents().limit(1).name("a-1").send().await.unwrap().into_inner();
    assert!(filtered.pagination.next_cursor.is_none());
    c.list_agents().limit(1).cursor(cursor.as_str()).send().await.unwrap();
}

#[tokio::test]
async fn invalid_input_is_a_400_naming_the_parameter() {
    let server = TestServer::start().await;
    let http = reqwest::Client::new();
    let post = |body: serde_json::Value| {
        http.post(format!("{}/v1/agents", server.url)).bearer_auth(&server.token).json(&body).send()
    };
    for (body, code, param) in [
        (json!({"name": "Bad Name", "config": {"command": ["true"]}}), "invalid_parameter", "name"),
        (json!({"name": "-edge", "config": {}}), "invalid_parameter", "name"),
        (json!({"name": "a".repeat(65), "config": {}}), "invalid_parameter", "name"),
        (json!({"config": {}}), "missing_parameter", "name"),
        (json!({"name": "ok", "config": []}), "invalid_parameter", "config"),
        (json!({"name": "ok", "config": {}, "extra": 1}), "invalid_parameter", "extra"),
        // Past the server's cap (--max-run-processes, 1,024 by default), though the
        // executor's schema allows it.
        (
            json!({"name": "ok", "config": {"command": ["true"], "maxProcesses": 65536}}),
            "invalid_parameter",
            "config.maxProcesses",
        ),
    ] {
        let response = post(body.clone()).await.unwrap();
        let status = response.status().as_u16();
        let error: serde_json::Value = response.json().await.unwrap();
        assert_eq!(
            (status, error["error"]["code"].as_str(), error["error"]["param"].as_str()),
            (400, Some(code), Some(param)),
            "{body}"
        );
    }
    assert!(
        server.client().list_agents().send().await.unwrap().into_inner().data.is_empty(),
        "nothing was created"
    );
}

/// An instance whose blobs live in its data directory refuses to start beside another on
/// its PostgreSQL database, where neither would find the other's blobs; once the first
/// stops, the database is free again. (SQLite lives in one data directory: nothing to
/// test.) Instances sharing a bucket share a database: `vm0-server/tests/cluster.rs`.
/// A property of 40 KB unknown to the spec is a 400 that names it cut short, for a caller
/// of any version (the answer of an older version's caller is read to rewrite later error
/// codes; it was once a 500 past 64 KiB).
#[tokio::test]
async fn a_huge_unknown_property_is_a_400_naming_it_short() {
    let server = TestServer::start().await;
    let http = reqwest::Client::new();
    let name = "k".repeat(40_000);
    for version in [None, Some("1.3.0"), Some("1.0.0")] {
        let mut request = http.post(format!("{}/v1/agents", server.url)).bearer_auth(&server.token);
        if let Some(version) = version {
            request = request.header("api-version", version);
        }
        let mut body = json!({"name": "a", "config": {"command": ["true"]}});
        body[&name] = json!(1);
        let response = request.json(&body).send().await.unwrap();
        assert_eq!(response.status(), 400, "api-version {version:?}");
        let body: serde_json::Value = response.json().await.unwrap();
        let param = body["error"]["param"].as_str().unwrap();
        assert!(param.starts_with("kkk") && param.len() < 300, "{version:?}: {}", param.len());
    }
}

#[tokio::test]
async fn an_instance_with_its_blobs_in_its_data_directory_is_alone_on_its_postgresql_database() {
    let server = TestServer::start().await;
    let Some(database_url) =
        vm0_server::testing::database_url(server.data_dir.path()).await.unwrap()
    else {
        return eprintln!("skipped: the server is on SQLite");
    };
    let other = tempfile::tempdir().unwrap();
    let config = vm0_server::Config {
        database_url: Some(database_url),
        secrets_key: Some(server.data_dir.path().join("secrets.key")),
        ..vm0_server::Config::local(other.path())
    };
    let refused =
        vm0_server::bind(config.clone()).await.err().expect("a second instance is refused");
    assert!(
        format!("{refused:#}")
            .contains("several instances on one database need a shared blob store"),
        "{refused:#}"
    );
    let _first_data_dir = server.stop().await;
    vm0_server::bind(config).await.expect("the database is free once the first instance stops");
}

/// The server's portal tries requests against the server that serves it: its spec lists
/// that server first, as `/`, and production after; the portal has Redoc, the samples and
/// the try-it console (which `cargo xtask docs --check` drives in Chromium).
#[tokio::test]
async fn the_docs_try_requests_on_the_server_that_serves_them() {
    let server = TestServer::start().await;
    let spec: serde_json::Value =
        reqwest::get(format!("{}/openapi.json", server.url)).await.unwrap().json().await.unwrap();
    let servers: Vec<&str> =
        spec["servers"].as_array().unwrap().iter().map(|s| s["url"].as_str().unwrap()).collect();
    assert_eq!(servers, ["/", "https://api.vm0.ai", "http://127.0.0.1:8080"]);
    for path in ["/docs", "/docs/"] {
        let page = reqwest::get(format!("{}{path}", server.url)).await.unwrap();
        assert_eq!(page.status(), 200);
        let page = page.text().await.unwrap();
        for part in ["Redoc.init", "startTryIt", "x-codeSamples", "tryit-send"] {
            assert!(page.contains(part), "{path} has no {part}");
        }
    }
}
