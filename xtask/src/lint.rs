//! The spec's own checks: structure (the OpenAPI 3.0 meta-schema, `$ref`s, schemas and
//! examples) and the project's rules. Each finding names its rule and the JSON pointer of
//! the place at fault, so a failure says exactly what to fix.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::OnceLock;

use serde_json::Value;

use crate::spec::{self, deref, pointer, Operation};
use crate::version::Version;

/// The OpenAPI 3.0 meta-schema (OAI, 2021-09-28, Apache-2.0), as openapi-spec-validator ships it.
const OAS_30_SCHEMA: &str = include_str!("../schemas/oas-3.0.json");

const ERROR_SCHEMA: &str = "#/components/schemas/Error";
const PAGINATION_SCHEMA: &str = "#/components/schemas/Pagination";
const REQUIRED_HEADERS: [&str; 2] = ["X-Request-Id", "X-API-Version"];

/// One broken rule at one place of the spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The rule's name, such as `camel-case`.
    pub rule: &'static str,
    /// The JSON pointer of the place at fault, such as `#/components/schemas/Agent`.
    pub at: String,
    /// What is wrong, in a sentence.
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} [{}]: {}", self.at, self.rule, self.message)
    }
}

/// Every finding of every check, structural ones first.
pub fn check(doc: &Value) -> Vec<Finding> {
    let mut lint = Lint { doc, findings: Vec::new() };
    lint.structure();
    lint.references();
    lint.schemas();
    lint.examples();
    lint.property_names();
    lint.operations();
    lint.responses();
    lint.findings
}

struct Lint<'a> {
    doc: &'a Value,
    findings: Vec<Finding>,
}

impl<'a> Lint<'a> {
    fn report(&mut self, rule: &'static str, at: impl Into<String>, message: impl Into<String>) {
        self.findings.push(Finding { rule, at: at.into(), message: message.into() });
    }

    /// The document against the OpenAPI 3.0 meta-schema, then as openapiv3 reads it.
    fn structure(&mut self) {
        if self.doc.get("openapi").and_then(Value::as_str) != Some("3.0.3") {
            self.report(
                "openapi-version",
                "#/openapi",
                "the spec must be OpenAPI 3.0.3 (progenitor reads 3.0.x only)",
            );
        }
        static META: OnceLock<jsonschema::Validator> = OnceLock::new();
        let meta = META.get_or_init(|| {
            let schema: Value =
                serde_json::from_str(OAS_30_SCHEMA).expect("the vendored meta-schema is JSON");
            jsonschema::draft4::new(&schema).expect("the vendored meta-schema compiles")
        });
        let errors: Vec<_> = meta
            .iter_errors(self.doc)
            .map(|e| (e.instance_path().to_string(), e.to_string()))
            .collect();
        for (at, message) in errors {
            self.report("oas-3.0-schema", format!("#{at}"), message);
        }
        if let Err(error) = serde_json::from_value::<openapiv3::OpenAPI>(self.doc.clone()) {
            self.report(
                "oas-3.0-schema",
                "#",
                format!("does not read as an OpenAPI 3.0 document: {error}"),
            );
        }
    }

    /// Every `$ref` outside example values resolves.
    fn references(&mut self) {
        let mut refs = Vec::new();
        walk(self.doc, &mut Vec::new(), &mut |at, value| {
            if let Some(reference) = value.get("$ref").and_then(Value::as_str) {
                refs.push((
                    pointer(&at.iter().map(String::as_str).collect::<Vec<_>>()),
                    reference.to_string(),
                ));
            }
        });
        for (at, reference) in refs {
            if !reference.starts_with("#/") || spec::resolve_ref(self.doc, &reference).is_none() {
                self.report(
                    "ref-resolves",
                    at,
                    format!("$ref '{reference}' does not resolve inside the spec"),
                );
            }
        }
    }

    /// Every component schema compiles as JSON Schema, and every `pattern` compiles with the
    /// `regex` crate, which the generated router uses (it has no look-around).
    fn schemas(&mut self) {
        let Some(schemas) = self.doc.pointer("/components/schemas").and_then(Value::as_object)
        else {
            self.report("schema-valid", "#/components", "the spec has no component schemas");
            return;
        };
        for (name, schema) in schemas {
            if let Err(error) = spec::validator(&spec::json_schema(self.doc, schema)) {
                self.report(
                    "schema-valid",
                    pointer(&["components", "schemas", name]),
                    error.to_string(),
                );
            }
        }
        let mut patterns = Vec::new();
        walk(self.doc, &mut Vec::new(), &mut |at, value| {
            if let Some(pattern) = value.get("pattern").and_then(Value::as_str) {
                patterns.push((
                    pointer(&at.iter().map(String::as_str).collect::<Vec<_>>()),
                    pattern.to_string(),
                ));
            }
        });
        for (at, pattern) in patterns {
            if let Err(error) = regex::Regex::new(&pattern) {
                self.report(
                    "schema-valid",
                    at,
                    format!("pattern does not compile with the regex crate: {error}"),
                );
            }
        }
        self.nullable_types();
        self.discriminated_unions();
        self.since();
    }

    /// Each `x-since` entry names a property of its schema and a version of the spec's
    /// major version no later than `info.version`: the router leaves the property out of
    /// responses to clients of earlier versions. On a header parameter, `x-since` is that
    /// version alone: the router does not read the header from clients of earlier ones.
    fn since(&mut self) {
        let current = self
            .doc
            .pointer("/info/version")
            .and_then(Value::as_str)
            .and_then(|v| v.parse::<Version>().ok());
        let known = |version: &Value| match (version.as_str().map(str::parse::<Version>), current) {
            (Some(Ok(v)), Some(current)) => v.major == current.major && v <= current,
            _ => false,
        };
        let mut findings = Vec::new();
        walk(self.doc, &mut Vec::new(), &mut |at, value| {
            let Some(since) = value.get(spec::SINCE) else { return };
            let here =
                pointer(&at.iter().map(String::as_str).chain([spec::SINCE]).collect::<Vec<_>>());
            if value.get("in").is_some() {
                if value["in"] != "header" || !known(since) {
                    findings.push((
                        here,
                        "on a parameter, x-since is allowed on a header only, and names a \
                         version MAJOR.MINOR.PATCH of this major version, no later than \
                         info.version"
                            .to_string(),
                    ));
                }
                return;
            }
            let Some(entries) = since.as_object() else {
                findings.push((here, format!("{} maps property names to versions", spec::SINCE)));
                return;
            };
            let enumeration = value.get("enum").and_then(Value::as_array);
            for (name, version) in entries {
                match enumeration {
                    Some(values) => findings.extend(
                        enum_since(
                            at,
                            values,
                            value.get(spec::FALLBACK),
                            |v| entries.contains_key(v),
                            name,
                        )
                        .map(|message| (here.clone(), message)),
                    ),
                    None if value
                        .pointer(&format!("/properties/{}", spec::escape_pointer(name)))
                        .is_none() =>
                    {
                        findings.push((
                            here.clone(),
                            format!("'{name}' is not a property of this schema"),
                        ));
                    }
                    None => {}
                }
                if !known(version) {
                    findings.push((
                        here.clone(),
                        format!(
                            "'{name}' must name a version MAJOR.MINOR.PATCH of this major \
                             version, no later than info.version"
                        ),
                    ));
                }
            }
        });
        for (at, message) in findings {
            self.report("since", at, message);
        }
    }

    /// Under OpenAPI 3.0.3, `nullable` adds null to what `type` allows, and the keywords
    /// beside it still apply: beside an `allOf`, strict validators and clients read it as
    /// not nullable (and without `type`, it adds nothing). A nullable reference is `anyOf`
    /// the reference and `{type: object, nullable: true, enum: [null]}`.
    fn nullable_types(&mut self) {
        let mut places = Vec::new();
        walk(self.doc, &mut Vec::new(), &mut |at, value| {
            let composed =
                ["allOf", "anyOf", "oneOf", "$ref"].iter().any(|key| value.get(*key).is_some());
            if value.get("nullable") == Some(&Value::Bool(true))
                && (value.get("type").is_none() || composed)
            {
                places.push(pointer(&at.iter().map(String::as_str).collect::<Vec<_>>()));
            }
        });
        for at in places {
            self.report(
                "nullable-type",
                at,
                "nullable adds null to type only, not to allOf, anyOf, oneOf or $ref beside it; \
                 a nullable reference is anyOf it and {type: object, nullable: true, enum: [null]}",
            );
        }
    }

    /// Each branch of a discriminated `oneOf` is a component that only the union refers
    /// to, and requires its discriminator with the one value the mapping gives it, so that
    /// every generator tells the branches apart the same way (and the Rust types can hold
    /// the branches inline: see `codegen/client.rs`).
    fn discriminated_unions(&mut self) {
        let Some(schemas) = self.doc.pointer("/components/schemas").and_then(Value::as_object)
        else {
            return;
        };
        let text = self.doc.to_string();
        let mut findings = Vec::new();
        for (name, schema) in schemas {
            let Some(property) =
                schema.pointer("/discriminator/propertyName").and_then(Value::as_str)
            else {
                continue;
            };
            let at = pointer(&["components", "schemas", name]);
            let mapping = schema.pointer("/discriminator/mapping").and_then(Value::as_object);
            for (i, branch) in
                schema.get("oneOf").and_then(Value::as_array).into_iter().flatten().enumerate()
            {
                let here = format!("{at}/oneOf/{i}");
                let Some(reference) = branch.get("$ref").and_then(Value::as_str) else {
                    findings.push((
                        here,
                        "a discriminated branch must be a $ref to a component".to_string(),
                    ));
                    continue;
                };
                if text.matches(&format!("\"$ref\":\"{reference}\"")).count() != 1 {
                    findings.push((
                        here.clone(),
                        format!(
                            "{reference} is a branch of {name}, and must be referred to \
                             nowhere else"
                        ),
                    ));
                }
                let value = mapping
                    .and_then(|m| m.iter().find(|(_, target)| target.as_str() == Some(reference)))
                    .map(|(value, _)| value.as_str());
                let target = spec::resolve_ref(self.doc, reference);
                let required = target
                    .and_then(|t| t.get("required"))
                    .and_then(Value::as_array)
                    .is_some_and(|r| r.iter().any(|p| p == property));
                let tag = target
                    .and_then(|t| t.pointer(&format!("/properties/{property}/enum")))
                    .and_then(Value::as_array);
                match (value, tag.map(Vec::as_slice)) {
                    (Some(value), Some([only])) if required && only == value => {}
                    _ => findings.push((
                        here,
                        format!(
                            "{reference} must require {property} with the one value the \
                             mapping gives it"
                        ),
                    )),
                }
            }
        }
        for (at, message) in findings {
            self.report("discriminated-branch", at, message);
        }
    }

    /// Every example validates against the schema beside it.
    fn examples(&mut self) {
        let mut pairs = Vec::new();
        walk(self.doc, &mut Vec::new(), &mut |at, value| {
            let Some(schema) = value.get("schema") else { return };
            let at: Vec<&str> = at.iter().map(String::as_str).collect();
            if let Some(example) = value.get("example") {
                pairs.push((
                    pointer(&[&at[..], &["example"]].concat()),
                    schema.clone(),
                    example.clone(),
                ));
            }
            for (name, example) in
                value.get("examples").and_then(Value::as_object).into_iter().flatten()
            {
                let example = deref(self.doc, example)
                    .and_then(|e| e.get("value"))
                    .cloned()
                    .unwrap_or(Value::Null);
                pairs.push((
                    pointer(&[&at[..], &["examples", name, "value"]].concat()),
                    schema.clone(),
                    example,
                ));
            }
        });
        for (name, schema) in
            self.doc.pointer("/components/schemas").and_then(Value::as_object).into_iter().flatten()
        {
            if let Some(example) = schema.get("example") {
                pairs.push((
                    pointer(&["components", "schemas", name, "example"]),
                    schema.clone(),
                    example.clone(),
                ));
            }
        }
        for (at, schema, example) in pairs {
            match spec::validate(self.doc, &schema, &example) {
                Ok(errors) => {
                    for error in errors {
                        self.report(
                            "example-valid",
                            at.clone(),
                            format!("example does not match its schema {error}"),
                        );
                    }
                }
                Err(error) => self.report("example-valid", at, error.to_string()),
            }
        }
    }

    /// Property names, and query and path parameter names, are camelCase.
    fn property_names(&mut self) {
        let mut names = Vec::new();
        walk(self.doc, &mut Vec::new(), &mut |at, value| {
            let at: Vec<&str> = at.iter().map(String::as_str).collect();
            for name in value
                .get("properties")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .map(|(k, _)| k)
            {
                names.push((
                    pointer(&[&at[..], &["properties", name]].concat()),
                    name.clone(),
                    "property",
                ));
            }
            let location = value.get("in").and_then(Value::as_str);
            if let (Some("query" | "path"), Some(name)) =
                (location, value.get("name").and_then(Value::as_str))
            {
                names.push((
                    pointer(&[&at[..], &["name"]].concat()),
                    name.to_string(),
                    "parameter",
                ));
            }
        });
        for (at, name, what) in names {
            if !is_camel_case(&name) {
                self.report("camel-case", at, format!("{what} '{name}' is not camelCase"));
            }
        }
    }

    fn operations(&mut self) {
        let declared_tags: BTreeSet<&str> = self
            .doc
            .get("tags")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|tag| {
                tag.get("description").and_then(Value::as_str).is_some_and(|d| !d.is_empty())
            })
            .filter_map(|tag| tag.get("name").and_then(Value::as_str))
            .collect();
        let schemes = self.doc.pointer("/components/securitySchemes").and_then(Value::as_object);
        let global_security = self.doc.get("security");
        let mut ids = BTreeSet::new();
        for op in spec::operations(self.doc) {
            let at = op.pointer();
            let id = op.id().to_string();
            if id.is_empty() {
                self.report("operation-id", &at, "operation has no operationId");
            } else if !is_camel_case(&id) {
                self.report(
                    "operation-id",
                    pointer(&["paths", op.path, op.method, "operationId"]),
                    format!("operationId '{id}' is not camelCase"),
                );
            } else if !ids.insert(id.clone()) {
                self.report(
                    "operation-id",
                    pointer(&["paths", op.path, op.method, "operationId"]),
                    format!("operationId '{id}' is used twice"),
                );
            }
            for field in ["summary", "description"] {
                if op.op.get(field).and_then(Value::as_str).is_none_or(|s| s.trim().is_empty()) {
                    self.report("operation-docs", &at, format!("operation has no {field}"));
                }
            }
            let tags: Vec<&str> = op
                .op
                .get("tags")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            match tags.as_slice() {
                [tag] if declared_tags.contains(tag) => {}
                [tag] => self.report(
                    "operation-tag",
                    &at,
                    format!("tag '{tag}' is not declared with a description in the top-level tags"),
                ),
                _ => self.report(
                    "operation-tag",
                    &at,
                    format!("operation must have exactly one tag, has {}", tags.len()),
                ),
            }
            let security = op.op.get("security").or(global_security);
            let requirements = security.and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
            let defined = |req: &Value| {
                req.as_object().is_some_and(|r| {
                    !r.is_empty() && r.keys().all(|k| schemes.is_some_and(|s| s.contains_key(k)))
                })
            };
            if requirements.is_empty() || !requirements.iter().all(defined) {
                self.report(
                    "operation-security",
                    &at,
                    "operation is not secured by a declared security scheme",
                );
            }
            self.parameters(&op);
            self.operation_examples(&op);
            if id.starts_with("list") {
                self.list_envelope(&op);
            }
        }
    }

    fn parameters(&mut self, op: &Operation<'_>) {
        let params: Vec<Value> = op.parameters().cloned().collect();
        for (index, param) in params.iter().enumerate() {
            let resolved = deref(self.doc, param).unwrap_or(param);
            let name = resolved.get("name").and_then(Value::as_str).unwrap_or("?");
            if resolved
                .get("description")
                .and_then(Value::as_str)
                .is_none_or(|d| d.trim().is_empty())
            {
                let at = match param.get("$ref").and_then(Value::as_str) {
                    Some(reference) => reference.to_string(),
                    None => format!("{} (parameter {index})", op.pointer()),
                };
                self.report("parameter-docs", at, format!("parameter '{name}' has no description"));
            }
        }
    }

    /// A JSON request body and every 2xx response with content carry an example.
    fn operation_examples(&mut self, op: &Operation<'_>) {
        if let Some(body) = op.op.get("requestBody").and_then(|b| deref(self.doc, b)) {
            for (media, content) in
                body.get("content").and_then(Value::as_object).into_iter().flatten()
            {
                if !has_example(content) {
                    self.report(
                        "operation-examples",
                        pointer(&["paths", op.path, op.method, "requestBody", "content", media]),
                        "request body has no example",
                    );
                }
            }
        }
        for (status, response) in
            op.op.get("responses").and_then(Value::as_object).into_iter().flatten()
        {
            if !status.starts_with('2') {
                continue;
            }
            let response = deref(self.doc, response).unwrap_or(response);
            for (media, content) in
                response.get("content").and_then(Value::as_object).into_iter().flatten()
            {
                if !has_example(content) {
                    self.report(
                        "operation-examples",
                        pointer(&[
                            "paths",
                            op.path,
                            op.method,
                            "responses",
                            status,
                            "content",
                            media,
                        ]),
                        "response has no example",
                    );
                }
            }
        }
    }

    /// A list operation takes `limit` and `cursor` and answers `{data: [...], pagination}`.
    fn list_envelope(&mut self, op: &Operation<'_>) {
        let refs: BTreeSet<&str> =
            op.parameters().filter_map(|p| p.get("$ref").and_then(Value::as_str)).collect();
        for name in ["limit", "cursor"] {
            if !refs.contains(format!("#/components/parameters/{name}").as_str()) {
                self.report(
                    "list-envelope",
                    op.pointer(),
                    format!(
                        "list operation does not take the '{name}' parameter \
                         (#/components/parameters/{name})"
                    ),
                );
            }
        }
        let at = pointer(&["paths", op.path, op.method, "responses", "200"]);
        let schema = op
            .op
            .pointer("/responses/200")
            .and_then(|r| deref(self.doc, r))
            .and_then(|r| r.pointer("/content/application~1json/schema"))
            .and_then(|s| deref(self.doc, s));
        let Some(schema) = schema else {
            self.report("list-envelope", at, "list operation has no 200 application/json response");
            return;
        };
        let required: BTreeSet<&str> = schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let data_is_array =
            schema.pointer("/properties/data/type").and_then(Value::as_str) == Some("array");
        let pagination = schema.pointer("/properties/pagination/$ref").and_then(Value::as_str);
        if !data_is_array
            || pagination != Some(PAGINATION_SCHEMA)
            || !required.contains("data")
            || !required.contains("pagination")
        {
            self.report(
                "list-envelope",
                at,
                "list operation must answer the required envelope \
                 {data: array, pagination: Pagination}",
            );
        }
    }

    /// Statuses are explicit, success is one shape, every response declares both headers,
    /// and every error status answers the `Error` envelope.
    fn responses(&mut self) {
        for op in spec::operations(self.doc) {
            let Some(responses) = op.op.get("responses").and_then(Value::as_object) else {
                self.report("explicit-statuses", op.pointer(), "operation has no responses");
                continue;
            };
            // Every operation can refuse a token (401), an `api-version` (400) and fail (500).
            for required in ["400", "401", "500"] {
                if !responses.contains_key(required) {
                    self.report(
                        "explicit-statuses",
                        pointer(&["paths", op.path, op.method, "responses"]),
                        format!("operation does not list status {required}"),
                    );
                }
            }
            let successes: Vec<&String> = responses.keys().filter(|s| s.starts_with('2')).collect();
            if successes.len() != 1 {
                self.report(
                    "explicit-statuses",
                    pointer(&["paths", op.path, op.method, "responses"]),
                    format!("operation must have exactly one 2xx status, has {}", successes.len()),
                );
            }
            for (status, response) in responses {
                let at = pointer(&["paths", op.path, op.method, "responses", status]);
                if status == "default" || !status.chars().all(|c| c.is_ascii_digit()) {
                    self.report(
                        "explicit-statuses",
                        &at,
                        format!(
                            "status '{status}' is not an explicit status code (progenitor \
                             cannot generate `default`)"
                        ),
                    );
                }
                let resolved = deref(self.doc, response).unwrap_or(response);
                let at =
                    response.get("$ref").and_then(Value::as_str).map(str::to_string).unwrap_or(at);
                for header in REQUIRED_HEADERS {
                    let declared = resolved
                        .pointer(&format!("/headers/{header}/$ref"))
                        .and_then(Value::as_str);
                    if declared != Some(format!("#/components/headers/{header}").as_str()) {
                        self.report(
                            "response-headers",
                            &at,
                            format!(
                                "response does not declare the {header} header \
                                 (#/components/headers/{header})"
                            ),
                        );
                    }
                }
                if status.starts_with('4') || status.starts_with('5') {
                    let content = resolved.get("content").and_then(Value::as_object);
                    let uses_error = content.is_some_and(|c| {
                        c.len() == 1
                            && c.get("application/json")
                                .and_then(|m| m.pointer("/schema/$ref"))
                                .and_then(Value::as_str)
                                == Some(ERROR_SCHEMA)
                    });
                    if !uses_error {
                        self.report(
                            "error-schema",
                            &at,
                            format!(
                                "error status {status} must answer application/json with the \
                                 Error schema ({ERROR_SCHEMA})"
                            ),
                        );
                    }
                }
            }
        }
    }
}

fn has_example(media: &Value) -> bool {
    media.get("example").is_some()
        || media.get("examples").and_then(Value::as_object).is_some_and(|e| !e.is_empty())
}

/// `limit`, `currentVersionId`: a lowercase letter, then letters and digits.
pub fn is_camel_case(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase()) && chars.all(|c| c.is_ascii_alphanumeric())
}

/// Calls `visit` with every object of the document and its location, skipping example
/// values, which are data rather than spec.
fn walk(value: &Value, at: &mut Vec<String>, visit: &mut dyn FnMut(&[String], &Value)) {
    match value {
        Value::Object(map) => {
            visit(at, value);
            for (key, child) in map {
                if (key == "example" || key == "examples")
                    && at.last().map(String::as_str) != Some("properties")
                {
                    continue;
                }
                at.push(key.clone());
                walk(child, at, visit);
                at.pop();
            }
        }
        Value::Array(items) => {
            for (index, child) in items.iter().enumerate() {
                at.push(index.to_string());
                walk(child, at, visit);
                at.pop();
            }
        }
        _ => {}
    }
}

/// What is wrong with the `x-since` entry `name` of the enumeration at `at` whose values
/// are `values` and whose `x-fallback` is `fallback`: the router rewrites only the error
/// envelope's enumerations, and only into a value that older clients know.
fn enum_since(
    at: &[String],
    values: &[Value],
    fallback: Option<&Value>,
    added: impl Fn(&str) -> bool,
    name: &str,
) -> Option<String> {
    let schema = at.last().map(String::as_str).unwrap_or_default();
    if !spec::ENVELOPE_ENUMS.contains(&schema) {
        return Some(format!(
            "x-since on an enumeration is read only for {}",
            spec::ENVELOPE_ENUMS.join(" and ")
        ));
    }
    if !values.iter().any(|v| v.as_str() == Some(name)) {
        return Some(format!("'{name}' is not a value of this enumeration"));
    }
    let older = fallback.and_then(|f| f.get(name)).and_then(Value::as_str);
    match older {
        Some(older) if values.iter().any(|v| v.as_str() == Some(older)) && !added(older) => None,
        _ => Some(format!(
            "'{name}' needs an x-fallback: a value of this enumeration that clients of \
             earlier versions know"
        )),
    }
}
