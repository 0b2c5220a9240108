//! `vm0-types` and `vm0-client`: progenitor generates the client and, through typify, a
//! `types` module. The module becomes the `vm0-types` crate and the client reuses it with
//! `pub use vm0_types as types`, so the models exist once, shared by client and server.

use anyhow::{anyhow, Context, Result};
use heck::ToSnakeCase;
use progenitor_impl::{GenerationSettings, Generator, HooksMode, InterfaceStyle, TagStyle};
use serde_json::Value;

use super::output::{rust_file, Allow, Generated};

const TYPES_ALLOW: &[Allow] = &[Allow {
    lint: "clippy::derivable_impls",
    why: "typify writes `Default` by hand for enums with a default variant and for empty structs.",
}];

/// The generated halves of `vm0-types` and `vm0-client`.
pub(super) fn generate(doc: &Value) -> Result<[Generated; 2]> {
    let view = without_api_version(&without_header_twins(&types_view(doc)));
    let spec: openapiv3::OpenAPI =
        serde_json::from_value(view).context("reading the spec as OpenAPI 3.0")?;
    let mut settings = GenerationSettings::default();
    // The client carries the extras' settings (retries), and the extras implement the
    // hooks that use them: every generated operation goes through them.
    settings
        .with_interface(InterfaceStyle::Builder)
        .with_tag(TagStyle::Merged)
        .with_inner_type(quote::quote!(crate::Settings))
        .with_hooks(HooksMode::Expected)
        .with_derive("schemars::JsonSchema")
        .with_derive("PartialEq");
    let tokens =
        Generator::new(&settings).generate_tokens(&spec).map_err(|e| anyhow!("progenitor: {e}"))?;
    let file: syn::File = syn::parse2(tokens).context("progenitor's output does not parse")?;

    let mut types = None;
    let mut client = Vec::new();
    for item in file.items {
        match item {
            syn::Item::Mod(module) if module.ident == "types" => {
                types = Some(module.content.context("the types module has a body")?.1);
                client.push(syn::parse_quote! {
                    /// The API's models, shared with the server: the `vm0-types` crate.
                    pub use vm0_types as types;
                });
            }
            // progenitor's prelude re-exports its `Client`, which the extras' `Client`
            // wraps under the same name: users import the crate root instead.
            syn::Item::Mod(module) if module.ident == "prelude" => {}
            other => client.push(other),
        }
    }
    let types = types.context("progenitor generated no types module")?;
    Ok([
        Generated {
            path: "crates/vm0-types/src/generated.rs",
            contents: rust_file(types, TYPES_ALLOW)?,
        },
        Generated { path: "crates/vm0-client/src/generated.rs", contents: rust_file(client, &[])? },
    ])
}

/// The spec as typify should see its schemas: the same shapes, in the forms from which it
/// makes the Rust types the spec means (see each step).
pub fn types_view(doc: &Value) -> Value {
    nullable_references(&tagged_unions(doc))
}

/// The spec without header parameters that have a query twin of the same Rust name
/// (streamRunEvents' `Last-Event-ID` beside `lastEventId`): progenitor would declare the
/// builder field twice. The client sets such headers itself where it needs them.
fn without_header_twins(doc: &Value) -> Value {
    let mut doc = doc.clone();
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else { return doc };
    for item in paths.values_mut() {
        for method in crate::spec::METHODS {
            let Some(params) = item
                .get_mut(method)
                .and_then(|op| op.get_mut("parameters"))
                .and_then(Value::as_array_mut)
            else {
                continue;
            };
            let rust_name =
                |p: &Value| p.get("name").and_then(Value::as_str).map(|n| n.to_snake_case());
            let query_names: Vec<String> = params
                .iter()
                .filter(|p| p.get("in").and_then(Value::as_str) != Some("header"))
                .filter_map(rust_name)
                .collect();
            params.retain(|p| {
                p.get("in").and_then(Value::as_str) != Some("header")
                    || !rust_name(p).is_some_and(|n| query_names.contains(&n))
            });
        }
    }
    doc
}

/// The spec without its `api-version` header parameter: progenitor's client sends its
/// own on every request, and a builder method for it as well would make two ways to
/// say one thing.
fn without_api_version(doc: &Value) -> Value {
    const REFERENCE: &str = "#/components/parameters/ApiVersion";
    let mut doc = doc.clone();
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else { return doc };
    for item in paths.values_mut() {
        for method in crate::spec::METHODS {
            if let Some(params) = item
                .get_mut(method)
                .and_then(|op| op.get_mut("parameters"))
                .and_then(Value::as_array_mut)
            {
                params.retain(|p| p.get("$ref").and_then(Value::as_str) != Some(REFERENCE));
            }
        }
    }
    if let Some(parameters) =
        doc.pointer_mut("/components/parameters").and_then(Value::as_object_mut)
    {
        parameters.remove("ApiVersion");
    }
    doc
}

/// The spec with each discriminated `oneOf` (`RunEvent`, on `event`) holding its branches
/// inline, and the branches' own components gone. From `$ref`s, typify makes an untagged
/// enum of structs, each with a one-variant enum for its tag; from inline branches, it
/// makes one enum tagged by the discriminator, `RunEvent::Output { id, data }`, which is
/// what the spec says. The branches are referenced nowhere else (the lint checks it).
fn tagged_unions(doc: &Value) -> Value {
    let mut doc = doc.clone();
    let Some(schemas) = doc.pointer("/components/schemas").and_then(Value::as_object).cloned()
    else {
        return doc;
    };
    let mut inlined = Vec::new();
    for (name, schema) in &schemas {
        let Some(branches) = schema
            .get("oneOf")
            .and_then(Value::as_array)
            .filter(|_| schema.get("discriminator").is_some())
        else {
            continue;
        };
        let branches: Vec<Value> = branches
            .iter()
            .map(|branch| {
                let reference = branch.get("$ref").and_then(Value::as_str).unwrap_or_default();
                let target = reference.strip_prefix("#/components/schemas/").unwrap_or_default();
                inlined.push(target.to_string());
                schemas.get(target).cloned().unwrap_or_else(|| branch.clone())
            })
            .collect();
        let union = doc
            .pointer_mut(&format!("/components/schemas/{name}"))
            .and_then(Value::as_object_mut)
            .expect("the schema is there");
        union.insert("oneOf".into(), Value::Array(branches));
        union.remove("discriminator");
    }
    let schemas = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
        .expect("the schemas are there");
    for name in inlined {
        schemas.remove(&name);
    }
    doc
}

/// The spec with each nullable reference, `anyOf` a `$ref` and a null branch (`{type:
/// object, nullable: true, enum: [null]}`, the form strict OpenAPI 3.0.3 tools read), as
/// `allOf` the reference with `nullable`, which typify makes an `Option` of the
/// referenced type.
fn nullable_references(doc: &Value) -> Value {
    match doc {
        Value::Object(map) => {
            let branches = map.get("anyOf").and_then(Value::as_array);
            let is_null = |branch: &Value| branch.get("enum") == Some(&serde_json::json!([null]));
            // The null branch may come first or second.
            let reference = match branches.map(Vec::as_slice) {
                Some([reference, null]) | Some([null, reference]) if is_null(null) => {
                    Some(reference)
                }
                _ => None,
            };
            if let Some(reference) = reference {
                if reference.get("$ref").is_some() {
                    let mut out = map.clone();
                    out.remove("anyOf");
                    out.insert("allOf".into(), Value::Array(vec![reference.clone()]));
                    out.insert("nullable".into(), Value::Bool(true));
                    return Value::Object(out);
                }
            }
            Value::Object(
                map.iter().map(|(key, value)| (key.clone(), nullable_references(value))).collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(nullable_references).collect()),
        other => other.clone(),
    }
}
