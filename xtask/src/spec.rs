//! Loading `openapi/v1.yaml` and reading it as plain JSON: JSON pointers, `$ref`
//! resolution, and the translation of OpenAPI 3.0 schemas into JSON Schema.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::{json, Map, Value};

/// The spec's path, relative to the workspace root.
pub const SPEC_PATH: &str = "openapi/v1.yaml";

/// The extension that lists the properties of a request body of which exactly one must
/// be given (createRun's `agent`, `agentId`, `sessionId`, `checkpointId`). A `oneOf` of
/// `required` lists says the same in JSON Schema, but most generators then leave the body
/// untyped; the router enforces the extension instead.
pub const EXACTLY_ONE_OF: &str = "x-exactly-one-of";

/// The extension of an object schema that gives, for each property added after the first
/// version of the spec, the version it was added in (`x-since: {stream: 1.1.0}`). The
/// router leaves such a property out of a response to a client that sends an older
/// `api-version`, so a client that refuses unknown properties keeps working; the lint
/// checks each entry, and the breaking-change detector lets such an addition pass.
pub const SINCE: &str = "x-since";

/// The extension of the error envelope's enumerations (`ErrorType`, `ErrorCode`) that
/// gives, for each value added after the first version (named in the schema's `x-since`),
/// the older value the router sends instead to a client of an earlier `api-version`
/// (`x-fallback: {idempotency_key_in_use: invalid_state}`), so that a client whose
/// enumeration is closed keeps reading the errors it is sent.
pub const FALLBACK: &str = "x-fallback";

/// The enumerations whose values may carry `x-since` and `x-fallback`: the router rewrites
/// the values of these, in error envelopes, and no others.
pub const ENVELOPE_ENUMS: [&str; 2] = ["ErrorType", "ErrorCode"];

/// The HTTP methods an OpenAPI path item can hold, in the order the spec writes them.
pub const METHODS: [&str; 8] =
    ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

/// The workspace root, found from this crate's manifest so that the xtask works from any
/// directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// Reads and parses the spec at the workspace root.
pub fn load() -> Result<Value> {
    let path = workspace_root().join(SPEC_PATH);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    parse(&text).with_context(|| format!("parsing {SPEC_PATH}"))
}

/// Parses YAML into JSON values, keeping the order of keys as written.
pub fn parse(yaml: &str) -> Result<Value> {
    Ok(serde_saphyr::from_str(yaml)?)
}

/// Follows a local reference (`#/components/schemas/Agent`) inside `doc`.
pub fn resolve_ref<'a>(doc: &'a Value, reference: &str) -> Option<&'a Value> {
    doc.pointer(reference.strip_prefix('#')?)
}

/// Follows `$ref`s until reaching an object that is not a reference; `None` when one of
/// them does not resolve or they form a loop.
pub fn deref<'a>(doc: &'a Value, mut value: &'a Value) -> Option<&'a Value> {
    for _ in 0..32 {
        match value.get("$ref").and_then(Value::as_str) {
            Some(reference) => value = resolve_ref(doc, reference)?,
            None => return Some(value),
        }
    }
    None
}

/// Escapes one segment of a JSON pointer (RFC 6901).
pub fn escape_pointer(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

/// A JSON pointer from its segments, written as a fragment (`#/paths/~1v1~1agents/get`).
pub fn pointer(segments: &[&str]) -> String {
    let mut out = String::from("#");
    for segment in segments {
        out.push('/');
        out.push_str(&escape_pointer(segment));
    }
    out
}

/// One operation of the spec, in the order the spec writes them.
#[derive(Debug, Clone)]
pub struct Operation<'a> {
    /// The path template, such as `/v1/agents/{id}`.
    pub path: &'a str,
    /// The lowercase HTTP method.
    pub method: &'a str,
    /// The operation object.
    pub op: &'a Value,
    /// The path item's parameters, which every operation of the path inherits.
    pub path_parameters: &'a [Value],
}

impl Operation<'_> {
    /// The operation's `operationId`, or an empty string when it has none.
    pub fn id(&self) -> &str {
        self.op.get("operationId").and_then(Value::as_str).unwrap_or("")
    }

    /// The JSON pointer of the operation object.
    pub fn pointer(&self) -> String {
        pointer(&["paths", self.path, self.method])
    }

    /// Path-level then operation-level parameters, unresolved.
    pub fn parameters(&self) -> impl Iterator<Item = &Value> {
        let own =
            self.op.get("parameters").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
        self.path_parameters.iter().chain(own)
    }
}

/// Every operation of the spec.
pub fn operations(doc: &Value) -> Vec<Operation<'_>> {
    let mut out = Vec::new();
    let Some(paths) = doc.get("paths").and_then(Value::as_object) else { return out };
    for (path, item) in paths {
        let path_parameters =
            item.get("parameters").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
        for method in METHODS {
            if let Some(op) = item.get(method) {
                out.push(Operation { path, method, op, path_parameters });
            }
        }
    }
    out
}

/// The OpenAPI 3.0 schema at `schema` as a JSON Schema (draft 4, the dialect OpenAPI 3.0
/// extends) that carries every component schema under `definitions`, so that `$ref`s keep
/// resolving. `nullable: true` becomes "or null"; annotations the validator does not know
/// are left for it to ignore.
pub fn json_schema(doc: &Value, schema: &Value) -> Value {
    let mut out = match translate(schema) {
        Value::Object(map) => map,
        other => return other,
    };
    out.insert("definitions".into(), Value::Object(definitions(doc)));
    Value::Object(out)
}

/// Every component schema, translated, by name: what `#/definitions/<name>` refers to.
pub fn definitions(doc: &Value) -> Map<String, Value> {
    let schemas = doc.pointer("/components/schemas").and_then(Value::as_object);
    schemas.into_iter().flatten().map(|(name, schema)| (name.clone(), translate(schema))).collect()
}

/// The values of the error envelope's enumerations added after the first version, each
/// with the version it was added in and the value older clients get instead:
/// `{"ErrorCode": {"idempotency_key_in_use": {"since": "1.2.0", "fallback": "invalid_state"}}}`.
pub fn fallbacks(doc: &Value) -> Value {
    let mut out = Map::new();
    for name in ENVELOPE_ENUMS {
        let Some(schema) = doc.pointer(&format!("/components/schemas/{name}")) else { continue };
        let since = schema.get(SINCE).and_then(Value::as_object).cloned().unwrap_or_default();
        let values: Map<String, Value> = since
            .iter()
            .map(|(value, version)| {
                let fallback = schema.get(FALLBACK).and_then(|f| f.get(value)).cloned();
                (value.clone(), serde_json::json!({ "since": version, "fallback": fallback }))
            })
            .collect();
        if !values.is_empty() {
            out.insert(name.to_string(), Value::Object(values));
        }
    }
    Value::Object(out)
}

/// One OpenAPI 3.0 schema as JSON Schema draft 4, its component `$ref`s pointing into
/// `#/definitions/`.
pub fn translate(schema: &Value) -> Value {
    match schema {
        Value::Object(map) => {
            let mut out = Map::new();
            let mut nullable = false;
            for (key, value) in map {
                match key.as_str() {
                    "nullable" => nullable = value == &Value::Bool(true),
                    "$ref" => {
                        let reference = value.as_str().unwrap_or_default();
                        let target = reference.replace("#/components/schemas/", "#/definitions/");
                        out.insert(key.clone(), Value::String(target));
                    }
                    // Property maps hold names, not schemas: translate their values only.
                    "properties" => {
                        let props = value.as_object().map(|props| {
                            props
                                .iter()
                                .map(|(name, s)| (name.clone(), translate(s)))
                                .collect::<Map<_, _>>()
                        });
                        out.insert(
                            key.clone(),
                            props.map(Value::Object).unwrap_or_else(|| value.clone()),
                        );
                    }
                    "example" | "examples" | "discriminator" | "xml" | "externalDocs" => {}
                    _ if key.starts_with("x-") => {}
                    _ => {
                        out.insert(key.clone(), translate(value));
                    }
                }
            }
            // OpenAPI 3.0.3: `nullable` adds null to the values `type` allows, and to
            // nothing else: an `enum` or an `allOf` beside it still applies, as strict
            // validators and clients read it.
            if let (true, Some(Value::String(kind))) = (nullable, out.get("type")) {
                let kinds = json!([kind, "null"]);
                out.insert("type".into(), kinds);
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(translate).collect()),
        other => other.clone(),
    }
}

/// Compiles a JSON Schema produced by [`json_schema`] into a validator that checks formats.
pub fn validator(schema: &Value) -> Result<jsonschema::Validator> {
    match jsonschema::draft4::options().should_validate_formats(true).build(schema) {
        Ok(validator) => Ok(validator),
        Err(error) => bail!("invalid schema: {error}"),
    }
}

/// Validates `instance` against the OpenAPI schema `schema` of `doc`; every failure as
/// "at <instance path>: <reason>".
pub fn validate(doc: &Value, schema: &Value, instance: &Value) -> Result<Vec<String>> {
    let validator = validator(&json_schema(doc, schema))?;
    Ok(validator
        .iter_errors(instance)
        .map(|error| {
            let at = error.instance_path().to_string();
            format!("at '{}': {error}", if at.is_empty() { "/" } else { &at })
        })
        .collect())
}

/// The version `schema`'s [`SINCE`] gives `property`, as written.
pub fn since<'a>(schema: &'a Value, property: &str) -> Option<&'a str> {
    schema.get(SINCE).and_then(|s| s.get(property)).and_then(Value::as_str)
}

/// A property that [`SINCE`] says was added after the first version, as it sits in a body
/// of some schema.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Added {
    /// The way from the body's root: a property name, `[]` for every item of an array, or
    /// `?tag=value` for only the objects whose discriminator `tag` is `value`.
    pub path: Vec<String>,
    /// The version the property was added in, `MAJOR.MINOR.PATCH`.
    pub since: String,
}

/// Every property that `schema`'s bodies can hold and [`SINCE`] marks, through `$ref`s,
/// properties, array items and compositions (each branch of a discriminated `oneOf` under
/// its tag). A schema that refers to itself is followed once.
pub fn added_properties(doc: &Value, schema: &Value) -> Vec<Added> {
    fn visit(
        doc: &Value,
        schema: &Value,
        path: &mut Vec<String>,
        seen: &mut Vec<String>,
        out: &mut Vec<Added>,
    ) {
        if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
            if let Some(target) =
                resolve_ref(doc, reference).filter(|_| !seen.iter().any(|s| s == reference))
            {
                seen.push(reference.to_string());
                visit(doc, target, path, seen, out);
                seen.pop();
            }
            return;
        }
        for (name, since) in schema.get(SINCE).and_then(Value::as_object).into_iter().flatten() {
            let since = since.as_str().unwrap_or_default().to_string();
            out.push(Added { path: path.iter().cloned().chain([name.clone()]).collect(), since });
        }
        for (name, property) in
            schema.get("properties").and_then(Value::as_object).into_iter().flatten()
        {
            path.push(name.clone());
            visit(doc, property, path, seen, out);
            path.pop();
        }
        if let Some(items) = schema.get("items") {
            path.push("[]".into());
            visit(doc, items, path, seen, out);
            path.pop();
        }
        let tag = schema.pointer("/discriminator/propertyName").and_then(Value::as_str);
        let mapping = schema.pointer("/discriminator/mapping").and_then(Value::as_object);
        for keyword in ["allOf", "anyOf", "oneOf"] {
            for branch in schema.get(keyword).and_then(Value::as_array).into_iter().flatten() {
                let reference = branch.get("$ref");
                let value = mapping
                    .and_then(|m| m.iter().find(|(_, target)| Some(*target) == reference))
                    .map(|(value, _)| value);
                let condition = tag.zip(value).map(|(tag, value)| format!("?{tag}={value}"));
                path.extend(condition.clone());
                visit(doc, branch, path, seen, out);
                if condition.is_some() {
                    path.pop();
                }
            }
        }
    }
    let mut out = Vec::new();
    visit(doc, schema, &mut Vec::new(), &mut Vec::new(), &mut out);
    out.sort();
    out.dedup();
    out
}
