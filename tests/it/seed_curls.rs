//! Every curl example of the seeds, run with curl against a real server once the base URL
//! and token are replaced, answers 200 with the documented shape. The example ids
//! (`ag_abc123`) and cursor become real ones, as the seeds' own usage says ("use the
//! nextCursor from the previous response").

use serde_json::{json, Value};
use vm0_tests::server::TestServer;
use vm0_types::AgentConfig;
use xtask::spec::{self, workspace_root};

/// Each curl command of the seeds: its URL and headers, as written.
fn seed_curls() -> Vec<(String, Vec<String>)> {
    let quoted = regex::Regex::new(r#""([^"]*)""#).unwrap();
    let mut out = Vec::new();
    for name in ["seed-000-overview.txt", "seed-003-agents.txt"] {
        let text =
            std::fs::read_to_string(workspace_root().join("docs/sources").join(name)).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (index, line) in lines.iter().enumerate() {
            let Some(rest) = line.strip_prefix("curl ") else { continue };
            let url = rest.trim_end_matches('\\').trim().trim_matches('"').to_string();
            let mut headers = Vec::new();
            let mut next = index + 1;
            while let Some(header) = lines.get(next).and_then(|l| l.strip_prefix("-H ")) {
                headers.push(quoted.captures(header).unwrap()[1].to_string());
                next += 1;
            }
            out.push((url, headers));
        }
    }
    out
}

#[tokio::test]
async fn every_seed_curl_works_against_the_server() {
    let curls = seed_curls();
    assert_eq!(curls.len(), 7, "the seeds hold seven curl examples: {curls:#?}");
    let server = TestServer::start().await;
    let c = server.client();
    let config = AgentConfig(json!({"command": ["true"]}).as_object().unwrap().clone());
    let agent = c
        .create_agent()
        .body_map(|b| b.name("my-agent").config(config.clone()))
        .send()
        .await
        .unwrap()
        .into_inner();
    for i in 0..11 {
        let name = format!("agent-{i}");
        c.create_agent()
            .body_map(|b| b.name(name.as_str()).config(config.clone()))
            .send()
            .await
            .unwrap();
    }
    let cursor = c
        .list_agents()
        .limit(10)
        .send()
        .await
        .unwrap()
        .into_inner()
        .pagination
        .next_cursor
        .unwrap();
    let doc = spec::load().unwrap();
    for (url, headers) in curls {
        let url = url
            .replace("https://api.vm0.ai", &server.url)
            .replace("ag_abc123", &agent.id)
            .replace("eyJpZCI6ImFnX2RlZiJ9", &cursor);
        let mut command = tokio::process::Command::new("curl");
        command.args(["--silent", "--show-error", "--write-out", "\n%{http_code}", &url]);
        for header in &headers {
            command.args(["-H", &header.replace("vm0_live_xxx", &server.token)]);
        }
        let output = command.output().await.expect("curl runs");
        let text = String::from_utf8(output.stdout).unwrap();
        let (body, status) = text.rsplit_once('\n').unwrap();
        assert_eq!(status, "200", "{url}: {body}");
        let body: Value = serde_json::from_str(body).unwrap();
        let path = url
            .trim_start_matches(&server.url)
            .split('?')
            .next()
            .unwrap()
            .replace(&agent.id, "{id}");
        let op = spec::operations(&doc)
            .into_iter()
            .find(|o| o.method == "get" && o.path == path)
            .unwrap();
        let schema = &op.op["responses"]["200"]["content"]["application/json"]["schema"];
        let errors = spec::validate(&doc, schema, &body).unwrap();
        assert!(errors.is_empty(), "{url}: {errors:?}");
        if url.contains("name=my-agent") {
            assert_eq!(body["data"].as_array().unwrap().len(), 1);
        }
        if url.contains("cursor=") {
            assert_eq!(
                body["data"].as_array().unwrap().len(),
                2,
                "the second page holds the last two of twelve"
            );
            assert_eq!(body["pagination"], json!({"hasMore": false, "nextCursor": null}));
        }
    }
}
