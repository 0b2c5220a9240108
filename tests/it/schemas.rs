//! For every component schema of the spec, the JSON Schema that schemars derives from the
//! generated `vm0-types` type has the same shape: the same types and nullability, the
//! same properties, required properties and enum values, the same items and additional
//! properties, with `$ref`s followed on both sides. The types are read as they serialize,
//! where an `Option` that is always written is required and nullable, as the spec's
//! "present and null" fields are. As serialized, an optional field is absent rather than
//! null (typify skips `None`), and a field with a spec default is always present (typify
//! fills the default in), so null is left out of optional fields and defaulted fields
//! count as required. Validation keywords are not part of a shape (patterns, lengths,
//! ranges: the newtypes check the string ones when built, and the router tests check
//! every one against the spec). The branches of a tagged union have
//! no type of their own (`xtask::codegen::types_view`): their shapes are compared inside
//! the union's.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use xtask::spec;

use crate::generated_components::derived_schemas;

/// The canonical shape of `schema`, whose `$ref`s resolve inside `root`.
fn shape(root: &Value, schema: &Value, depth: usize) -> Value {
    assert!(depth < 32, "the schemas nest too deep: a loop?");
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        let target = root
            .pointer(reference.trim_start_matches('#'))
            .unwrap_or_else(|| panic!("{reference} does not resolve"));
        return shape(root, target, depth + 1);
    }
    if let Some(Value::Array(members)) = schema.get("allOf") {
        if let [only] = members.as_slice() {
            return shape(root, only, depth + 1);
        }
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(Value::Array(members)) = schema.get(key) {
            return union(members.iter().map(|m| shape(root, m, depth + 1)).collect());
        }
    }
    // `{enum: [null]}` (a nullable reference's null branch) holds null and nothing else.
    if schema.get("enum") == Some(&json!([null])) {
        return json!({ "type": "null" });
    }
    if let Some(values) = schema.get("enum") {
        let mut values = values.as_array().cloned().unwrap_or_default();
        values.sort_by_key(Value::to_string);
        return json!({ "enum": values });
    }
    if let Some(value) = schema.get("const") {
        return json!({ "enum": [value] });
    }
    match schema.get("type") {
        Some(Value::Array(types)) => {
            let members = types.iter().map(|t| {
                let mut single = schema.clone();
                single["type"] = t.clone();
                shape(root, &single, depth + 1)
            });
            union(members.collect())
        }
        Some(Value::String(kind)) => match kind.as_str() {
            "object" => {
                let mut required: Vec<&str> = schema
                    .get("required")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                let properties =
                    schema.get("properties").and_then(Value::as_object).into_iter().flatten();
                required.extend(
                    properties
                        .clone()
                        .filter(|(_, s)| s.get("default").is_some())
                        .map(|(name, _)| name.as_str()),
                );
                required.sort();
                required.dedup();
                let properties: BTreeMap<String, Value> = properties
                    .map(|(name, s)| {
                        let shape = shape(root, s, depth + 1);
                        let shape = if required.contains(&name.as_str()) {
                            shape
                        } else {
                            without_null(shape)
                        };
                        (name.clone(), shape)
                    })
                    .collect();
                let additional = match schema.get("additionalProperties") {
                    None | Some(Value::Bool(true)) => json!(true),
                    Some(Value::Object(map)) if map.is_empty() => json!(true),
                    Some(Value::Bool(false)) => json!(false),
                    Some(other) => shape(root, other, depth + 1),
                };
                json!({
                    "type": "object",
                    "properties": properties,
                    "required": required,
                    "additionalProperties": additional
                })
            }
            "array" => {
                let items = shape(root, schema.get("items").unwrap_or(&json!({})), depth + 1);
                json!({ "type": "array", "items": items })
            }
            "string" if schema.get("format") == Some(&json!("date-time")) => {
                json!({ "type": "string", "format": "date-time" })
            }
            other => json!({ "type": other }),
        },
        _ => json!("any"),
    }
}

/// The shape with `null` taken out of it.
fn without_null(shape: Value) -> Value {
    match shape.get("anyOf").and_then(Value::as_array) {
        Some(members) => {
            union(members.iter().filter(|m| **m != json!({"type": "null"})).cloned().collect())
        }
        None => shape,
    }
}

fn union(mut members: Vec<Value>) -> Value {
    members.sort_by_key(Value::to_string);
    members.dedup();
    match members.len() {
        1 => members.pop().unwrap(),
        _ => json!({ "anyOf": members }),
    }
}

/// The first place where two shapes differ, as a path and the two sides.
fn difference(spec: &Value, derived: &Value, at: &str) -> Option<String> {
    match (spec, derived) {
        (Value::Object(a), Value::Object(b)) => {
            for key in a.keys().chain(b.keys()) {
                match (a.get(key), b.get(key)) {
                    (Some(x), Some(y)) => {
                        if let Some(found) = difference(x, y, &format!("{at}/{key}")) {
                            return Some(found);
                        }
                    }
                    (x, y) => {
                        return Some(format!("{at}/{key}: the spec has {x:?}, the type has {y:?}"))
                    }
                }
            }
            None
        }
        (a, b) if a == b => None,
        (a, b) => Some(format!("{at}: the spec has {a}, the type has {b}")),
    }
}

#[test]
fn each_generated_type_has_the_shape_of_its_spec_schema() {
    let doc = spec::load().unwrap();
    let components = doc.pointer("/components/schemas").and_then(Value::as_object).unwrap();
    let derived = derived_schemas();
    // The branches of a tagged union have no type of their own: they live inside it.
    let typed =
        xtask::codegen::types_view(&doc)["components"]["schemas"].as_object().unwrap().len();
    assert_eq!(derived.len(), typed, "every component has a generated type");
    let mut failures = Vec::new();
    for (name, schema) in derived {
        let ours = spec::json_schema(&doc, &components[name]);
        let theirs = serde_json::to_value(&schema).unwrap();
        if let Some(found) = difference(&shape(&ours, &ours, 0), &shape(&theirs, &theirs, 0), "") {
            failures.push(format!("{name}: {found}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} types differ from the spec:\n{}",
        failures.len(),
        typed,
        failures.join("\n")
    );
}

#[test]
fn a_difference_names_the_schema_and_the_path() {
    let spec =
        json!({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]});
    let derived = json!({
        "type": "object",
        "properties": {"a": {"type": ["string", "null"]}},
        "required": ["a"]
    });
    let found = difference(&shape(&spec, &spec, 0), &shape(&derived, &derived, 0), "").unwrap();
    assert!(found.starts_with("/properties/a"), "{found}");
}
