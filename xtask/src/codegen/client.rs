//! `vm0-types` and `vm0-client`: progenitor generates the client and, through typify, a
//! `types` module. The module becomes the `vm0-types` crate and the client reuses it with
//! `pub use vm0_types as types`, so the models exist once, shared by client and server.

use anyhow::{anyhow, Context, Result};
use heck::ToSnakeCase;
use progenitor_impl::{GenerationSettings, Generator, HooksMode, InterfaceStyle, TagStyle};
use serde_json::Value;

use super::{rust_file, Allow, Generated};

const TYPES_ALLOW: &[Allow] =
    &[Allow { lint: "clippy::derivable_impls", why: "typify writes `Default` by hand for enums with a default variant and for empty structs." }];

/// The generated halves of `vm0-types` and `vm0-client`.
pub(super) fn generate(doc: &Value) -> Result<[Generated; 2]> {
    let spec: openapiv3::OpenAPI = serde_json::from_value(without_header_twins(&shapes(doc))).context("reading the spec as OpenAPI 3.0")?;
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
    let tokens = Generator::new(&settings).generate_tokens(&spec).map_err(|e| anyhow!("progenitor: {e}"))?;
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
        Generated { path: "crates/vm0-types/src/generated.rs", contents: rust_file(types, TYPES_ALLOW)? },
        Generated { path: "crates/vm0-client/src/generated.rs", contents: rust_file(client, &[])? },
    ])
}

/// The spec as the types should see it. A `oneOf` whose branches only list `required`
/// properties (createRun's "exactly one of agent, agentId, sessionId, checkpointId") is a
/// validation rule, not a shape: typify would turn it into an enum of near-identical
/// structs, so the types leave it out and the generated router enforces it.
pub fn shapes(doc: &Value) -> Value {
    match doc {
        Value::Object(map) => Value::Object(
            map.iter().filter(|(key, value)| !(key.as_str() == "oneOf" && is_required_only(value))).map(|(key, value)| (key.clone(), shapes(value))).collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(shapes).collect()),
        other => other.clone(),
    }
}

/// The spec without header parameters that have a query twin of the same Rust name
/// (streamRunEvents' `Last-Event-ID` beside `lastEventId`): progenitor would declare the
/// builder field twice. The client sets such headers itself where it needs them.
fn without_header_twins(doc: &Value) -> Value {
    let mut doc = doc.clone();
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else { return doc };
    for item in paths.values_mut() {
        for method in crate::spec::METHODS {
            let Some(params) = item.get_mut(method).and_then(|op| op.get_mut("parameters")).and_then(Value::as_array_mut) else {
                continue;
            };
            let rust_name = |p: &Value| p.get("name").and_then(Value::as_str).map(|n| n.to_snake_case());
            let query_names: Vec<String> = params.iter().filter(|p| p.get("in").and_then(Value::as_str) != Some("header")).filter_map(rust_name).collect();
            params.retain(|p| p.get("in").and_then(Value::as_str) != Some("header") || !rust_name(p).is_some_and(|n| query_names.contains(&n)));
        }
    }
    doc
}

/// Whether `one_of` is a list of branches that each only list required properties.
pub fn is_required_only(one_of: &Value) -> bool {
    one_of
        .as_array()
        .is_some_and(|branches| !branches.is_empty() && branches.iter().all(|b| b.as_object().is_some_and(|o| o.len() == 1 && o.contains_key("required"))))
}
