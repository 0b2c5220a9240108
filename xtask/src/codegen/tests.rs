//! What the cross-crate tests need from the spec: the list of component types whose
//! derived JSON Schemas they compare with the spec's, and the API surface that the insta
//! snapshot records, so a spec change is a reviewable snapshot diff in the same commit.

use anyhow::{Context, Result};
use quote::{quote, ToTokens};
use serde_json::Value;

use super::output::{rust_file, Generated, HEADER};
use crate::spec::{self, deref};

/// Where the surface snapshot lives: insta's name for `assert_snapshot!("api_surface", ..)`
/// in `tests/it/surface.rs`.
pub(super) const SNAPSHOT_PATH: &str = "tests/it/snapshots/it__surface__api_surface.snap";

/// The component list and the surface snapshot, from the spec and the generated Rust.
pub(super) fn generate(doc: &Value, generated: &[Generated]) -> Result<[Generated; 2]> {
    let view = super::client::types_view(doc);
    let names: Vec<&String> = view
        .pointer("/components/schemas")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(n, _)| n)
        .collect();
    let entries = names.iter().map(|name| {
        let ty = syn::Ident::new(name, proc_macro2::Span::call_site());
        quote!((#name, schema::<vm0_types::#ty>()))
    });
    let items: syn::File = syn::parse2(quote! {
        /// Every component schema of the spec that has a type (the branches of a tagged
        /// union live inside it), by name, with the JSON Schema that schemars derives from
        /// its `vm0-types` type.
        pub(crate) fn derived_schemas() -> Vec<(&'static str, schemars::Schema)> {
            vec![#(#entries),*]
        }

        /// The schema of `T` as it is serialized: an `Option` field that is always written
        /// is required and nullable, as the spec's "present and null" fields are.
        fn schema<T: schemars::JsonSchema>() -> schemars::Schema {
            schemars::generate::SchemaSettings::draft2020_12()
                .for_serialize()
                .into_generator()
                .into_root_schema_for::<T>()
        }
    })?;
    let description = HEADER.trim_start_matches("//! ");
    let snapshot = format!(
        "---\nsource: tests/it/surface.rs\ndescription: {description}\nexpression: surface\n\
         ---\n{}",
        surface(doc, generated)?
    );
    Ok([
        Generated {
            path: "tests/it/generated_components.rs",
            contents: rust_file(items.items, &[])?,
        },
        Generated { path: SNAPSHOT_PATH, contents: snapshot },
    ])
}

fn file(generated: &[Generated], path: &str) -> Result<syn::File> {
    let file = generated
        .iter()
        .find(|f| f.path == path)
        .with_context(|| format!("{path} is not generated"))?;
    Ok(syn::parse_file(&file.contents)?)
}

/// The API surface as text: every operation as the spec gives it, every method of the
/// server trait, every client builder, and every type with its fields.
pub fn surface(doc: &Value, generated: &[Generated]) -> Result<String> {
    Ok([operations(doc)?, server_trait(generated)?, client_builders(generated)?, types(generated)?]
        .concat())
}

/// Every operation: its method, path and id, parameters, body and responses.
fn operations(doc: &Value) -> Result<String> {
    let mut out = String::from("# Operations (openapi/v1.yaml)\n");
    for op in spec::operations(doc) {
        let responses = op.op["responses"].as_object().context("responses")?;
        let statuses: Vec<String> = responses
            .iter()
            .map(|(status, r)| {
                let media = deref(doc, r)
                    .and_then(|r| r.get("content"))
                    .and_then(Value::as_object)
                    .and_then(|c| c.iter().next());
                match media {
                    Some((kind, m)) => format!("{status} {} {}", kind, schema_text(&m["schema"])),
                    None => status.to_string(),
                }
            })
            .collect();
        out.push_str(&format!("\n{} {} {}\n", op.method.to_uppercase(), op.path, op.id()));
        for param in op.parameters() {
            let param = deref(doc, param).context("parameter")?;
            let required = if param["required"] == true { " (required)" } else { "" };
            out.push_str(&format!(
                "  {} {}: {}{required}\n",
                param["in"].as_str().unwrap_or("?"),
                param["name"].as_str().unwrap_or("?"),
                schema_text(&param["schema"])
            ));
        }
        if let Some(body) = op.op.get("requestBody").and_then(|b| deref(doc, b)) {
            out.push_str(&format!(
                "  body: {}\n",
                schema_text(&body["content"]["application/json"]["schema"])
            ));
        }
        for status in statuses {
            out.push_str(&format!("  -> {status}\n"));
        }
    }
    Ok(out)
}

/// Every method of the `Vm0Api` trait, by its signature.
fn server_trait(generated: &[Generated]) -> Result<String> {
    let mut out = String::from("\n# Server trait (vm0-api)\n\n");
    for item in file(generated, "crates/vm0-api/src/generated.rs")?.items {
        let syn::Item::Trait(item) = item else { continue };
        for method in item.items {
            if let syn::TraitItem::Fn(method) = method {
                out.push_str(&format!("{}\n", tidy(&method.sig.to_token_stream().to_string())));
            }
        }
    }
    Ok(out)
}

/// Every builder of the generated client: its setters and what `send` returns.
fn client_builders(generated: &[Generated]) -> Result<String> {
    let mut out = String::from("\n# Client builders (vm0-client)\n\n");
    let client = file(generated, "crates/vm0-client/src/generated.rs")?;
    for item in &client.items {
        let syn::Item::Mod(module) = item else { continue };
        if module.ident != "builder" {
            continue;
        }
        for item in module.content.iter().flat_map(|(_, items)| items) {
            let syn::Item::Impl(block) = item else { continue };
            let name = tidy(&block.self_ty.to_token_stream().to_string());
            let methods: Vec<String> = block
                .items
                .iter()
                .filter_map(|i| match i {
                    syn::ImplItem::Fn(f) if f.sig.ident != "new" && f.sig.ident != "send" => {
                        Some(f.sig.ident.to_string())
                    }
                    _ => None,
                })
                .collect();
            let send = block.items.iter().find_map(|i| match i {
                syn::ImplItem::Fn(f) if f.sig.ident == "send" => {
                    Some(tidy(&f.sig.output.to_token_stream().to_string()))
                }
                _ => None,
            });
            out.push_str(&format!("{name}: {} {}\n", methods.join(", "), send.unwrap_or_default()));
        }
    }
    Ok(out)
}

/// Every generated type: a struct with its fields, an enum with its variants.
fn types(generated: &[Generated]) -> Result<String> {
    let mut out = String::from("\n# Types (vm0-types)\n\n");
    for item in file(generated, "crates/vm0-types/src/generated.rs")?.items {
        match item {
            syn::Item::Struct(s) => {
                let fields: Vec<String> = s
                    .fields
                    .iter()
                    .map(|f| {
                        let ty = tidy(&f.ty.to_token_stream().to_string());
                        match &f.ident {
                            Some(name) => format!("{name}: {ty}"),
                            None => ty,
                        }
                    })
                    .collect();
                match s.fields {
                    syn::Fields::Unnamed(_) => {
                        out.push_str(&format!("struct {}({})\n", s.ident, fields.join(", ")))
                    }
                    _ => out.push_str(&format!("struct {} {{ {} }}\n", s.ident, fields.join(", "))),
                }
            }
            syn::Item::Enum(e) => {
                let variants: Vec<String> = e
                    .variants
                    .iter()
                    .map(|v| match &v.fields {
                        syn::Fields::Unit => v.ident.to_string(),
                        fields => {
                            let types: Vec<String> = fields
                                .iter()
                                .map(|f| tidy(&f.ty.to_token_stream().to_string()))
                                .collect();
                            format!("{}({})", v.ident, types.join(", "))
                        }
                    })
                    .collect();
                out.push_str(&format!("enum {} {{ {} }}\n", e.ident, variants.join(", ")));
            }
            _ => {}
        }
    }
    Ok(out)
}

/// A schema in a few words: `AgentList`, `string (date-time)`, `integer (1..=100, default 20)`.
fn schema_text(schema: &Value) -> String {
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        return reference.rsplit('/').next().unwrap_or(reference).to_string();
    }
    let mut notes = Vec::new();
    for key in ["format", "pattern", "enum"] {
        if let Some(value) = schema.get(key) {
            notes.push(format!(
                "{key} {}",
                value.as_str().map(str::to_string).unwrap_or_else(|| value.to_string())
            ));
        }
    }
    match (schema.get("minimum"), schema.get("maximum")) {
        (Some(min), Some(max)) => notes.push(format!("{min}..={max}")),
        (Some(min), None) => notes.push(format!(">= {min}")),
        _ => {}
    }
    if let Some(default) = schema.get("default") {
        notes.push(format!("default {default}"));
    }
    let kind = schema.get("type").and_then(Value::as_str).unwrap_or("any").to_string();
    if notes.is_empty() {
        kind
    } else {
        format!("{kind} ({})", notes.join(", "))
    }
}

/// Token text with the spaces `to_string` puts around punctuation removed.
fn tidy(tokens: &str) -> String {
    let mut out = tokens.to_string();
    for (from, to) in [
        (" :: ", "::"),
        (":: ", "::"),
        (" ,", ","),
        ("( ", "("),
        (" )", ")"),
        ("< ", "<"),
        (" <", "<"),
        (" >", ">"),
        ("& ", "&"),
        (" ;", ";"),
        ("# [", "#["),
        ("[ ", "["),
        (" ]", "]"),
        ("! [", "!["),
        ("' a", "'a"),
        (" :", ":"),
        (" (", "("),
        (",)", ")"),
    ] {
        out = out.replace(from, to);
    }
    out.replace("::std::string::String", "String")
        .replace("::std::option::Option", "Option")
        .replace("::std::vec::Vec", "Vec")
        .replace("::std::collections::HashMap", "HashMap")
        .replace("::std::num::", "")
        .replace("::chrono::DateTime<::chrono::offset::Utc>", "DateTime<Utc>")
        .replace("::serde_json::", "serde_json::")
}
