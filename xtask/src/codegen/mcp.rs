//! `vm0-mcp`'s tool table, `tools.json`: one MCP tool per operation of the spec that
//! answers JSON (or nothing), named by its `operationId`, described by its summary and
//! description, with one input schema that joins its path, query and header parameters
//! with the properties of its JSON body. The event stream is left out: an agent waits
//! for a run with the hand-written `waitForRun` instead (`crates/vm0-mcp/src/extra.rs`).

use std::collections::BTreeSet;

use anyhow::{bail, Context, Result};
use serde_json::{json, Map, Value};

use super::output::{bundled_json, Generated, HEADER};
use crate::spec::{self, deref, Operation};

/// Where the table goes.
pub(super) const PATH: &str = "crates/vm0-mcp/src/tools.json";

/// Headers that the client sets itself, which no caller chooses.
const CLIENT_HEADERS: [&str; 1] = ["api-version"];

pub(super) fn generate(doc: &Value) -> Result<Generated> {
    let mut tools = Vec::new();
    for op in spec::operations(doc) {
        if let Some(tool) = tool(doc, &op).with_context(|| format!("operation {}", op.id()))? {
            tools.push(tool);
        }
    }
    let out = json!({ "$comment": HEADER.trim_start_matches("//! "), "tools": tools });
    Ok(Generated { path: PATH, contents: bundled_json(&out)? })
}

/// The tool of `op`; `None` for an operation that answers anything but JSON or nothing.
fn tool(doc: &Value, op: &Operation<'_>) -> Result<Option<Value>> {
    if !answers_json(doc, op) {
        return Ok(None);
    }
    let (mut properties, mut required, mut arguments) = (Map::new(), Vec::new(), Vec::new());
    for parameter in op.parameters() {
        let parameter = deref(doc, parameter).context("a parameter's $ref resolves")?;
        let (name, location) = (text(parameter, "name")?, text(parameter, "in")?);
        if location == "header" && CLIENT_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            continue;
        }
        let mut schema = spec::translate(parameter.get("schema").unwrap_or(&json!({})));
        if let Some(description) = parameter.get("description") {
            schema["description"] = description.clone();
        }
        if parameter.get("required") == Some(&Value::Bool(true)) {
            required.push(json!(name));
        }
        properties.insert(name.to_string(), schema);
        arguments.push(json!({ "name": name, "in": location }));
    }
    if let Some(body) = json_body(doc, op)? {
        let body = deref(doc, body).context("the body's $ref resolves")?;
        if body.get("type").and_then(Value::as_str) != Some("object") {
            bail!("its JSON body is not an object, whose properties could be arguments");
        }
        for (name, schema) in
            body.get("properties").and_then(Value::as_object).into_iter().flatten()
        {
            if properties.contains_key(name) {
                bail!("its body's property {name} has the name of one of its parameters");
            }
            properties.insert(name.clone(), spec::translate(schema));
            arguments.push(json!({ "name": name, "in": "body" }));
        }
        required
            .extend(body.get("required").and_then(Value::as_array).into_iter().flatten().cloned());
    }
    let mut schema = json!({
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    });
    let defs = reachable_definitions(doc, &schema);
    if !defs.is_empty() {
        schema["$defs"] = Value::Object(defs);
    }
    rewrite_refs(&mut schema);
    Ok(Some(json!({
        "name": op.id(),
        "description": description(op.op),
        "method": op.method.to_ascii_uppercase(),
        "path": op.path,
        "readOnly": op.method == "get",
        "arguments": arguments,
        "inputSchema": schema,
    })))
}

/// Whether every success of `op` is JSON or has no body.
fn answers_json(doc: &Value, op: &Operation<'_>) -> bool {
    let responses = op.op.get("responses").and_then(Value::as_object);
    responses.into_iter().flatten().filter(|(status, _)| status.starts_with('2')).all(
        |(_, response)| {
            let content = deref(doc, response).and_then(|r| r.get("content"));
            content
                .and_then(Value::as_object)
                .is_none_or(|c| c.keys().all(|m| m == "application/json"))
        },
    )
}

/// The schema of `op`'s JSON request body, if it has one.
fn json_body<'a>(doc: &'a Value, op: &Operation<'a>) -> Result<Option<&'a Value>> {
    let Some(body) = op.op.get("requestBody") else { return Ok(None) };
    let body = deref(doc, body).context("the request body's $ref resolves")?;
    match body.pointer("/content/application~1json/schema") {
        Some(schema) => Ok(Some(schema)),
        None => bail!("its request body is not JSON"),
    }
}

/// The summary, then the description, as the tool's one description.
fn description(op: &Value) -> String {
    let parts = ["summary", "description"].map(|key| op.get(key).and_then(Value::as_str));
    parts.into_iter().flatten().map(str::trim).collect::<Vec<_>>().join("\n\n")
}

fn text<'a>(value: &'a Value, key: &str) -> Result<&'a str> {
    value.get(key).and_then(Value::as_str).with_context(|| format!("no {key}"))
}

/// The component schemas `schema` refers to, directly or through one another, translated:
/// each tool's schema carries only those it needs.
fn reachable_definitions(doc: &Value, schema: &Value) -> Map<String, Value> {
    let all = spec::definitions(doc);
    let (mut seen, mut todo) = (BTreeSet::new(), Vec::new());
    collect_refs(schema, &mut todo);
    while let Some(name) = todo.pop() {
        if seen.insert(name.clone()) {
            if let Some(definition) = all.get(&name) {
                collect_refs(definition, &mut todo);
            }
        }
    }
    seen.into_iter().filter_map(|name| Some((name.clone(), all.get(&name)?.clone()))).collect()
}

/// The names of the definitions `value` refers to.
fn collect_refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(name) = map
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix("#/definitions/"))
            {
                out.push(name.to_string());
            }
            map.values().for_each(|v| collect_refs(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

/// Points the `$ref`s at `$defs`, where JSON Schema 2020-12 (MCP's dialect) keeps them.
fn rewrite_refs(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(reference)) = map.get_mut("$ref") {
                *reference = reference.replace("#/definitions/", "#/$defs/");
            }
            map.values_mut().for_each(rewrite_refs);
        }
        Value::Array(items) => items.iter_mut().for_each(rewrite_refs),
        _ => {}
    }
}
