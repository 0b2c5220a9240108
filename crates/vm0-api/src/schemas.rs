//! The request schemas of every operation, read from `generated.json` (written by
//! `cargo xtask codegen` from the spec) and compiled once, and the translation of a
//! schema violation into the spec's error envelope.

use std::collections::HashMap;
use std::sync::LazyLock;

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::{ValidationError, Validator};
use serde::Deserialize;
use serde_json::{Map, Value};
use vm0_types::{ErrorCode, ErrorType};

use crate::error::ApiError;
use crate::versions::{Added, Step, Version};

/// Where a parameter comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Location {
    Path,
    Query,
    Header,
}

/// One parameter of an operation.
pub(crate) struct Parameter {
    pub name: String,
    pub location: Location,
    pub required: bool,
    /// The JSON type a raw string value is read as: `integer`, `number`, `boolean`, `string`.
    pub scalar: String,
    pub default: Option<Value>,
    pub validator: Validator,
    /// The version that added it, for a header added after the first: the router does
    /// not read it from callers of earlier versions.
    pub since: Option<Version>,
}

/// The compiled request schemas of one operation.
pub(crate) struct OperationSchemas {
    pub parameters: Vec<Parameter>,
    pub body: Option<Validator>,
    /// Properties of the body of which exactly one must be given.
    pub exactly_one_of: Vec<String>,
    /// The most items of the longest list among the body's properties, which its size
    /// limit scales with.
    pub max_items: Option<usize>,
    /// The properties of its success responses added after the first version.
    pub added: Vec<Added>,
}

#[derive(Deserialize)]
struct RawDocument {
    definitions: Map<String, Value>,
    #[serde(default)]
    fallbacks: HashMap<String, HashMap<String, RawFallback>>,
    operations: HashMap<String, RawOperation>,
}

/// A value of an error envelope's enumeration added after the first version.
#[derive(Deserialize)]
struct RawFallback {
    since: String,
    fallback: String,
}

/// A value added to an error envelope's enumeration (`ErrorType`, `ErrorCode`) after the
/// first version: callers of an older `api-version` get `fallback` instead.
pub(crate) struct Fallback {
    pub since: Version,
    pub fallback: String,
}

/// The error envelope's values added after the first version, by the field of the
/// envelope's `error` object they are values of (`type`, `code`), then by value.
pub(crate) static FALLBACKS: LazyLock<HashMap<&'static str, HashMap<String, Fallback>>> =
    LazyLock::new(|| {
        let raw: RawDocument = serde_json::from_str(include_str!("generated.json"))
            .expect("generated.json is well-formed");
        let mut out = HashMap::new();
        for (field, schema) in [("type", "ErrorType"), ("code", "ErrorCode")] {
            let values = raw.fallbacks.get(schema).into_iter().flatten().map(|(value, f)| {
                let since = Version::parse(&f.since)
                    .unwrap_or_else(|| panic!("generated.json: {:?} is not a version", f.since));
                (value.clone(), Fallback { since, fallback: f.fallback.clone() })
            });
            out.insert(field, values.collect());
        }
        out
    });

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawOperation {
    parameters: Vec<RawParameter>,
    body: Option<Value>,
    #[serde(default)]
    exactly_one_of: Vec<String>,
    #[serde(default)]
    added: Vec<RawAdded>,
}

#[derive(Deserialize)]
struct RawAdded {
    path: Vec<String>,
    since: String,
}

#[derive(Deserialize)]
struct RawParameter {
    name: String,
    #[serde(rename = "in")]
    location: Location,
    required: bool,
    scalar: String,
    default: Option<Value>,
    schema: Value,
    #[serde(default)]
    since: Option<String>,
}

static OPERATIONS: LazyLock<HashMap<String, OperationSchemas>> = LazyLock::new(|| {
    let raw: RawDocument = serde_json::from_str(include_str!("generated.json"))
        .expect("generated.json is well-formed");
    let compile = |schema: &Value| {
        let mut schema = schema.clone();
        if let Value::Object(map) = &mut schema {
            map.insert("definitions".into(), Value::Object(raw.definitions.clone()));
        }
        jsonschema::draft4::options()
            .should_validate_formats(true)
            .build(&schema)
            .unwrap_or_else(|e| panic!("a schema of generated.json does not compile: {e}"))
    };
    raw.operations
        .iter()
        .map(|(id, op)| {
            let parameters = op
                .parameters
                .iter()
                .map(|p| Parameter {
                    name: p.name.clone(),
                    location: p.location,
                    required: p.required,
                    scalar: p.scalar.clone(),
                    default: p.default.clone(),
                    validator: compile(&p.schema),
                    since: p.since.as_deref().map(|since| {
                        Version::parse(since)
                            .unwrap_or_else(|| panic!("generated.json: {since:?} is not a version"))
                    }),
                })
                .collect();
            let max_items = op.body.as_ref().and_then(|body| longest_list(&raw.definitions, body));
            let added = op
                .added
                .iter()
                .map(|a| Added {
                    path: a.path.iter().map(|step| Step::parse(step)).collect(),
                    since: Version::parse(&a.since).unwrap_or_else(|| {
                        panic!("generated.json: {:?} is not a version", a.since)
                    }),
                })
                .collect();
            let schemas = OperationSchemas {
                parameters,
                body: op.body.as_ref().map(compile),
                exactly_one_of: op.exactly_one_of.clone(),
                max_items,
                added,
            };
            (id.clone(), schemas)
        })
        .collect()
});

/// Whether an error type or code was added after `version`.
pub(crate) fn has_later_errors(version: Version) -> bool {
    FALLBACKS.values().flat_map(|values| values.values()).any(|f| f.since > version)
}

/// Whether an error of `kind` and `code` reads otherwise for a caller of `version`: either
/// was added after it.
pub(crate) fn is_later_error(kind: &ErrorType, code: &ErrorCode, version: Version) -> bool {
    [("type", kind.to_string()), ("code", code.to_string())].iter().any(|(field, value)| {
        let values = FALLBACKS.get(*field);
        values.and_then(|v| v.get(value.as_str())).is_some_and(|f| f.since > version)
    })
}

/// Rewrites the error envelope `body` for a caller of `version`: a `type` or `code` added
/// after it becomes the older value the spec gives it (`x-fallback`), which the caller's
/// closed enumeration knows.
pub(crate) fn downgrade_error(body: &mut Value, version: Version) -> bool {
    let mut changed = false;
    for (field, values) in FALLBACKS.iter() {
        let Some(slot) = body.pointer_mut(&format!("/error/{field}")) else { continue };
        let later = slot.as_str().and_then(|v| values.get(v)).filter(|f| f.since > version);
        if let Some(fallback) = later {
            *slot = Value::String(fallback.fallback.clone());
            changed = true;
        }
    }
    changed
}

/// The largest `maxItems` of the properties of the object `schema` (a `$ref` into
/// `definitions`, or inline).
fn longest_list(definitions: &Map<String, Value>, schema: &Value) -> Option<usize> {
    let schema = match schema["$ref"].as_str().and_then(|r| r.strip_prefix("#/definitions/")) {
        Some(name) => definitions.get(name)?,
        None => schema,
    };
    schema["properties"]
        .as_object()?
        .values()
        .filter_map(|p| p["maxItems"].as_u64())
        .max()
        .map(|n| n as usize)
}

/// Compiles every schema now, so that a broken one fails at start-up rather than on a
/// request.
pub(crate) fn compile_all() {
    LazyLock::force(&OPERATIONS);
}

/// The schemas of the operation `id`; the generated handlers only ask for their own.
pub(crate) fn operation(id: &str) -> &'static OperationSchemas {
    OPERATIONS.get(id).unwrap_or_else(|| panic!("generated.json has no operation {id}"))
}

/// The first violation of `value` against `validator` as an API error whose `param` names
/// the place: `name`, `files[2].hash`. `base` names the parameter itself for query, path
/// and header values. Messages never quote the value, which may be a secret.
pub(crate) fn check(
    validator: &Validator,
    value: &Value,
    base: Option<&str>,
) -> Result<(), ApiError> {
    match validator.iter_errors(value).next() {
        None => Ok(()),
        Some(error) => Err(describe(&error, base)),
    }
}

/// The longest name of a client's (a property, a path into its body) an error repeats.
const LONGEST_NAME: usize = 200;

/// `name`, cut at [`LONGEST_NAME`] bytes with an ellipsis: an error names what is at
/// fault, and need not repeat a name of any length a client sends.
fn shortened(mut name: String) -> String {
    if name.len() > LONGEST_NAME {
        let mut end = LONGEST_NAME;
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        name.truncate(end);
        name.push('…');
    }
    name
}

fn describe(error: &ValidationError<'_>, base: Option<&str>) -> ApiError {
    let mut param = base.map(str::to_string).unwrap_or_default();
    for segment in error.instance_path().to_string().split('/').skip(1) {
        let segment = segment.replace("~1", "/").replace("~0", "~");
        if segment.chars().all(|c| c.is_ascii_digit()) && !segment.is_empty() {
            param.push_str(&format!("[{segment}]"));
        } else {
            if !param.is_empty() {
                param.push('.');
            }
            param.push_str(&segment);
        }
    }
    let param = shortened(param);
    let join =
        |name: &str| if param.is_empty() { name.to_string() } else { format!("{param}.{name}") };
    let subject = if param.is_empty() { "the request body".to_string() } else { param.clone() };
    let message = match error.kind() {
        ValidationErrorKind::Required { property } => {
            return ApiError::missing_parameter(join(property.as_str().unwrap_or_default()));
        }
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            let name = shortened(join(unexpected.first().map(String::as_str).unwrap_or_default()));
            return ApiError::invalid_parameter(name.clone(), format!("Unknown parameter: {name}"));
        }
        ValidationErrorKind::Type { kind } => format!("{subject} must be {}", type_name(kind)),
        ValidationErrorKind::Enum { options } => {
            let options: Vec<String> =
                options.as_array().into_iter().flatten().map(|o| o.to_string()).collect();
            format!("{subject} must be one of {}", options.join(", "))
        }
        ValidationErrorKind::Pattern { pattern } => {
            format!("{subject} must match the pattern {pattern}")
        }
        ValidationErrorKind::MinLength { limit } => {
            format!("{subject} must be at least {limit} characters long")
        }
        ValidationErrorKind::MaxLength { limit } => {
            format!("{subject} must be at most {limit} characters long")
        }
        ValidationErrorKind::Minimum { limit } => format!("{subject} must be at least {limit}"),
        ValidationErrorKind::Maximum { limit } => format!("{subject} must be at most {limit}"),
        ValidationErrorKind::MinItems { limit } => {
            format!("{subject} must hold at least {limit} items")
        }
        ValidationErrorKind::MaxItems { limit } => {
            format!("{subject} must hold at most {limit} items")
        }
        ValidationErrorKind::Format { format } => match format.as_str() {
            "date-time" => {
                format!("{subject} must be an ISO 8601 date-time, such as 2024-01-15T10:30:00Z")
            }
            other => format!("{subject} must be a valid {other}"),
        },
        _ => format!("{subject} is invalid"),
    };
    if param.is_empty() {
        ApiError::invalid_request(message)
    } else {
        ApiError::invalid_parameter(param, message)
    }
}

fn type_name(kind: &TypeKind) -> String {
    let name = |t: &jsonschema::JsonType| match t.to_string().as_str() {
        "integer" => "an integer".to_string(),
        "object" => "an object".to_string(),
        "array" => "an array".to_string(),
        "null" => "null".to_string(),
        other => format!("a {other}"),
    };
    match kind {
        TypeKind::Single(t) => name(t),
        TypeKind::Multiple(types) => {
            types.iter().map(|t| name(&t)).collect::<Vec<_>>().join(" or ")
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_error_added_later_falls_back_for_older_callers() {
        let error =
            |code: &str| serde_json::json!({"error": {"type": "conflict_error", "code": code}});
        let old = crate::versions::Version::parse("1.1.0").unwrap();
        let mut body = error("idempotency_key_in_use");
        assert!(super::downgrade_error(&mut body, old));
        assert_eq!(body, error("invalid_state"));
        let mut body = error("idempotency_key_in_use");
        assert!(!super::downgrade_error(
            &mut body,
            crate::versions::Version::parse("1.2.0").unwrap()
        ));
        let mut body = error("resource_already_exists");
        assert!(!super::downgrade_error(&mut body, old));
        assert!(super::has_later_errors(old));
        let v1_2 = crate::versions::Version::parse("1.2.0").unwrap();
        assert!(super::has_later_errors(v1_2), "precondition_failed came in 1.3.0");
        let mut body = error("precondition_failed");
        assert!(super::downgrade_error(&mut body, v1_2));
        assert_eq!(body, error("invalid_state"));
        let v1_3 = crate::versions::Version::parse("1.3.0").unwrap();
        assert!(super::has_later_errors(v1_3), "rate limits came in 1.4.0");
        let limited =
            |kind: &str, code: &str| serde_json::json!({"error": {"type": kind, "code": code}});
        let mut body = limited("rate_limit_error", "rate_limit_exceeded");
        assert!(super::downgrade_error(&mut body, v1_3));
        assert_eq!(body, limited("invalid_request_error", "invalid_state"), "type and code");
        assert!(!super::has_later_errors(crate::versions::Version::parse("1.4.0").unwrap()));
    }
}
