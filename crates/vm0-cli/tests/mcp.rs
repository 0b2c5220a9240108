//! `vm0 mcp` spoken to over stdio, against a fresh reference server behind the checking
//! proxy: first by hand, line by line (`initialize`, `tools/list`, the definitions checked
//! against the MCP specification's schema), then through rmcp's client as an assistant
//! would use it: create an agent, run it, wait for it, read its logs, move files.

use std::process::Stdio;

use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::TokioChildProcess;
use rmcp::ServiceExt;
use serde_json::{json, Map, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use vm0_tests::server::TestServer;

/// The MCP specification's schema, 2025-11-25 (the newest version with `initialize`), from
/// github.com/modelcontextprotocol/modelcontextprotocol, schema/2025-11-25/schema.json at
/// b0f60ba5.
const MCP_SCHEMA: &str = include_str!("../../vm0-mcp/tests/mcp-schema-2025-11-25.json");

/// `vm0 mcp` for `server`, with `args`, its configuration folder `config`.
fn vm0_mcp(
    server: &TestServer,
    config: &std::path::Path,
    args: &[&str],
) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_vm0"));
    command
        .arg("mcp")
        .args(args)
        .env("VM0_API_URL", &server.url)
        .env("VM0_TOKEN", &server.token)
        .env("XDG_CONFIG_HOME", config)
        .env("HOME", config);
    command
}

/// Validates `instance` against the definition `name` of the MCP schema.
fn check_mcp(name: &str, instance: &Value) {
    let mut schema: Value = serde_json::from_str(MCP_SCHEMA).unwrap();
    schema["$ref"] = json!(format!("#/$defs/{name}"));
    let validator = jsonschema::draft202012::new(&schema).unwrap();
    let errors: Vec<String> = validator.iter_errors(instance).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "not an MCP {name}: {errors:?}\n{instance:#}");
}

/// The operations of the spec that answer JSON or nothing: each must be a tool.
fn json_operations() -> Vec<String> {
    let root = env!("CARGO_MANIFEST_DIR");
    let spec = std::fs::read_to_string(format!("{root}/../../openapi/v1.json")).unwrap();
    let spec: Value = serde_json::from_str(&spec).unwrap();
    let mut names = Vec::new();
    for item in spec["paths"].as_object().unwrap().values() {
        for op in item.as_object().unwrap().values().filter(|op| op.get("operationId").is_some()) {
            let successes = op["responses"].as_object().unwrap().iter();
            let json = successes.filter(|(status, _)| status.starts_with('2')).all(|(_, r)| {
                r.get("content")
                    .and_then(Value::as_object)
                    .is_none_or(|c| c.keys().all(|m| m == "application/json"))
            });
            if json {
                names.push(op["operationId"].as_str().unwrap().to_string());
            }
        }
    }
    names
}

/// A JSON-RPC conversation with a child over its standard input and output.
struct Lines {
    input: tokio::process::ChildStdin,
    output: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Lines {
    async fn request(&mut self, id: u64, method: &str, params: Value) -> Value {
        let message = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        self.input.write_all(format!("{message}\n").as_bytes()).await.unwrap();
        loop {
            let line = self.output.next_line().await.unwrap().expect("an answer");
            let answer: Value = serde_json::from_str(&line).unwrap();
            if answer["id"] == json!(id) {
                return answer;
            }
        }
    }
}

#[tokio::test]
async fn vm0_mcp_answers_initialize_and_lists_a_valid_tool_per_json_operation() {
    let server = TestServer::start().await;
    let config = tempfile::tempdir().unwrap();
    let mut child = vm0_mcp(&server, config.path(), &[])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let output = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut lines = Lines { input: child.stdin.take().unwrap(), output };

    let client = json!({"name": "test", "version": "1"});
    let params = json!({"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": client});
    let initialized = lines.request(1, "initialize", params).await;
    check_mcp("InitializeResult", &initialized["result"]);
    assert_eq!(initialized["result"]["serverInfo"]["name"], "vm0", "{initialized}");
    assert!(initialized["result"]["capabilities"]["tools"].is_object(), "{initialized}");
    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    lines.input.write_all(format!("{note}\n").as_bytes()).await.unwrap();

    let listed = lines.request(2, "tools/list", json!({})).await;
    check_mcp("ListToolsResult", &listed["result"]);
    let tools = listed["result"]["tools"].as_array().unwrap();
    for name in json_operations() {
        let tool = tools.iter().find(|t| t["name"] == name.as_str());
        let tool = tool.unwrap_or_else(|| panic!("no tool for the JSON operation {name}"));
        check_mcp("Tool", tool);
        assert_eq!(tool["inputSchema"]["type"], "object", "{tool}");
        assert!(tool["description"].as_str().is_some_and(|d| !d.is_empty()), "{tool}");
        // Each input schema is itself a valid JSON Schema (MCP's dialect, 2020-12).
        jsonschema::draft202012::new(&tool["inputSchema"])
            .unwrap_or_else(|e| panic!("{name}'s input schema: {e}"));
    }
    for name in ["waitForRun", "pushVolume", "pullArtifact"] {
        let tool = tools.iter().find(|t| t["name"] == name).expect(name);
        check_mcp("Tool", tool);
    }

    // An unknown tool is a protocol error; the server goes on.
    let unknown = lines.request(3, "tools/call", json!({"name": "noSuchTool"})).await;
    assert!(unknown["error"]["message"].as_str().unwrap().contains("noSuchTool"), "{unknown}");
    let again = lines.request(4, "tools/list", json!({})).await;
    assert!(again["result"]["tools"].is_array(), "{again}");
    drop(lines);
    let status = child.wait().await.unwrap();
    assert!(status.success(), "vm0 mcp ended with {status} when its input closed");
}

#[tokio::test]
async fn read_only_and_a_named_subset_offer_only_those_tools() {
    let server = TestServer::start().await;
    let config = tempfile::tempdir().unwrap();
    let names = |client: RunningService<RoleClient, ()>| async move {
        let tools = client.list_all_tools().await.unwrap();
        client.cancel().await.unwrap();
        tools.into_iter().map(|t| t.name.to_string()).collect::<Vec<_>>()
    };
    let read_only = vm0_mcp(&server, config.path(), &["--read-only"]);
    let read_only =
        names(().serve(TokioChildProcess::new(read_only).unwrap()).await.unwrap()).await;
    assert!(read_only.contains(&"listAgents".to_string()), "{read_only:?}");
    assert!(read_only.contains(&"waitForRun".to_string()), "{read_only:?}");
    for writes in ["createAgent", "deleteAgent", "createRun", "pushVolume"] {
        assert!(!read_only.contains(&writes.to_string()), "{writes} in {read_only:?}");
    }
    let some = vm0_mcp(&server, config.path(), &["--tools", "getRun,waitForRun"]);
    let some = names(().serve(TokioChildProcess::new(some).unwrap()).await.unwrap()).await;
    assert_eq!(some, ["getRun", "waitForRun"]);

    let unknown = vm0_mcp(&server, config.path(), &["--tools", "getRun,nope"]).output().await;
    let unknown = unknown.unwrap();
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(!unknown.status.success() && stderr.contains("nope"), "{stderr}");
}

/// Calls `name` with `arguments`.
async fn call(
    client: &RunningService<RoleClient, ()>,
    name: &str,
    arguments: Value,
) -> CallToolResult {
    let Value::Object(arguments) = arguments else { panic!("arguments are an object") };
    let params = CallToolRequestParams::new(name.to_string()).with_arguments(arguments);
    client.call_tool(params).await.unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The result's structured content, which must be a success.
fn ok(result: CallToolResult) -> Map<String, Value> {
    assert_ne!(result.is_error, Some(true), "{result:?}");
    match result.structured_content.clone() {
        Some(Value::Object(object)) => object,
        _ => panic!("no structured content in {result:?}"),
    }
}

/// The text of an error result.
fn error_text(result: CallToolResult) -> String {
    assert_eq!(result.is_error, Some(true), "{result:?}");
    result.content.iter().filter_map(|c| c.as_text().map(|t| t.text.clone())).collect()
}

#[tokio::test]
async fn an_assistant_creates_an_agent_runs_it_waits_and_reads_its_logs() {
    let server = TestServer::start().await;
    let config = tempfile::tempdir().unwrap();
    let transport = TokioChildProcess::new(vm0_mcp(&server, config.path(), &[])).unwrap();
    let client = ().serve(transport).await.unwrap();

    let script =
        "cat volumes/input/in.txt; mkdir -p artifact; echo made-by-mcp > artifact/result.txt";
    let command = json!(["sh", "-c", script]);
    let agent =
        ok(call(&client, "createAgent", json!({"name": "mcp", "config": {"command": command}}))
            .await);
    let listed = ok(call(&client, "listAgents", json!({})).await);
    assert!(
        listed["data"].as_array().unwrap().iter().any(|a| a["id"] == agent["id"]),
        "{listed:?}"
    );

    // An API error names its type, code, message and request id.
    let missing = call(&client, "getAgent", json!({"id": "agt_00000000000000000000000000"})).await;
    let missing = error_text(missing);
    eprintln!("getAgent of a missing id: {missing}");
    for part in ["not_found", "requestId"] {
        assert!(missing.contains(part), "{part} in {missing}");
    }
    // Bad arguments name the argument, and the server goes on.
    let unknown = error_text(call(&client, "getAgent", json!({"id": "x", "colour": "red"})).await);
    assert!(unknown.contains("colour"), "{unknown}");
    let object = error_text(call(&client, "getAgent", json!({"id": {"no": 1}})).await);
    assert!(object.contains("id"), "{object}");
    let wait = error_text(call(&client, "waitForRun", json!({"runId": "x"})).await);
    assert!(wait.contains("runId") || wait.contains("id"), "{wait}");
    let invalid =
        error_text(call(&client, "createAgent", json!({"name": "bad name!", "config": {}})).await);
    assert!(invalid.contains("invalid") && invalid.contains("name"), "{invalid}");

    // Files in: a local folder pushed to a volume that the run mounts.
    let folder = tempfile::tempdir().unwrap();
    std::fs::write(folder.path().join("in.txt"), "from-a-volume\n").unwrap();
    let volume = ok(call(&client, "createVolume", json!({"name": "input"})).await);
    let pushed =
        ok(call(&client, "pushVolume", json!({"volumeId": volume["id"], "folder": folder.path()}))
            .await);
    assert_eq!(pushed["fileCount"], 1, "{pushed:?}");
    let artifact = ok(call(&client, "createArtifact", json!({"name": "output"})).await);

    let volumes = json!({"input": "latest"});
    let run = json!({"agent": "mcp", "prompt": "go", "volumes": volumes, "artifactName": "output"});
    let run = ok(call(&client, "createRun", run).await);
    let waited =
        ok(call(&client, "waitForRun", json!({"id": run["id"], "timeoutSeconds": 120})).await);
    assert_eq!(waited["status"], "completed", "{waited:?}");
    assert_eq!(waited["timedOut"], false, "{waited:?}");
    assert_eq!(waited["output"], json!(["from-a-volume"]), "{waited:?}");
    let logs = ok(call(&client, "listRunLogs", json!({"id": run["id"], "type": "agent"})).await);
    let messages: Vec<&Value> =
        logs["data"].as_array().unwrap().iter().map(|l| &l["message"]).collect();
    assert_eq!(messages, [&json!("from-a-volume")], "{logs:?}");

    // Files out: the artifact the run wrote, pulled to a local folder.
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("pulled");
    ok(call(&client, "pullArtifact", json!({"artifactId": artifact["id"], "folder": target}))
        .await);
    assert_eq!(std::fs::read_to_string(target.join("result.txt")).unwrap(), "made-by-mcp\n");

    // A delete answers no body, and says so.
    let deleted = call(&client, "deleteAgent", json!({"id": agent["id"]})).await;
    assert_ne!(deleted.is_error, Some(true), "{deleted:?}");
    client.cancel().await.unwrap();
}
