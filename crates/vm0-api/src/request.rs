//! `Call`: one request as the generated handlers read it. Each reading (the bearer token,
//! a path parameter, the query and header parameters, the JSON body) is checked against
//! the operation's schemas and fails with the spec's error envelope.

use std::collections::HashMap;
use std::future::Future;

use axum::body::Body;
use axum::extract::rejection::RawPathParamsRejection;
use axum::extract::{FromRequest, FromRequestParts, RawPathParams, Request};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::idempotency;
use crate::limits::Charge;
use crate::schemas::{self, Location, Parameter};
use crate::versions::{self, Omitted, Version};
use crate::ServedSlot;

/// The largest JSON request body read by default, in bytes; a server sets its own with a
/// [`BodyLimit`] in the request's extensions.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The bytes a body may take for each item of the longest list its schema allows (the
/// file list of an upload): a path of 1,024 bytes, a hash, a size and their JSON, with
/// room for escapes. A file list of 10,000 such entries fits in 16 MB.
const BYTES_PER_ITEM: usize = 1600;

/// The JSON values a body may hold for each item of its longest list, and for each 16
/// bytes of a body without one. Values are counted as the body arrives, before any is
/// built, so 14 MB of `[0,0,...]` (7 million values, a gigabyte once parsed) is refused
/// after its first chunk.
const VALUES_PER_ITEM: usize = 8;
const BYTES_PER_VALUE: usize = 16;

/// The largest JSON request body, in bytes, of an operation whose body holds no list;
/// an operation's body may be larger where its list allows more.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

/// The length of a token: `vm0_live_` and 64 hex characters.
const TOKEN_PREFIX: &str = "vm0_live_";

/// What [`Call::authenticate`] needs of an implementation: its check of a token, and the
/// user a principal is. Every [`Vm0Api`](crate::Vm0Api) is one, through its
/// `authenticate` and `user_id` (a blanket implementation beside the trait).
pub trait Authenticator: Send + Sync {
    /// Who a valid token belongs to.
    type Principal: Send + Sync + 'static;
    /// Checks a bearer token that has the spec's format.
    fn check_token(
        &self,
        token: &str,
    ) -> impl Future<Output = Result<Self::Principal, ApiError>> + Send;
    /// What counts each token's requests, if anything does.
    fn limiter(&self) -> Option<&dyn crate::limits::Limiter>;
    /// The id of the user a principal is, for the access log and [`crate::Served`].
    fn user_of(principal: &Self::Principal) -> Option<String>;
}

/// One request, read on demand so that authentication comes before anything else.
pub struct Call {
    parts: Parts,
    body: Option<Body>,
    /// The path's parameters, or why they could not be decoded.
    path: Result<HashMap<String, String>, RawPathParamsRejection>,
}

impl<S: Send + Sync> FromRequest<S> for Call {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let (mut parts, body) = request.into_parts();
        let path = RawPathParams::from_request_parts(&mut parts, state)
            .await
            .map(|params| params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        Ok(Call { parts, body: Some(body), path })
    }
}

impl Call {
    fn content_length(&self) -> Option<usize> {
        self.parts.headers.get(axum::http::header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
    }

    /// Notes that this request calls the operation `op`, then authenticates its bearer
    /// token with `api` and notes the user it belongs to: both for the access log and
    /// [`crate::Served`], whatever the answer. Then charges the request to the token's
    /// rate limit, if `api` has one: past it, 429. (Not an `async fn`: the future must not
    /// hold `&self`, whose body is not `Sync`.)
    pub fn authenticate<'a, A: Authenticator>(
        &'a self,
        api: &'a A,
        op: &'static str,
    ) -> impl Future<Output = Result<A::Principal, ApiError>> + Send + 'a {
        let slot = self.parts.extensions.get::<ServedSlot>().cloned().unwrap_or_default();
        slot.0.lock().expect("not poisoned").operation = Some(op);
        let token = self.bearer_token();
        async move {
            let token = token?;
            let principal = api.check_token(token).await?;
            slot.0.lock().expect("not poisoned").user = A::user_of(&principal);
            if let Some(limiter) = api.limiter() {
                let charge = limiter.charge(token).await;
                let quota = match charge {
                    Charge::Admitted(quota) => quota,
                    Charge::Refused(quota) => Some(quota),
                };
                slot.0.lock().expect("not poisoned").quota = quota;
                if let Charge::Refused(quota) = charge {
                    return Err(ApiError::rate_limited(&quota));
                }
            }
            Ok(principal)
        }
    }

    /// Begins this request under its `Idempotency-Key`, checked (a 400 naming the header),
    /// with the fingerprint of its method, path, `api-version` and `body`: see
    /// [`crate::idempotency`]. (Not an `async fn`, as [`Call::authenticate`].)
    pub fn once<'a, A: crate::Vm0Api, B: serde::Serialize>(
        &self,
        api: &'a A,
        principal: &A::Principal,
        body: &B,
    ) -> impl Future<Output = Result<idempotency::Start, ApiError>> + Send + 'a {
        // A caller of a version before the header's knows nothing of it, nor of its answers.
        let key = match self.caller_version() {
            Ok(Some(version)) if version < idempotency::since() => Ok(None),
            _ => idempotency::key_of(&self.parts.headers),
        };
        let (parts, user) = (&self.parts, A::user_id(principal));
        let fingerprint = idempotency::fingerprint(&parts.method, &parts.uri, &parts.headers, body);
        async move { idempotency::start(api.keys(), user, key?, fingerprint).await }
    }

    /// What to leave out of `op`'s response for this caller: the properties added after
    /// the version its `api-version` header names. A value that is not a 1.x version is a
    /// 400 naming `api-version`.
    pub(crate) fn omitted(&self, op: &str) -> Result<Omitted, ApiError> {
        Ok(Omitted::of(&schemas::operation(op).added, self.caller_version()?))
    }

    /// The version the caller's `api-version` header names, if it sends one. An operation
    /// with no body to trim still refuses a value that is not a 1.x version.
    pub(crate) fn caller_version(&self) -> Result<Option<Version>, ApiError> {
        Version::of_caller(self.parts.headers.get(versions::HEADER))
    }

    /// The bearer token, when the `Authorization` header holds one of the spec's format.
    pub fn bearer_token(&self) -> Result<&str, ApiError> {
        let Some(header) = self.parts.headers.get(AUTHORIZATION) else {
            return Err(ApiError::unauthorized(
                "No API key: send it as 'Authorization: Bearer vm0_live_...'",
            ));
        };
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .ok_or_else(|| {
                ApiError::unauthorized("The Authorization header must be 'Bearer <API key>'")
            })?;
        if !is_token(token) {
            return Err(ApiError::unauthorized(
                "Malformed API key: expected vm0_live_ followed by 64 lowercase hex characters",
            ));
        }
        Ok(token)
    }

    /// The path parameter `name` of the operation `op`, checked against its schema.
    pub fn path_param(&self, op: &str, name: &str) -> Result<String, ApiError> {
        let path = self
            .path
            .as_ref()
            .map_err(|rejection| ApiError::invalid_request(rejection.body_text()))?;
        let value = path.get(name).cloned().ok_or_else(|| ApiError::missing_parameter(name))?;
        let parameter = schemas::operation(op)
            .parameters
            .iter()
            .find(|p| p.location == Location::Path && p.name == name);
        if let Some(parameter) = parameter {
            schemas::check(&parameter.validator, &Value::String(value.clone()), Some(name))?;
        }
        Ok(value)
    }

    /// The query and header parameters of the operation `op`: each read as its schema's
    /// type, checked, defaulted, and gathered into `T`. An unknown or repeated query
    /// parameter is an error rather than silently ignored.
    pub fn params<T: DeserializeOwned>(&self, op: &str) -> Result<T, ApiError> {
        let declared: Vec<&Parameter> = schemas::operation(op)
            .parameters
            .iter()
            .filter(|p| p.location != Location::Path)
            .collect();
        let query = self.parts.uri.query().unwrap_or_default();
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).map_err(|e| {
            ApiError::invalid_request(format!("The query string is malformed: {e}"))
        })?;
        let mut raw: HashMap<&str, &str> = HashMap::new();
        for (name, value) in &pairs {
            if !declared.iter().any(|p| p.location == Location::Query && p.name == *name) {
                return Err(ApiError::invalid_parameter(
                    name,
                    format!("Unknown parameter: {name}"),
                ));
            }
            if raw.insert(name, value).is_some() {
                return Err(ApiError::invalid_parameter(
                    name,
                    format!("{name} is given more than once"),
                ));
            }
        }
        let mut values = Map::new();
        let caller = self.caller_version()?;
        for parameter in declared {
            // A caller of a version before a header's knows nothing of it.
            let unknown =
                matches!((parameter.since, caller), (Some(since), Some(caller)) if caller < since);
            let given = match parameter.location {
                Location::Query => raw.get(parameter.name.as_str()).map(|v| v.to_string()),
                _ if unknown => None,
                _ => match self.parts.headers.get(&parameter.name) {
                    Some(v) => Some(
                        v.to_str()
                            .map_err(|_| {
                                ApiError::invalid_parameter(
                                    &parameter.name,
                                    format!("{} must be text", parameter.name),
                                )
                            })?
                            .to_string(),
                    ),
                    None => None,
                },
            };
            let value = match (given, &parameter.default) {
                (Some(text), _) => {
                    let value = scalar(parameter, &text)?;
                    schemas::check(&parameter.validator, &value, Some(&parameter.name))?;
                    value
                }
                (None, Some(default)) => default.clone(),
                (None, None) if parameter.required => {
                    return Err(ApiError::missing_parameter(&parameter.name))
                }
                (None, None) => continue,
            };
            values.insert(parameter.name.clone(), value);
        }
        serde_json::from_value(Value::Object(values))
            .map_err(|e| ApiError::invalid_request(format!("Invalid parameters: {e}")))
    }

    /// The JSON body of the operation `op`, checked against its schema (and its
    /// exactly-one-of rule) before it is read into `T`.
    pub async fn json_body<T: DeserializeOwned>(&mut self, op: &str) -> Result<T, ApiError> {
        let content_type =
            self.parts.headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
        let essence = content_type.split(';').next().unwrap_or_default().trim();
        if !essence.eq_ignore_ascii_case("application/json") {
            return Err(ApiError::invalid_parameter(
                "Content-Type",
                "The request body must be JSON, sent with 'Content-Type: application/json'",
            ));
        }
        let schemas = schemas::operation(op);
        let base = self.parts.extensions.get::<BodyLimit>().map_or(MAX_BODY_BYTES, |limit| limit.0);
        let (max_bytes, max_values) = match schemas.max_items {
            Some(items) => (base.max(items * BYTES_PER_ITEM), items * VALUES_PER_ITEM + 1024),
            None => (base, base / BYTES_PER_VALUE),
        };
        let body = self.body.take().expect("the body is read once");
        let bytes = read_body(body, self.content_length(), max_bytes, max_values).await?;
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::invalid_request(format!("The request body is not valid JSON: {e}"))
        })?;
        if let Some(param) = nul_at(&value, String::new()) {
            return Err(ApiError::invalid_parameter(
                param,
                "Text may not contain the NUL character (U+0000)",
            ));
        }
        exactly_one_of(&schemas.exactly_one_of, &value)?;
        if let Some(validator) = &schemas.body {
            schemas::check(validator, &value, None)?;
        }
        serde_json::from_value(value)
            .map_err(|e| ApiError::invalid_request(format!("The request body is invalid: {e}")))
    }
}

/// Where a string (or an object's key) of `value` holds a NUL character, named as
/// `files[1].path` names a place; `None` when none does. No store keeps NUL alike
/// (PostgreSQL refuses it in text and JSON), so no request may carry one. `serde_json`
/// nests values 128 deep at most, which bounds the recursion.
fn nul_at(value: &Value, at: String) -> Option<String> {
    let child = |key: &str| if at.is_empty() { key.to_string() } else { format!("{at}.{key}") };
    match value {
        Value::String(s) if s.contains('\0') => {
            Some(if at.is_empty() { "body".into() } else { at })
        }
        Value::Array(items) => {
            items.iter().enumerate().find_map(|(i, item)| nul_at(item, format!("{at}[{i}]")))
        }
        Value::Object(map) => map.iter().find_map(|(key, item)| {
            if key.contains('\0') {
                Some(child(key))
            } else {
                nul_at(item, child(key))
            }
        }),
        _ => None,
    }
}

/// Reads a JSON body of at most `max_bytes` bytes and `max_values` values, refusing it as
/// soon as it is known to be larger: from its `Content-Length`, or at the chunk that
/// goes past either limit. Nothing is parsed here.
async fn read_body(
    body: Body,
    length: Option<usize>,
    max_bytes: usize,
    max_values: usize,
) -> Result<Vec<u8>, ApiError> {
    let too_large = || {
        ApiError::invalid_request(format!(
            "The request body is larger than this operation's limit of {max_bytes} bytes"
        ))
    };
    if length.is_some_and(|length| length > max_bytes) {
        return Err(too_large());
    }
    let mut stream = body.into_data_stream();
    let (mut bytes, mut counter) =
        (Vec::with_capacity(length.unwrap_or(0)), ValueCounter::default());
    while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
        let chunk = chunk.map_err(|e| {
            ApiError::invalid_request(format!("The request body could not be read: {e}"))
        })?;
        if bytes.len() + chunk.len() > max_bytes {
            return Err(too_large());
        }
        if counter.add(&chunk) > max_values {
            return Err(ApiError::invalid_request(format!(
                "The request body holds more than this operation's limit of {max_values} JSON \
                 values"
            )));
        }
        bytes.extend_from_slice(&chunk);
    }
    if bytes.is_empty() {
        return Err(ApiError::invalid_request(
            "The request body is empty; this operation takes a JSON object",
        ));
    }
    Ok(bytes)
}

/// Counts the JSON values of a text that arrives in pieces, without parsing it: every
/// value but the first follows a `,` or opens an array or object, outside strings. (An
/// invalid text is counted too, and refused by the parser after.)
#[derive(Default)]
struct ValueCounter {
    values: usize,
    in_string: bool,
    escaped: bool,
}

impl ValueCounter {
    /// Counts `chunk`; the values so far.
    fn add(&mut self, chunk: &[u8]) -> usize {
        for &byte in chunk {
            if self.in_string {
                match byte {
                    _ if self.escaped => self.escaped = false,
                    b'\\' => self.escaped = true,
                    b'"' => self.in_string = false,
                    _ => {}
                }
            } else {
                match byte {
                    b'"' => self.in_string = true,
                    b',' | b'[' | b'{' => self.values += 1,
                    _ => {}
                }
            }
        }
        self.values + 1
    }
}

/// Whether `token` has the spec's format: `vm0_live_` and 64 lowercase hex characters.
pub fn is_token(token: &str) -> bool {
    token.strip_prefix(TOKEN_PREFIX).is_some_and(|hex| {
        hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// A raw query or header value as the JSON type its schema has.
fn scalar(parameter: &Parameter, text: &str) -> Result<Value, ApiError> {
    let name = &parameter.name;
    Ok(match parameter.scalar.as_str() {
        "integer" => Value::from(text.parse::<i64>().map_err(|_| {
            ApiError::invalid_parameter(name, format!("{name} must be an integer"))
        })?),
        "number" => text
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .ok_or_else(|| ApiError::invalid_parameter(name, format!("{name} must be a number")))?,
        "boolean" => match text {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => {
                return Err(ApiError::invalid_parameter(
                    name,
                    format!("{name} must be true or false"),
                ))
            }
        },
        _ => Value::String(text.to_string()),
    })
}

/// Exactly one of `names` must be a property of `value` (createRun's agent, agentId,
/// sessionId, checkpointId). None is `missing_parameter`; a second one is
/// `invalid_parameter` naming it.
fn exactly_one_of(names: &[String], value: &Value) -> Result<(), ApiError> {
    if names.is_empty() {
        return Ok(());
    }
    let Some(object) = value.as_object() else { return Ok(()) };
    let given: Vec<&String> = names.iter().filter(|n| object.contains_key(n.as_str())).collect();
    let list = names.join(", ");
    match given.as_slice() {
        [_] => Ok(()),
        [] => Err(ApiError {
            message: format!("Exactly one of {list} is required"),
            ..ApiError::missing_parameter(names[0].clone())
        }),
        [first, second, ..] => Err(ApiError::invalid_parameter(
            second.as_str(),
            format!("Exactly one of {list} may be given, not both {first} and {second}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::ValueCounter;

    fn count(pieces: &[&str]) -> usize {
        let mut counter = ValueCounter::default();
        pieces.iter().fold(0, |_, piece| counter.add(piece.as_bytes()))
    }

    #[test]
    fn values_are_counted_outside_strings_across_chunks() {
        assert_eq!(count(&["0"]), 1);
        assert_eq!(count(&["[0,1,2]"]), 4, "the array and its three items");
        assert_eq!(count(&[r#"{"a": [1, {"b": 2}]}"#]), 5);
        assert_eq!(
            count(&[r#"{"a": "x,[{y\",z"}"#]),
            2,
            "commas, brackets and escaped quotes in strings are text"
        );
        // `{"a": "x\"", "b": [1]}`, cut after the backslash.
        assert_eq!(
            count(&["{\"a\": \"x\\", "\"\", \"b\": [1", "]}"]),
            4,
            "an escape split across chunks"
        );
    }
}
