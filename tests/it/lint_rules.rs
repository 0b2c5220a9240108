//! `cargo xtask lint`'s own checks: the spec passes them, and breaking each rule on purpose
//! is reported with the rule's name and the place at fault.

use serde_json::{json, Value};
use xtask::lint::{check, Finding};
use xtask::spec;

fn spec() -> Value {
    spec::load().expect("openapi/v1.yaml parses")
}

#[test]
fn the_spec_passes_every_rule() {
    let findings: Vec<String> = check(&spec()).iter().map(Finding::to_string).collect();
    assert!(findings.is_empty(), "findings:\n{}", findings.join("\n"));
}

/// Sets the value at a JSON pointer, creating nothing: the parent must exist.
pub(crate) fn set(doc: &mut Value, at: &str, value: Value) {
    let (parent, key) = at.rsplit_once('/').expect("a pointer with a parent");
    let key = key.replace("~1", "/").replace("~0", "~");
    match doc.pointer_mut(parent).unwrap_or_else(|| panic!("no {parent} in the spec")) {
        Value::Object(map) => {
            map.insert(key, value);
        }
        Value::Array(items) => items[key.parse::<usize>().expect("an index")] = value,
        _ => panic!("{parent} holds no children"),
    }
}

pub(crate) fn remove(doc: &mut Value, at: &str) {
    let (parent, key) = at.rsplit_once('/').expect("a pointer with a parent");
    let key = key.replace("~1", "/").replace("~0", "~");
    let removed =
        doc.pointer_mut(parent).and_then(Value::as_object_mut).and_then(|m| m.shift_remove(&key));
    assert!(removed.is_some(), "nothing to remove at {at}");
}

type Breakage = fn(&mut Value);

/// Each case: what is broken, how, and the rule and place the lint must name.
const CASES: &[(&str, Breakage, &str, &str)] = &[
    (
        "a nullable reference in allOf, which strict 3.0.3 reads as not nullable",
        |d| {
            set(
                d,
                "/components/schemas/VolumeDetail/properties/currentVersion",
                json!({"type": "object", "nullable": true, "allOf": [{"$ref": "#/components/schemas\
                    /VolumeVersion"}]}),
            )
        },
        "nullable-type",
        "#/components/schemas/VolumeDetail/properties/currentVersion",
    ),
    (
        "a branch of RunEvent referred to from elsewhere",
        |d| {
            set(
                d,
                "/components/schemas/RunList/properties/lastEvent",
                json!({"$ref": "#/components/schemas/RunOutputEvent"}),
            )
        },
        "discriminated-branch",
        "#/components/schemas/RunEvent/oneOf/1",
    ),
    (
        "a branch of RunEvent whose tag is not the mapping's",
        |d| set(d, "/components/schemas/RunErrorEvent/properties/event/enum", json!(["failure"])),
        "discriminated-branch",
        "#/components/schemas/RunEvent/oneOf/2",
    ),
    (
        "x-since naming a property the schema does not have",
        |d| set(d, "/components/schemas/LogEntry/x-since/origin", json!("1.1.0")),
        "since",
        "#/components/schemas/LogEntry/x-since",
    ),
    (
        "x-since naming a version after info.version",
        |d| set(d, "/components/schemas/LogEntry/x-since/sequence", json!("1.9.0")),
        "since",
        "#/components/schemas/LogEntry/x-since",
    ),
    (
        "x-since on an enumeration the router does not rewrite",
        |d| set(d, "/components/schemas/RunStatus/x-since", json!({"cancelled": "1.2.0"})),
        "since",
        "#/components/schemas/RunStatus/x-since",
    ),
    (
        "an error code added later without a fallback",
        |d| set(d, "/components/schemas/ErrorCode/x-fallback", json!({})),
        "since",
        "#/components/schemas/ErrorCode/x-since",
    ),
    (
        "a snake_case property",
        |d| set(d, "/components/schemas/Agent/properties/created_at", json!({"type": "string"})),
        "camel-case",
        "#/components/schemas/Agent/properties/created_at",
    ),
    (
        "a snake_case query parameter",
        |d| set(d, "/paths/~1v1~1agents/get/parameters/2/name", json!("agent_name")),
        "camel-case",
        "#/paths/~1v1~1agents/get/parameters/2/name",
    ),
    (
        "a missing X-Request-Id header",
        |d| remove(d, "/paths/~1v1~1agents/get/responses/200/headers/X-Request-Id"),
        "response-headers",
        "#/paths/~1v1~1agents/get/responses/200",
    ),
    (
        "a missing X-API-Version header on a shared error response",
        |d| remove(d, "/components/responses/RunNotFound/headers/X-API-Version"),
        "response-headers",
        "#/components/responses/RunNotFound",
    ),
    (
        "an operation without a summary",
        |d| remove(d, "/paths/~1v1~1agents~1{id}/get/summary"),
        "operation-docs",
        "#/paths/~1v1~1agents~1{id}/get",
    ),
    (
        "an operation without a description",
        |d| remove(d, "/paths/~1v1~1runs/post/description"),
        "operation-docs",
        "#/paths/~1v1~1runs/post",
    ),
    (
        "an operation without an operationId",
        |d| remove(d, "/paths/~1v1~1tokens/get/operationId"),
        "operation-id",
        "#/paths/~1v1~1tokens/get",
    ),
    (
        "an operation without a tag",
        |d| remove(d, "/paths/~1v1~1volumes/get/tags"),
        "operation-tag",
        "#/paths/~1v1~1volumes/get",
    ),
    (
        "an operation that opts out of security",
        |d| set(d, "/paths/~1v1~1artifacts/get/security", json!([])),
        "operation-security",
        "#/paths/~1v1~1artifacts/get",
    ),
    (
        "a parameter without a description",
        |d| remove(d, "/components/parameters/cursor/description"),
        "parameter-docs",
        "#/components/parameters/cursor",
    ),
    (
        "a success response without an example",
        |d| remove(d, "/paths/~1v1~1agents/post/responses/201/content/application~1json/example"),
        "operation-examples",
        "#/paths/~1v1~1agents/post/responses/201/content/application~1json",
    ),
    (
        "a request body without an example",
        |d| remove(d, "/paths/~1v1~1tokens/post/requestBody/content/application~1json/example"),
        "operation-examples",
        "#/paths/~1v1~1tokens/post/requestBody/content/application~1json",
    ),
    (
        "a list operation without a cursor",
        |d| {
            let params = d
                .pointer_mut("/paths/~1v1~1runs/get/parameters")
                .and_then(Value::as_array_mut)
                .unwrap();
            params.retain(|p| p.get("$ref") != Some(&json!("#/components/parameters/cursor")));
        },
        "list-envelope",
        "#/paths/~1v1~1runs/get",
    ),
    (
        "a list operation without the pagination envelope",
        |d| remove(d, "/components/schemas/TokenList/properties/pagination"),
        "list-envelope",
        "#/paths/~1v1~1tokens/get/responses/200",
    ),
    (
        "an error status without the Error schema",
        |d| {
            set(
                d,
                "/components/responses/AgentNameTaken/content/application~1json/schema",
                json!({"type": "object"}),
            )
        },
        "error-schema",
        "#/components/responses/AgentNameTaken",
    ),
    (
        "a default response",
        |d| {
            set(
                d,
                "/paths/~1v1~1agents/get/responses/default",
                json!({"$ref": "#/components/responses/InternalError"}),
            )
        },
        "explicit-statuses",
        "#/paths/~1v1~1agents/get/responses/default",
    ),
    (
        "a JSON 2xx beside an empty 2xx",
        |d| {
            set(
                d,
                "/paths/~1v1~1agents~1{id}/delete/responses/200",
                json!({"$ref": "#/components/responses/InternalError"}),
            )
        },
        "explicit-statuses",
        "#/paths/~1v1~1agents~1{id}/delete/responses",
    ),
    (
        "an unresolved $ref",
        |d| {
            set(
                d,
                "/components/schemas/AgentList/properties/data/items/$ref",
                json!("#/components/schemas/Agnet"),
            )
        },
        "ref-resolves",
        "#/components/schemas/AgentList/properties/data/items",
    ),
    (
        "an example that does not match its schema",
        |d| {
            set(
                d,
                "/paths/~1v1~1agents~1{id}/get/responses/200/content/application~1json/example\
                /createdAt",
                json!("yesterday"),
            )
        },
        "example-valid",
        "#/paths/~1v1~1agents~1{id}/get/responses/200/content/application~1json/example",
    ),
    (
        "a pattern the regex crate cannot compile",
        |d| set(d, "/components/schemas/AgentName/pattern", json!("^(?!-)[a-z-]+$")),
        "schema-valid",
        "#/components/schemas/AgentName",
    ),
    (
        "a parameter without its location",
        |d| remove(d, "/components/parameters/limit/in"),
        "oas-3.0-schema",
        "#/components/parameters/limit",
    ),
    (
        "an OpenAPI 3.1 document",
        |d| set(d, "/openapi", json!("3.1.0")),
        "openapi-version",
        "#/openapi",
    ),
];

#[test]
fn each_broken_rule_is_reported_at_its_place() {
    let pristine = spec();
    let mut failures = Vec::new();
    for (what, breakage, rule, at) in CASES {
        let mut doc = pristine.clone();
        breakage(&mut doc);
        let findings = check(&doc);
        if !findings.iter().any(|f| f.rule == *rule && f.at == *at) {
            let seen: Vec<String> = findings.iter().map(Finding::to_string).collect();
            failures
                .push(format!("{what}: expected [{rule}] at {at}, got:\n  {}", seen.join("\n  ")));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_finding_reads_as_place_rule_and_message() {
    let mut doc = spec();
    remove(&mut doc, "/paths/~1v1~1agents~1{id}/get/summary");
    let finding = check(&doc).into_iter().find(|f| f.rule == "operation-docs").expect("a finding");
    assert_eq!(
        finding.to_string(),
        "#/paths/~1v1~1agents~1{id}/get [operation-docs]: operation has no summary"
    );
}
