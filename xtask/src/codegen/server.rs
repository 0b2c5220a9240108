//! `vm0-api`: the server trait (one method per operation), a parameters struct per
//! operation, one axum handler per operation and the router, all from the spec; and
//! `generated.json`, the JSON Schemas the router validates requests against.

use anyhow::{bail, Context, Result};
use heck::{ToPascalCase, ToSnakeCase};
use proc_macro2::{Ident, Span, TokenStream};
use quote::quote;
use serde_json::{json, Map, Value};

use super::output::{bundled_json, rust_file, Generated, HEADER};
use crate::spec::{self, deref, Operation, EXACTLY_ONE_OF};

/// The generated halves of `vm0-api`: the Rust code and the schemas it validates with.
pub(super) fn generate(doc: &Value) -> Result<[Generated; 2]> {
    let ops =
        spec::operations(doc).iter().map(|op| Op::read(doc, op)).collect::<Result<Vec<_>>>()?;
    let trait_methods = ops.iter().map(Op::trait_method);
    let params_structs = ops.iter().filter_map(Op::params_struct);
    let handlers = ops.iter().map(Op::handler);
    let routes = routes(&ops);
    let provided = provided_methods();

    let items: syn::File = syn::parse2(quote! {
        use std::future::Future;
        use std::sync::Arc;

        use axum::extract::State;
        use axum::http::StatusCode;
        use axum::response::Response;

        use crate::error::ApiError;
        use crate::idempotency;
        use crate::request::{Authenticator, Call};
        use crate::reply;
        pub use crate::reply::EventStream;

        /// The VM0 Public API v1, one method per operation of `openapi/v1.yaml`.
        ///
        /// [`router`] calls [`Vm0Api::authenticate`] first, then validates every path,
        /// query, header and body input against the spec, and only then calls the
        /// operation's method, so an implementation receives valid, typed inputs only. Its
        /// errors are rendered in the spec's envelope, and every response carries
        /// `X-Request-Id` and `X-API-Version`.
        pub trait Vm0Api: Send + Sync + 'static {
            /// Who a valid token belongs to; every operation receives it.
            type Principal: Send + Sync + 'static;

            /// Checks a bearer token that has the spec's format (`vm0_live_` and 64
            /// lowercase hex characters), before anything else of the request is read.
            /// An unknown, expired or revoked token is [`ApiError::unauthorized`].
            fn authenticate(&self, token: &str)
                -> impl Future<Output = Result<Self::Principal, ApiError>> + Send;

            #provided

            #(#trait_methods)*
        }

        /// What the router's [`Call::authenticate`] needs of an implementation.
        impl<A: Vm0Api> Authenticator for A {
            type Principal = A::Principal;

            fn check_token(&self, token: &str)
                -> impl Future<Output = Result<A::Principal, ApiError>> + Send
            {
                Vm0Api::authenticate(self, token)
            }

            fn user_of(principal: &A::Principal) -> Option<String> {
                A::user_id(principal)
            }

            fn limiter(&self) -> Option<&dyn crate::limits::Limiter> {
                Vm0Api::limiter(self)
            }
        }

        #(#params_structs)*

        /// Every operation's route over `api`, without the fallbacks and layers that
        /// [`crate::finish`] adds: for servers that merge routes of their own first.
        pub fn routes<A: Vm0Api>(api: A) -> axum::Router {
            crate::schemas::compile_all();
            axum::Router::new()
                #(#routes)*
                .with_state(Arc::new(api))
        }

        /// The complete router over `api`: every operation, the error envelope for unknown
        /// routes (404) and methods (405), and the response headers.
        pub fn router<A: Vm0Api>(api: A) -> axum::Router {
            crate::finish(routes(api))
        }

        #(#handlers)*
    })
    .context("the generated server code does not parse")?;

    Ok([
        Generated {
            path: "crates/vm0-api/src/generated.rs",
            contents: rust_file(items.items, &[])?,
        },
        Generated { path: "crates/vm0-api/src/generated.json", contents: schemas_json(doc, &ops)? },
    ])
}

/// The router's `.route` calls: in the spec's order, one per path, each with its methods.
fn routes(ops: &[Op<'_>]) -> Vec<TokenStream> {
    let mut routes: Vec<(&str, Vec<TokenStream>)> = Vec::new();
    for op in ops {
        let method = ident(op.method);
        let handler = ident(&op.fn_name);
        let call = quote!(#method(#handler::<A>));
        match routes.iter_mut().find(|(path, _)| *path == op.path) {
            Some((_, calls)) => calls.push(call),
            None => routes.push((op.path, vec![call])),
        }
    }
    routes
        .iter()
        .map(|(path, calls)| {
            let (first, rest) = calls.split_first().expect("a route has a method");
            quote!(.route(#path, axum::routing::#first #(.#rest)*))
        })
        .collect()
}

/// What the generator needs of one operation.
struct Op<'a> {
    id: String,
    fn_name: String,
    method: &'a str,
    path: &'a str,
    docs: String,
    path_params: Vec<Param>,
    other_params: Vec<Param>,
    body: Option<(String, Value)>,
    success: (u16, Success),
    exactly_one_of: Vec<String>,
    /// The success response's properties added after the first version.
    added: Vec<spec::Added>,
    /// Whether it takes an `Idempotency-Key`, which the router reads itself.
    idempotent: bool,
    /// Whether its success response carries an `ETag`.
    tagged: bool,
}

/// The header parameter that makes an operation retry-safe, which the router reads itself.
const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

/// The header parameters that the router reads for every operation that declares them,
/// rather than pass them to the implementation: the caller's `api-version` (see
/// `vm0-api/src/versions.rs`) and the `Idempotency-Key`.
const ROUTER_HEADERS: [&str; 2] = ["api-version", IDEMPOTENCY_KEY];

/// Header parameters that the router reads as a type of `vm0-api` rather than as text:
/// its schema's pattern checked first, then parsed.
const TYPED_HEADERS: [(&str, &str); 1] = [("If-Match", "IfMatch")];

/// The response header that makes an operation answer a [`vm0_api::Tagged`] body.
const ETAG: &str = "ETag";

struct Param {
    name: String,
    field: String,
    location: String,
    required: bool,
    docs: String,
    schema: Value,
    default: Option<Value>,
    scalar: &'static str,
    rust_type: TokenStream,
    /// The version that added the header (`x-since`): callers of earlier ones do not
    /// send it, as far as the router is concerned.
    since: Option<String>,
}

impl Param {
    /// The operation's parameters: those of its path, then the others. Errors name the
    /// operation, as `context` says it.
    fn read_all(
        doc: &Value,
        op: &Operation<'_>,
        context: &dyn Fn() -> String,
    ) -> Result<(Vec<Param>, Vec<Param>)> {
        let mut path_params = Vec::new();
        let mut other_params: Vec<Param> = Vec::new();
        for raw in op.parameters() {
            let param = deref(doc, raw).with_context(context)?;
            let name = param["name"].as_str().with_context(context)?.to_string();
            let location = param["in"].as_str().with_context(context)?.to_string();
            if location == "header" && ROUTER_HEADERS.contains(&name.as_str()) {
                continue;
            }
            let schema = param.get("schema").with_context(context)?;
            let resolved = deref(doc, schema).with_context(context)?;
            let mut field = name.to_snake_case();
            if other_params.iter().any(|p| p.field == field) {
                field = format!("{field}_{location}");
            }
            let parsed = Param {
                required: param.get("required") == Some(&Value::Bool(true)),
                docs: param
                    .get("description")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                schema: spec::translate(schema),
                default: resolved.get("default").cloned(),
                scalar: match resolved.get("type").and_then(Value::as_str) {
                    Some("integer") => "integer",
                    Some("number") => "number",
                    Some("boolean") => "boolean",
                    _ => "string",
                },
                rust_type: match TYPED_HEADERS.iter().find(|(header, _)| *header == name) {
                    Some((_, typed)) if location == "header" => {
                        let typed = ident(typed);
                        quote!(crate::#typed)
                    }
                    _ => rust_type(schema)?,
                },
                since: param.get(spec::SINCE).and_then(Value::as_str).map(str::to_string),
                name,
                field,
                location,
            };
            if parsed.location == "path" {
                path_params.push(parsed);
            } else {
                other_params.push(parsed);
            }
        }
        Ok((path_params, other_params))
    }
}

enum Success {
    Json(String),
    Events,
    Empty,
}

impl<'a> Op<'a> {
    fn read(doc: &Value, op: &Operation<'a>) -> Result<Self> {
        let id = op.id().to_string();
        let context = || format!("operation {id}");
        let text = |key: &str| {
            op.op.get(key).and_then(Value::as_str).unwrap_or_default().trim().to_string()
        };
        let docs = format!("{}\n\n{}", text("summary"), text("description"));
        let (path_params, other_params) = Param::read_all(doc, op, &context)?;
        let idempotent = op.parameters().any(|raw| {
            deref(doc, raw).is_some_and(|p| p["in"] == "header" && p["name"] == IDEMPOTENCY_KEY)
        });

        let body = match op.op.get("requestBody") {
            None => None,
            Some(body) => {
                let schema = deref(doc, body)
                    .and_then(|b| b.pointer("/content/application~1json/schema"))
                    .with_context(|| {
                        format!("{}: the request body must be application/json", context())
                    })?;
                Some((component_name(schema).with_context(context)?.to_string(), schema.clone()))
            }
        };
        let exactly_one_of = body
            .as_ref()
            .and_then(|(_, schema)| deref(doc, schema))
            .and_then(|schema| schema.get(EXACTLY_ONE_OF))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();

        let responses = op.op.get("responses").and_then(Value::as_object).with_context(context)?;
        let (status, response) =
            responses.iter().find(|(s, _)| s.starts_with('2')).with_context(context)?;
        let response = deref(doc, response).with_context(context)?;
        let content = response.get("content").and_then(Value::as_object);
        let body_schema = content.and_then(|c| c.values().next()).and_then(|m| m.get("schema"));
        // An event stream's body is text; what it holds is the schema of one event.
        let body_schema = body_schema.map(|schema| schema.get("x-event-schema").unwrap_or(schema));
        let added =
            body_schema.map(|schema| spec::added_properties(doc, schema)).unwrap_or_default();
        let tagged = response.get("headers").and_then(|h| h.get(ETAG)).is_some();
        let success = match content.map(|c| c.iter().next()) {
            None | Some(None) => Success::Empty,
            Some(Some((media, _))) if media == "text/event-stream" => Success::Events,
            Some(Some((media, media_type))) if media == "application/json" => Success::Json(
                component_name(&media_type["schema"]).with_context(context)?.to_string(),
            ),
            Some(Some((media, _))) => bail!("{}: no support for {media} responses", context()),
        };

        let status = status.parse().with_context(context)?;
        Ok(Op {
            fn_name: id.to_snake_case(),
            id,
            method: op.method,
            path: op.path,
            docs,
            path_params,
            other_params,
            body,
            success: (status, success),
            exactly_one_of,
            added,
            idempotent,
            tagged,
        })
    }

    fn params_name(&self) -> Ident {
        ident(&format!("{}Params", self.id.to_pascal_case()))
    }

    fn output_type(&self) -> TokenStream {
        match &self.success.1 {
            Success::Json(name) if self.tagged => {
                let name = ident(name);
                quote!(crate::Tagged<vm0_types::#name>)
            }
            Success::Json(name) => {
                let name = ident(name);
                quote!(vm0_types::#name)
            }
            Success::Events => quote!(EventStream),
            Success::Empty => quote!(()),
        }
    }

    /// The method's inputs after the principal: path parameters, parameters, body.
    fn inputs(&self) -> Vec<(Ident, TokenStream)> {
        let mut inputs: Vec<(Ident, TokenStream)> =
            self.path_params.iter().map(|p| (ident(&p.field), quote!(String))).collect();
        if !self.other_params.is_empty() {
            let name = self.params_name();
            inputs.push((ident("params"), quote!(#name)));
        }
        if let Some((body, _)) = &self.body {
            let body = ident(body);
            inputs.push((ident("body"), quote!(vm0_types::#body)));
        }
        inputs
    }

    fn trait_method(&self) -> TokenStream {
        let docs = doc_lines(&self.docs);
        let name = ident(&self.fn_name);
        let output = self.output_type();
        let inputs = self.inputs().into_iter().map(|(name, ty)| quote!(#name: #ty));
        quote! {
            #(#docs)*
            fn #name(&self, principal: &Self::Principal, #(#inputs),*)
                -> impl Future<Output = Result<#output, ApiError>> + Send;
        }
    }

    fn params_struct(&self) -> Option<TokenStream> {
        if self.other_params.is_empty() {
            return None;
        }
        let doc = format!(" The query and header parameters of `{}`, validated.", self.id);
        let name = self.params_name();
        let fields = self.other_params.iter().map(|p| {
            let docs = doc_lines(&p.docs);
            let field = ident(&p.field);
            let ty = &p.rust_type;
            let ty =
                if p.required || p.default.is_some() { quote!(#ty) } else { quote!(Option<#ty>) };
            let name = &p.name;
            let rename = (name.as_str() != p.field).then(|| quote!(#[serde(rename = #name)]));
            quote! {
                #(#docs)*
                #rename
                pub #field: #ty,
            }
        });
        Some(quote! {
            #[doc = #doc]
            #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
            pub struct #name {
                #(#fields)*
            }
        })
    }

    fn handler(&self) -> TokenStream {
        let name = ident(&self.fn_name);
        let id = &self.id;
        // The api-version header is checked for every operation, even one with nothing to
        // leave out.
        let mut steps = match self.success.1 {
            Success::Empty => vec![quote!(call.caller_version()?;)],
            _ => vec![quote!(let omitted = call.omitted(#id)?;)],
        };
        for p in &self.path_params {
            let field = ident(&p.field);
            let param = &p.name;
            steps.push(quote!(let #field = call.path_param(#id, #param)?;));
        }
        if !self.other_params.is_empty() {
            steps.push(quote!(let params = call.params(#id)?;));
        }
        if self.body.is_some() {
            steps.push(quote!(let body = call.json_body(#id).await?;));
        }
        let args = self.inputs().into_iter().map(|(name, _)| name);
        let status = status_const(self.success.0);
        let call_api = quote!(api.#name(&principal, #(#args),*).await?);
        let (call_api, reply) = match self.success.1 {
            Success::Json(_) if self.tagged => (
                quote!(let output = #call_api;),
                quote!(reply::tagged(StatusCode::#status, &output, &omitted)),
            ),
            Success::Json(_) => (
                quote!(let output = #call_api;),
                quote!(reply::json(StatusCode::#status, &output, &omitted)),
            ),
            Success::Events => {
                (quote!(let output = #call_api;), quote!(reply::events(output, omitted)))
            }
            Success::Empty => (quote!(#call_api;), quote!(reply::empty(StatusCode::#status))),
        };
        let mutability = if self.body.is_some() { quote!(mut) } else { quote!() };
        let doc = format!(" `{} {}`: `{}`.", self.method.to_uppercase(), self.path, self.id);
        if self.idempotent {
            // The input is checked first: a request refused for it keeps no key.
            let body = if self.body.is_some() { quote!(&body) } else { quote!(&()) };
            return quote! {
                #[doc = #doc]
                async fn #name<A: Vm0Api>(State(api): State<Arc<A>>, #mutability call: Call)
                    -> Result<Response, ApiError>
                {
                    let principal = call.authenticate(&*api, #id).await?;
                    #(#steps)*
                    let once = match call.once(&*api, &principal, #body).await? {
                        idempotency::Start::Run(once) => once,
                        idempotency::Start::Answer(answer) => return Ok(answer),
                    };
                    let answer = {
                        let api = api.clone();
                        async move {
                            #call_api
                            Ok(#reply)
                        }
                    };
                    idempotency::run(api, once, answer).await
                }
            };
        }
        quote! {
            #[doc = #doc]
            async fn #name<A: Vm0Api>(State(api): State<Arc<A>>, #mutability call: Call)
                -> Result<Response, ApiError>
            {
                let principal = call.authenticate(&*api, #id).await?;
                #(#steps)*
                #call_api
                Ok(#reply)
            }
        }
    }
}

/// An identifier, raw (`r#type`) where the name is a Rust keyword.
fn ident(name: &str) -> Ident {
    match syn::parse_str::<Ident>(name) {
        Ok(_) => Ident::new(name, Span::call_site()),
        Err(_) => Ident::new_raw(name, Span::call_site()),
    }
}

/// The component a `$ref` names: `#/components/schemas/Agent` is `Agent`.
fn component_name(schema: &Value) -> Option<&str> {
    schema.get("$ref")?.as_str()?.strip_prefix("#/components/schemas/")
}

/// The Rust type of a parameter's schema.
fn rust_type(schema: &Value) -> Result<TokenStream> {
    if let Some(name) = component_name(schema) {
        let name = ident(name);
        return Ok(quote!(vm0_types::#name));
    }
    let format = schema.get("format").and_then(Value::as_str);
    Ok(match (schema.get("type").and_then(Value::as_str), format) {
        (Some("integer"), _) => quote!(i64),
        (Some("number"), _) => quote!(f64),
        (Some("boolean"), _) => quote!(bool),
        (Some("string"), Some("date-time")) => quote!(chrono::DateTime<chrono::Utc>),
        (Some("string"), _) => quote!(String),
        (other, _) => bail!("no Rust type for a parameter of type {other:?}"),
    })
}

fn status_const(status: u16) -> Ident {
    ident(match status {
        200 => "OK",
        201 => "CREATED",
        202 => "ACCEPTED",
        204 => "NO_CONTENT",
        other => panic!("no StatusCode constant for {other}"),
    })
}

/// Doc attributes, one per line, each with the leading space rustdoc expects.
fn doc_lines(text: &str) -> Vec<TokenStream> {
    text.trim()
        .lines()
        .map(|line| {
            let line = if line.is_empty() { String::new() } else { format!(" {line}") };
            quote!(#[doc = #line])
        })
        .collect()
}

/// The JSON Schemas of every operation's inputs and the component definitions they refer
/// to, as the runtime in `crates/vm0-api/src/schemas.rs` reads them.
fn schemas_json(doc: &Value, ops: &[Op<'_>]) -> Result<String> {
    let mut operations = Map::new();
    for op in ops {
        let params: Vec<Value> = op
            .path_params
            .iter()
            .chain(&op.other_params)
            .map(|p| {
                json!({
                    "name": p.name,
                    "in": p.location,
                    "required": p.required,
                    "scalar": p.scalar,
                    "default": p.default,
                    "schema": p.schema,
                    "since": p.since,
                })
            })
            .collect();
        let mut entry = json!({ "parameters": params });
        if let Some((_, schema)) = &op.body {
            entry["body"] = spec::translate(schema);
        }
        if !op.exactly_one_of.is_empty() {
            entry["exactlyOneOf"] = json!(op.exactly_one_of);
        }
        if !op.added.is_empty() {
            entry["added"] =
                op.added.iter().map(|a| json!({ "path": a.path, "since": a.since })).collect();
        }
        operations.insert(op.id.clone(), entry);
    }
    let out = json!({
        "$comment": HEADER.trim_start_matches("//! "),
        "definitions": spec::definitions(doc),
        "fallbacks": spec::fallbacks(doc),
        "operations": operations,
    });
    bundled_json(&out)
}

/// The methods of `Vm0Api` that an implementation may leave as they are: the user a
/// principal is, where Idempotency-Keys are kept, and what counts rate limits.
fn provided_methods() -> TokenStream {
    quote! {
        /// The id of the user a principal is, for the access log and
        /// [`crate::Served`]; never a token or other secret. None by default.
        fn user_id(principal: &Self::Principal) -> Option<String> {
            let _ = principal;
            None
        }

        /// Where the router keeps each user's `Idempotency-Key`s and their answers
        /// (see [`crate::idempotency`]); keys need a [`Vm0Api::user_id`] too. None by
        /// default: keys are checked, and not kept.
        fn keys(&self) -> Option<&dyn crate::idempotency::KeyStore> {
            None
        }

        /// What counts each token's requests against its rate limit (see
        /// [`crate::limits`]). None by default: no limit, and no RateLimit fields.
        fn limiter(&self) -> Option<&dyn crate::limits::Limiter> {
            None
        }
    }
}
