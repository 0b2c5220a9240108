//! `cargo xtask diff`: the changes between two versions of the spec, each one classified
//! as breaking a client written (or generated) against the old version, or not.
//!
//! The rules and their ids follow oasdiff's (see `docs/BREAKING-CHANGES.md` for where they
//! differ, and why). Every `$ref` is followed, so a change inside a shared schema is
//! reported at each place an operation reaches it, under the JSON pointer of that place
//! as written in the new spec (the old one for what was removed).
//!
//! A request is what a client sends: narrowing what the server accepts breaks it. A
//! response is what a client reads: widening what the server may send breaks it.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::{Map, Value};

use crate::spec::{self, escape_pointer, METHODS};
use crate::version::Version;

/// One change between two specs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// Whether a client of the old spec may fail against a server of the new one.
    pub breaking: bool,
    /// The rule that found it, such as `response-required-property-removed`.
    pub rule: String,
    /// Where, as a JSON pointer into the new spec (into the old one for a removal).
    pub pointer: String,
    pub message: String,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if self.breaking { "breaking" } else { "ok" };
        write!(f, "{kind:<8}  {}  {}  {}", self.rule, self.pointer, self.message)
    }
}

/// Every change from `old` to `new`, in the order of the new spec's paths.
pub fn diff(old: &Value, new: &Value) -> Vec<Change> {
    let mut differ = Differ { old, new, changes: Vec::new(), visiting: Vec::new() };
    differ.paths();
    differ.changes
}

/// Whether a value crosses the wire towards the server or back.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Request,
    Response,
}

/// Where a schema sits, which names its rules (`request-parameter-…`, `response-property-…`).
#[derive(Clone, Copy)]
struct Place<'p> {
    direction: Direction,
    /// `request-parameter`, `request-body`, `request-property`, `response-body` or
    /// `response-property`.
    subject: &'static str,
    /// The JSON pointer.
    pointer: &'p str,
    /// What holds it, as a message names it: "the query parameter `limit`", "the 200
    /// response body".
    root: &'p str,
    /// Its path inside the root, such as `data[].id`; empty for the root itself.
    path: &'p str,
}

impl<'p> Place<'p> {
    /// A property or the items of this place: the same direction and root, named as a
    /// property.
    fn child<'c>(&self, pointer: &'c str, path: &'c str) -> Place<'c>
    where
        'p: 'c,
    {
        Place { subject: property_subject(self.direction), pointer, path, ..*self }
    }

    /// How a message names it.
    fn name(&self) -> String {
        if self.path.is_empty() {
            self.root.to_string()
        } else {
            format!("the property `{}` of {}", self.path, self.root)
        }
    }
}

struct Differ<'a> {
    old: &'a Value,
    new: &'a Value,
    changes: Vec<Change>,
    /// The pairs of `$ref`s being compared, so that a recursive schema ends.
    visiting: Vec<(String, String)>,
}

fn object(value: &Value, key: &str) -> Map<String, Value> {
    value.get(key).and_then(Value::as_object).cloned().unwrap_or_default()
}

/// The string at `key`, if it is one.
fn string_of(value: &Value, key: &str) -> Option<String> {
    value.get(key).and_then(Value::as_str).map(str::to_string)
}

/// The boolean at `key`; false when there is none.
fn flag(value: &Value, key: &str) -> bool {
    value.get(key).and_then(Value::as_bool).unwrap_or(false)
}

/// Whether a schema allows no property it does not name.
fn closed(schema: &Value) -> bool {
    schema.get("additionalProperties") == Some(&Value::Bool(false))
}

/// The properties a schema requires.
fn required_names(schema: &Value) -> BTreeSet<String> {
    schema
        .get("required")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default()
}

fn push_pointer(pointer: &str, segment: &str) -> String {
    format!("{pointer}/{}", escape_pointer(segment))
}

/// A path template with its parameters' names erased, so that `/agents/{id}` and
/// `/agents/{agentId}` are the same path.
fn path_shape(path: &str) -> String {
    let mut shape = String::new();
    let mut in_name = false;
    for c in path.chars() {
        match c {
            '{' => {
                in_name = true;
                shape.push_str("{}");
            }
            '}' => in_name = false,
            c if !in_name => shape.push(c),
            _ => {}
        }
    }
    shape
}

/// The names of a path template's parameters, in order.
fn path_names(path: &str) -> Vec<String> {
    path.split('{')
        .skip(1)
        .filter_map(|rest| rest.split_once('}'))
        .map(|(name, _)| name.to_string())
        .collect()
}

/// An operation's parameters, its own over its path's, by where they go and their name
/// (a path parameter by its place in the template), with the pointer of each.
fn parameters<'v>(
    doc: &'v Value,
    path: &str,
    item: &'v Value,
    op: &'v Value,
    op_pointer: &str,
    item_pointer: &str,
) -> BTreeMap<(String, String), (String, &'v Value)> {
    let names = path_names(path);
    let mut out = BTreeMap::new();
    for (list, pointer) in [(item, item_pointer), (op, op_pointer)] {
        for (i, parameter) in
            list.get("parameters").and_then(Value::as_array).into_iter().flatten().enumerate()
        {
            let Some(parameter) = spec::deref(doc, parameter) else { continue };
            let location =
                parameter.get("in").and_then(Value::as_str).unwrap_or_default().to_string();
            let name = parameter.get("name").and_then(Value::as_str).unwrap_or_default();
            let key = match names.iter().position(|n| n == name) {
                Some(position) if location == "path" => format!("#{position}"),
                _ => name.to_string(),
            };
            out.insert((location, key), (format!("{pointer}/parameters/{i}"), parameter));
        }
    }
    out
}

/// The requirements an operation accepts, each a set of scheme names; `None` when it may
/// be called without any.
fn security(doc: &Value, op: &Value) -> Option<BTreeSet<BTreeSet<String>>> {
    let requirements = op
        .get("security")
        .or_else(|| doc.get("security"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let sets: BTreeSet<BTreeSet<String>> = requirements
        .iter()
        .map(|r| r.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default())
        .collect();
    (!sets.is_empty() && !sets.iter().any(BTreeSet::is_empty)).then_some(sets)
}

fn is_success(status: &str) -> bool {
    status.starts_with('2')
}

/// Which way a bound moved: `Some(true)` tightened (fewer values pass), `Some(false)`
/// loosened, `None` unchanged.
fn bound_moved(old: Option<f64>, new: Option<f64>, upper: bool) -> Option<(bool, &'static str)> {
    match (old, new) {
        (None, Some(_)) => Some((true, "set")),
        (Some(_), None) => Some((false, "unset")),
        (Some(a), Some(b)) if a == b => None,
        (Some(a), Some(b)) => {
            let decreased = b < a;
            Some((decreased == upper, if decreased { "decreased" } else { "increased" }))
        }
        (None, None) => None,
    }
}

/// The numeric bounds of a 3.0 schema: the keyword, its rule fragment, and whether it
/// bounds from above.
const BOUNDS: [(&str, &str, bool); 8] = [
    ("maximum", "max", true),
    ("minimum", "min", false),
    ("maxLength", "max-length", true),
    ("minLength", "min-length", false),
    ("maxItems", "max-items", true),
    ("minItems", "min-items", false),
    ("maxProperties", "max-properties", true),
    ("minProperties", "min-properties", false),
];

impl Differ<'_> {
    fn push(&mut self, breaking: bool, rule: impl Into<String>, pointer: &str, message: String) {
        self.changes.push(Change {
            breaking,
            rule: rule.into(),
            pointer: pointer.to_string(),
            message,
        });
    }

    fn paths(&mut self) {
        let (old_paths, new_paths) = (object(self.old, "paths"), object(self.new, "paths"));
        let old_by_shape: BTreeMap<String, (&String, &Value)> =
            old_paths.iter().map(|(p, item)| (path_shape(p), (p, item))).collect();
        let new_shapes: BTreeSet<String> = new_paths.keys().map(|p| path_shape(p)).collect();
        for path in old_paths.keys() {
            if !new_shapes.contains(&path_shape(path)) {
                self.push(
                    true,
                    "api-path-removed-without-deprecation",
                    &push_pointer("/paths", path),
                    format!("The path {path} was removed."),
                );
            }
        }
        for (path, new_item) in &new_paths {
            let pointer = push_pointer("/paths", path);
            let Some((old_path, old_item)) = old_by_shape.get(&path_shape(path)) else {
                self.push(false, "api-path-added", &pointer, format!("The path {path} was added."));
                continue;
            };
            let (old_item, new_item) = (
                spec::deref(self.old, old_item).unwrap_or(old_item),
                spec::deref(self.new, new_item).unwrap_or(new_item),
            );
            let old_pointer = push_pointer("/paths", old_path);
            for method in METHODS {
                let op_pointer = format!("{pointer}/{method}");
                let shown = format!("{} {path}", method.to_uppercase());
                match (old_item.get(method), new_item.get(method)) {
                    (Some(_), None) => self.push(
                        true,
                        "api-removed-without-deprecation",
                        &format!("{old_pointer}/{method}"),
                        format!("The operation {shown} was removed."),
                    ),
                    (None, Some(_)) => self.push(
                        false,
                        "endpoint-added",
                        &op_pointer,
                        format!("The operation {shown} was added."),
                    ),
                    (Some(old_op), Some(new_op)) => {
                        let old_params = parameters(
                            self.old,
                            old_path,
                            old_item,
                            old_op,
                            &format!("{old_pointer}/{method}"),
                            &old_pointer,
                        );
                        let new_params =
                            parameters(self.new, path, new_item, new_op, &op_pointer, &pointer);
                        self.security(old_op, new_op, &op_pointer, &shown);
                        self.parameters(&old_params, &new_params);
                        self.request_body(old_op, new_op, &op_pointer);
                        self.responses(old_op, new_op, &op_pointer);
                    }
                    (None, None) => {}
                }
            }
        }
    }

    fn security(&mut self, old_op: &Value, new_op: &Value, pointer: &str, shown: &str) {
        let pointer = format!("{pointer}/security");
        let names = |requirement: &BTreeSet<String>| {
            requirement.iter().map(String::as_str).collect::<Vec<_>>().join(" + ")
        };
        match (security(self.old, old_op), security(self.new, new_op)) {
            (None, Some(_)) => self.push(
                true,
                "api-security-added",
                &pointer,
                format!("{shown} now requires authentication."),
            ),
            (Some(_), None) => self.push(
                false,
                "api-security-made-optional",
                &pointer,
                format!("{shown} no longer requires authentication."),
            ),
            (Some(old), Some(new)) => {
                for gone in old.difference(&new) {
                    self.push(
                        true,
                        "api-security-removed",
                        &pointer,
                        format!(
                            "{shown} no longer accepts the security requirement {}.",
                            names(gone)
                        ),
                    );
                }
                for added in new.difference(&old) {
                    self.push(
                        false,
                        "api-security-alternative-added",
                        &pointer,
                        format!("{shown} also accepts the security requirement {}.", names(added)),
                    );
                }
            }
            (None, None) => {}
        }
    }

    fn parameters(
        &mut self,
        old: &BTreeMap<(String, String), (String, &Value)>,
        new: &BTreeMap<(String, String), (String, &Value)>,
    ) {
        let name_of =
            |p: &Value| p.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
        let required = |p: &Value| p.get("required").and_then(Value::as_bool).unwrap_or(false);
        for ((location, _), (pointer, parameter)) in
            old.iter().filter(|(k, _)| !new.contains_key(*k))
        {
            // The server refuses a query parameter it does not know, so one removed breaks
            // the clients that send it.
            let message = format!("The {location} parameter `{}` was removed.", name_of(parameter));
            self.push(location == "query", "request-parameter-removed", pointer, message);
        }
        for (key, (pointer, parameter)) in new {
            let (location, name) = (&key.0, name_of(parameter));
            let Some((_, old_parameter)) = old.get(key) else {
                if required(parameter) {
                    self.push(
                        true,
                        "new-required-request-parameter",
                        pointer,
                        format!("The required {location} parameter `{name}` was added."),
                    );
                } else {
                    self.push(
                        false,
                        "new-optional-request-parameter",
                        pointer,
                        format!("The optional {location} parameter `{name}` was added."),
                    );
                }
                continue;
            };
            match (required(old_parameter), required(parameter)) {
                (false, true) => self.push(
                    true,
                    "request-parameter-became-required",
                    pointer,
                    format!("The {location} parameter `{name}` became required."),
                ),
                (true, false) => self.push(
                    false,
                    "request-parameter-became-optional",
                    pointer,
                    format!("The {location} parameter `{name}` became optional."),
                ),
                _ => {}
            }
            let (Some(old_schema), Some(new_schema)) =
                (old_parameter.get("schema"), parameter.get("schema"))
            else {
                continue;
            };
            let shown = format!("the {location} parameter `{name}`");
            let schema_pointer = format!("{pointer}/schema");
            let place = Place {
                direction: Direction::Request,
                subject: "request-parameter",
                pointer: &schema_pointer,
                root: &shown,
                path: "",
            };
            self.schema(place, old_schema, new_schema);
        }
    }

    fn request_body(&mut self, old_op: &Value, new_op: &Value, op_pointer: &str) {
        let pointer = format!("{op_pointer}/requestBody");
        let body = |doc: &Value, op: &Value| {
            op.get("requestBody").and_then(|b| spec::deref(doc, b)).cloned()
        };
        let required = |b: &Value| b.get("required").and_then(Value::as_bool).unwrap_or(false);
        let (old, new) = match (body(self.old, old_op), body(self.new, new_op)) {
            (None, None) => return,
            (None, Some(new)) => {
                let (breaking, rule) = if required(&new) {
                    (true, "request-body-added-required")
                } else {
                    (false, "request-body-added-optional")
                };
                self.push(breaking, rule, &pointer, "A request body was added.".into());
                return;
            }
            (Some(_), None) => {
                self.push(
                    true,
                    "request-body-removed",
                    &pointer,
                    "The request body was removed.".into(),
                );
                return;
            }
            (Some(old), Some(new)) => (old, new),
        };
        match (required(&old), required(&new)) {
            (false, true) => self.push(
                true,
                "request-body-became-required",
                &pointer,
                "The request body became required.".into(),
            ),
            (true, false) => self.push(
                false,
                "request-body-became-optional",
                &pointer,
                "The request body became optional.".into(),
            ),
            _ => {}
        }
        self.media(Direction::Request, &old, &new, &pointer, "request-body", "the request body");
    }

    fn responses(&mut self, old_op: &Value, new_op: &Value, op_pointer: &str) {
        let pointer = format!("{op_pointer}/responses");
        let (old, new) = (object(old_op, "responses"), object(new_op, "responses"));
        for status in old.keys().filter(|s| !new.contains_key(*s)) {
            let (breaking, rule) = if is_success(status) {
                (true, "response-success-status-removed")
            } else {
                (false, "response-non-success-status-removed")
            };
            self.push(
                breaking,
                rule,
                &push_pointer(&pointer, status),
                format!("The response status {status} was removed."),
            );
        }
        for (status, new_response) in &new {
            let status_pointer = push_pointer(&pointer, status);
            let Some(old_response) = old.get(status) else {
                let rule = if is_success(status) {
                    "response-success-status-added"
                } else {
                    "response-non-success-status-added"
                };
                self.push(
                    false,
                    rule,
                    &status_pointer,
                    format!("The response status {status} was added."),
                );
                continue;
            };
            let (Some(old_response), Some(new_response)) =
                (spec::deref(self.old, old_response), spec::deref(self.new, new_response))
            else {
                continue;
            };
            let (old_response, new_response) = (old_response.clone(), new_response.clone());
            self.headers(&old_response, &new_response, &status_pointer, status);
            self.media(
                Direction::Response,
                &old_response,
                &new_response,
                &status_pointer,
                "response-body",
                &format!("the {status} response body"),
            );
        }
    }

    /// Compares the headers of a response: a client may rely on one the spec promised.
    fn headers(&mut self, old: &Value, new: &Value, pointer: &str, status: &str) {
        let (old_headers, new_headers) = (object(old, "headers"), object(new, "headers"));
        let required = |doc: &Value, h: &Value| {
            spec::deref(doc, h)
                .and_then(|h| h.get("required"))
                .and_then(Value::as_bool)
                .unwrap_or(false)
        };
        let headers_pointer = format!("{pointer}/headers");
        for (name, header) in old_headers
            .iter()
            .filter(|(n, _)| !new_headers.keys().any(|k| k.eq_ignore_ascii_case(n)))
        {
            let header_pointer = push_pointer(&headers_pointer, name);
            if required(self.old, header) {
                self.push(
                    true,
                    "required-response-header-removed",
                    &header_pointer,
                    format!("The required header {name} of the {status} response was removed."),
                );
            } else {
                self.push(
                    false,
                    "optional-response-header-removed",
                    &header_pointer,
                    format!("The optional header {name} of the {status} response was removed."),
                );
            }
        }
        for (name, header) in &new_headers {
            let Some(old_header) =
                old_headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, h)| h)
            else {
                continue;
            };
            let header_pointer = push_pointer(&headers_pointer, name);
            if required(self.old, old_header) && !required(self.new, header) {
                self.push(
                    true,
                    "response-header-became-optional",
                    &header_pointer,
                    format!("The header {name} of the {status} response became optional."),
                );
            }
            let schema =
                |doc: &Value, h: &Value| spec::deref(doc, h).and_then(|h| h.get("schema")).cloned();
            if let (Some(old_schema), Some(new_schema)) =
                (schema(self.old, old_header), schema(self.new, header))
            {
                let (schema_pointer, shown) = (
                    format!("{header_pointer}/schema"),
                    format!("the header {name} of the {status} response"),
                );
                let place = Place {
                    direction: Direction::Response,
                    subject: "response-header",
                    pointer: &schema_pointer,
                    root: &shown,
                    path: "",
                };
                self.schema(place, &old_schema, &new_schema);
            }
        }
    }

    /// Compares the media types of a request body or a response, and the schema of each.
    fn media(
        &mut self,
        direction: Direction,
        old: &Value,
        new: &Value,
        pointer: &str,
        subject: &'static str,
        shown: &str,
    ) {
        let (old_content, new_content) = (object(old, "content"), object(new, "content"));
        let rule = match direction {
            Direction::Request => "request-body-media-type",
            Direction::Response => "response-media-type",
        };
        let content_pointer = format!("{pointer}/content");
        for media in old_content.keys().filter(|m| !new_content.contains_key(*m)) {
            self.push(
                true,
                format!("{rule}-removed"),
                &push_pointer(&content_pointer, media),
                format!("The media type {media} of {shown} was removed."),
            );
        }
        for (media, new_media) in &new_content {
            let media_pointer = push_pointer(&content_pointer, media);
            let Some(old_media) = old_content.get(media) else {
                self.push(
                    false,
                    format!("{rule}-added"),
                    &media_pointer,
                    format!("The media type {media} of {shown} was added."),
                );
                continue;
            };
            let schema_pointer = format!("{media_pointer}/schema");
            let (old_schema, new_schema) = match (old_media.get("schema"), new_media.get("schema"))
            {
                (Some(old_schema), Some(new_schema)) => (old_schema, new_schema),
                (None, Some(_)) => {
                    self.push(
                        direction == Direction::Request,
                        format!("{subject}-media-type-schema-added"),
                        &schema_pointer,
                        format!("The {media} body of {shown} now has a schema."),
                    );
                    continue;
                }
                (Some(_), None) => {
                    self.push(
                        direction == Direction::Response,
                        format!("{subject}-media-type-schema-removed"),
                        &schema_pointer,
                        format!("The {media} body of {shown} no longer has a schema."),
                    );
                    continue;
                }
                (None, None) => continue,
            };
            self.schema(
                Place { direction, subject, pointer: &schema_pointer, root: shown, path: "" },
                old_schema,
                new_schema,
            );
            // An event stream's body is text; its events are compared as bodies of their own.
            if let (Some(old_event), Some(new_event)) =
                (old_schema.get("x-event-schema"), new_schema.get("x-event-schema"))
            {
                let (event_pointer, root) =
                    (format!("{schema_pointer}/x-event-schema"), format!("each event of {shown}"));
                self.schema(
                    Place { direction, subject, pointer: &event_pointer, root: &root, path: "" },
                    old_event,
                    new_event,
                );
            }
        }
    }

    /// Compares two schemas at `place`, following `$ref`s on both sides.
    fn schema(&mut self, place: Place<'_>, old: &Value, new: &Value) {
        let refs =
            (old.get("$ref").and_then(Value::as_str), new.get("$ref").and_then(Value::as_str));
        let visit = match refs {
            (Some(a), Some(b)) => Some((a.to_string(), b.to_string())),
            _ => None,
        };
        if let Some(pair) = &visit {
            if self.visiting.contains(pair) {
                return;
            }
            self.visiting.push(pair.clone());
        }
        match (spec::deref(self.old, old), spec::deref(self.new, new)) {
            (Some(old), Some(new)) => self.schema_resolved(place, old, new),
            // Nothing past a reference that leads nowhere can be compared, so nothing may
            // be assumed about it.
            _ => self.push(
                true,
                "schema-ref-unresolved",
                place.pointer,
                format!("A $ref of {} does not resolve, so it cannot be compared.", place.name()),
            ),
        }
        if visit.is_some() {
            self.visiting.pop();
        }
    }

    /// Compares two schemas past their `$ref`s, keyword by keyword, in the order their
    /// changes are reported.
    fn schema_resolved(&mut self, place: Place<'_>, old: &Value, new: &Value) {
        if self.became_choice(place, old, new) {
            return;
        }
        self.closed_to_unknown(place, old, new);
        self.type_and_format(place, old, new);
        self.nullability(place, old, new);
        self.enumeration(place, old, new);
        self.bounds(place, old, new);
        self.unique_items(place, old, new);
        self.multiple_of(place, old, new);
        self.pattern(place, old, new);
        self.properties(place, old, new);
        self.nested(place, old, new);
    }

    /// A schema made a choice: a request that was valid may match no branch, a response
    /// may lack what every value had. What the branches hold is no longer comparable with
    /// the old schema, so the caller reports nothing more when this returns true.
    fn became_choice(&mut self, place: Place<'_>, old: &Value, new: &Value) -> bool {
        let Place { subject, pointer, .. } = place;
        for (keyword, fragment) in [("oneOf", "one-of"), ("anyOf", "any-of")] {
            if let (None, Some(branches)) =
                (old.get(keyword), new.get(keyword).and_then(Value::as_array))
            {
                self.push(
                    true,
                    format!("{subject}-wrapped-in-{fragment}"),
                    &format!("{pointer}/{keyword}"),
                    format!(
                        "{} became {} {keyword} of {} schemas.",
                        capital(&place.name()),
                        if keyword == "anyOf" { "an" } else { "a" },
                        branches.len()
                    ),
                );
                return true;
            }
        }
        false
    }

    /// A server that refuses unknown properties refuses what clients may have sent.
    fn closed_to_unknown(&mut self, place: Place<'_>, old: &Value, new: &Value) {
        if place.direction == Direction::Request
            && !closed(old)
            && closed(new)
            && (old.get("properties").is_some()
                || string_of(old, "type").as_deref() == Some("object"))
        {
            self.push(
                true,
                format!("{}-additional-properties-disallowed", place.subject),
                place.pointer,
                format!("{} no longer allows properties it does not name.", capital(&place.name())),
            );
        }
    }

    /// Type and format: a client may fail on any value of another type.
    fn type_and_format(&mut self, place: Place<'_>, old: &Value, new: &Value) {
        let request = place.direction == Direction::Request;
        let Place { subject, pointer, .. } = place;
        let name = &place.name();
        let (old_type, new_type) = (string_of(old, "type"), string_of(new, "type"));
        if old_type != new_type {
            // Widened: every value of the old type is one of the new (integer to number, or
            // to any type); narrowed the other way round.
            let kind = match (old_type.as_deref(), new_type.as_deref()) {
                (Some("integer"), Some("number")) | (Some(_), None) => "generalized",
                (Some("number"), Some("integer")) | (None, Some(_)) => "specialized",
                _ => "changed",
            };
            let breaking = match kind {
                "generalized" => !request,
                "specialized" => request,
                _ => true,
            };
            let shown = |t: &Option<String>| t.clone().unwrap_or_else(|| "any".into());
            self.push(
                breaking,
                format!("{subject}-type-{kind}"),
                pointer,
                format!(
                    "The type of {name} changed from {} to {}.",
                    shown(&old_type),
                    shown(&new_type)
                ),
            );
        }
        let (old_format, new_format) = (string_of(old, "format"), string_of(new, "format"));
        if old_format != new_format {
            // A format added narrows what passes, one removed widens it.
            let narrowed = old_format.is_none();
            let breaking = if old_format.is_some() && new_format.is_some() {
                true
            } else {
                narrowed == request
            };
            let shown = |f: &Option<String>| f.clone().unwrap_or_else(|| "none".into());
            self.push(
                breaking,
                format!("{subject}-format-changed"),
                pointer,
                format!(
                    "The format of {name} changed from {} to {}.",
                    shown(&old_format),
                    shown(&new_format)
                ),
            );
        }
    }

    fn nullability(&mut self, place: Place<'_>, old: &Value, new: &Value) {
        let request = place.direction == Direction::Request;
        let Place { subject, pointer, .. } = place;
        match (flag(old, "nullable"), flag(new, "nullable")) {
            (false, true) => self.push(
                !request,
                format!("{subject}-became-nullable"),
                pointer,
                format!("{} may now be null.", capital(&place.name())),
            ),
            (true, false) => self.push(
                request,
                format!("{subject}-became-not-nullable"),
                pointer,
                format!("{} may no longer be null.", capital(&place.name())),
            ),
            _ => {}
        }
    }

    /// The bounds on a number, a length or a count of items, and whether they are
    /// exclusive.
    fn bounds(&mut self, place: Place<'_>, old: &Value, new: &Value) {
        let request = place.direction == Direction::Request;
        let Place { subject, pointer, .. } = place;
        let name = &place.name();
        for (keyword, fragment, upper) in BOUNDS {
            let number = |v: &Value| v.get(keyword).and_then(Value::as_f64);
            if let Some((tightened, how)) = bound_moved(number(old), number(new), upper) {
                let message = format!(
                    "The {keyword} of {name} was {how} ({} to {}).",
                    shown_number(old.get(keyword)),
                    shown_number(new.get(keyword))
                );
                self.push(
                    tightened == request,
                    format!("{subject}-{fragment}-{how}"),
                    pointer,
                    message,
                );
            }
        }
        for (keyword, fragment) in
            [("exclusiveMaximum", "exclusive-max"), ("exclusiveMinimum", "exclusive-min")]
        {
            match (flag(old, keyword), flag(new, keyword)) {
                (false, true) => self.push(
                    request,
                    format!("{subject}-{fragment}-set"),
                    pointer,
                    format!("The bound of {name} became exclusive ({keyword})."),
                ),
                (true, false) => self.push(
                    !request,
                    format!("{subject}-{fragment}-unset"),
                    pointer,
                    format!("The bound of {name} is no longer exclusive ({keyword})."),
                ),
                _ => {}
            }
        }
    }

    fn unique_items(&mut self, place: Place<'_>, old: &Value, new: &Value) {
        let request = place.direction == Direction::Request;
        let Place { subject, pointer, .. } = place;
        let name = &place.name();
        match (flag(old, "uniqueItems"), flag(new, "uniqueItems")) {
            (false, true) => self.push(
                request,
                format!("{subject}-unique-items-set"),
                pointer,
                format!("The items of {name} must now be unique."),
            ),
            (true, false) => self.push(
                !request,
                format!("{subject}-unique-items-unset"),
                pointer,
                format!("The items of {name} no longer have to be unique."),
            ),
            _ => {}
        }
    }

    fn multiple_of(&mut self, place: Place<'_>, old: &Value, new: &Value) {
        let request = place.direction == Direction::Request;
        let Place { subject, pointer, .. } = place;
        let name = &place.name();
        let multiple = |v: &Value| v.get("multipleOf").and_then(Value::as_f64);
        match (multiple(old), multiple(new)) {
            (None, Some(m)) => self.push(
                request,
                format!("{subject}-multiple-of-set"),
                pointer,
                format!("{} must now be a multiple of {m}.", capital(name)),
            ),
            (Some(m), None) => self.push(
                !request,
                format!("{subject}-multiple-of-unset"),
                pointer,
                format!("{} no longer has to be a multiple of {m}.", capital(name)),
            ),
            // A request still passes when the new step divides the old; a response when
            // the new step is a multiple of the old.
            (Some(a), Some(b)) if a != b => {
                let compatible = if request { a % b == 0.0 } else { b % a == 0.0 };
                self.push(
                    !compatible,
                    format!("{subject}-multiple-of-changed"),
                    pointer,
                    format!("The multipleOf of {name} changed from {a} to {b}."),
                );
            }
            _ => {}
        }
    }

    fn pattern(&mut self, place: Place<'_>, old: &Value, new: &Value) {
        let request = place.direction == Direction::Request;
        let Place { subject, pointer, .. } = place;
        let name = &place.name();
        match (string_of(old, "pattern"), string_of(new, "pattern")) {
            (None, Some(p)) => self.push(
                request,
                format!("{subject}-pattern-added"),
                pointer,
                format!("{} must now match the pattern {p}.", capital(name)),
            ),
            (Some(p), None) => self.push(
                !request,
                format!("{subject}-pattern-removed"),
                pointer,
                format!("{} no longer has to match the pattern {p}.", capital(name)),
            ),
            (Some(a), Some(b)) if a != b => self.push(
                true,
                format!("{subject}-pattern-changed"),
                pointer,
                format!("The pattern of {name} changed from {a} to {b}."),
            ),
            _ => {}
        }
    }

    /// The schemas inside: the items of an array, the values of a map, and the branches of
    /// a composition.
    fn nested(&mut self, place: Place<'_>, old: &Value, new: &Value) {
        let pointer = place.pointer;
        if let (Some(old_items), Some(new_items)) = (old.get("items"), new.get("items")) {
            let (items_pointer, items_path) =
                (format!("{pointer}/items"), format!("{}[]", place.path));
            self.schema(place.child(&items_pointer, &items_path), old_items, new_items);
        }
        if let (Some(old_extra @ Value::Object(_)), Some(new_extra @ Value::Object(_))) =
            (old.get("additionalProperties"), new.get("additionalProperties"))
        {
            let (extra_pointer, extra_path) =
                (format!("{pointer}/additionalProperties"), child_path(place.path, "*"));
            self.schema(place.child(&extra_pointer, &extra_path), old_extra, new_extra);
        }
        for keyword in ["oneOf", "anyOf", "allOf"] {
            self.composition(place, keyword, old, new);
        }
    }

    fn enumeration(&mut self, place: Place<'_>, old: &Value, new: &Value) {
        let request = place.direction == Direction::Request;
        let Place { subject, pointer, .. } = place;
        let name = &place.name();
        let values = |v: &Value| {
            v.get("enum")
                .and_then(Value::as_array)
                .map(|a| a.iter().map(Value::to_string).collect::<BTreeSet<String>>())
        };
        match (values(old), values(new)) {
            (None, Some(_)) => self.push(
                request,
                format!("{subject}-became-enum"),
                pointer,
                format!("{} became an enumeration.", capital(name)),
            ),
            (Some(_), None) => self.push(
                !request,
                format!("{subject}-became-not-enum"),
                pointer,
                format!("{} is no longer an enumeration.", capital(name)),
            ),
            (Some(old_values), Some(new_values)) => {
                for value in old_values.difference(&new_values) {
                    self.push(
                        request,
                        format!("{subject}-enum-value-removed"),
                        pointer,
                        format!("The value {value} was removed from {name}."),
                    );
                }
                // A client that maps the enumeration to a type of its own fails on a value
                // it does not know, unless the router sends it an older value instead
                // (x-since and x-fallback, on the error envelope's enumerations).
                for value in new_values.difference(&old_values) {
                    if !request && self.falls_back(new, value, &old_values) {
                        self.push(
                            false,
                            format!("{subject}-enum-value-added-since"),
                            pointer,
                            format!(
                                "The value {value} was added to {name}, for clients of a later \
                                 version than the old spec's only (x-since, x-fallback)."
                            ),
                        );
                        continue;
                    }
                    self.push(
                        !request,
                        format!("{subject}-enum-value-added"),
                        pointer,
                        format!("The value {value} was added to {name}."),
                    );
                }
            }
            (None, None) => {}
        }
    }

    fn properties(&mut self, place: Place<'_>, old: &Value, new: &Value) {
        let (old_props, new_props) = (object(old, "properties"), object(new, "properties"));
        if old_props.is_empty() && new_props.is_empty() {
            return;
        }
        let (old_required, new_required) = (required_names(old), required_names(new));
        let props_pointer = format!("{}/properties", place.pointer);
        for property in old_props.keys().filter(|p| !new_props.contains_key(*p)) {
            let (pointer, path) =
                (push_pointer(&props_pointer, property), child_path(place.path, property));
            let required = old_required.contains(property);
            self.property_removed(place.child(&pointer, &path), required, closed(new));
        }
        for (property, new_schema) in &new_props {
            let (pointer, path) =
                (push_pointer(&props_pointer, property), child_path(place.path, property));
            let at = place.child(&pointer, &path);
            let required = (old_required.contains(property), new_required.contains(property));
            let Some(old_schema) = old_props.get(property) else {
                self.property_added(at, required.1, old, new, property);
                continue;
            };
            self.property_required(at, required);
            self.property_since(at, old, new, property);
            self.schema(at, old_schema, new_schema);
        }
    }

    /// A property of the old schema that the new one no longer names; `closed` when the
    /// new schema allows no property it does not name.
    fn property_removed(&mut self, at: Place<'_>, required: bool, closed: bool) {
        let shown = at.name();
        // "property `x` of the request body", for "The required … was removed."
        let noun = shown.trim_start_matches("the ");
        match at.direction {
            // A server that refuses unknown properties refuses it now.
            Direction::Request => self.push(
                closed,
                "request-property-removed",
                at.pointer,
                format!("{} was removed.", capital(&shown)),
            ),
            Direction::Response if required => self.push(
                true,
                "response-required-property-removed",
                at.pointer,
                format!("The required {} was removed.", noun),
            ),
            Direction::Response => self.push(
                false,
                "response-optional-property-removed",
                at.pointer,
                format!("The optional {} was removed.", noun),
            ),
        }
    }

    /// A property of the `new` schema that the `old` one did not name.
    fn property_added(
        &mut self,
        at: Place<'_>,
        required: bool,
        old: &Value,
        new: &Value,
        property: &str,
    ) {
        let shown = at.name();
        // "property `x` of the request body", for "The required … was added."
        let noun = shown.trim_start_matches("the ");
        let pointer = at.pointer;
        match at.direction {
            Direction::Request if required => self.push(
                true,
                "new-required-request-property",
                pointer,
                format!("The required {} was added.", noun),
            ),
            Direction::Request => self.push(
                false,
                "new-optional-request-property",
                pointer,
                format!("The optional {} was added.", noun),
            ),
            // The router leaves such a property out for clients of the old
            // version, which do not see it.
            Direction::Response if closed(old) && self.added_since_old(new, property) => self.push(
                false,
                "response-property-added-since",
                pointer,
                format!(
                    "{} was added, for clients of a later version than the old spec's \
                     only (x-since).",
                    capital(&shown)
                ),
            ),
            // A client generated from a closed schema refuses a property it was
            // told cannot be there (typify's `deny_unknown_fields`, for one).
            Direction::Response if closed(old) => self.push(
                true,
                "response-property-added-to-closed-schema",
                pointer,
                format!(
                    "{} was added to a schema that allowed no other properties.",
                    capital(&shown)
                ),
            ),
            Direction::Response => self.push(
                false,
                "response-property-added",
                pointer,
                format!("{} was added.", capital(&shown)),
            ),
        }
    }

    /// A property both schemas name that one requires and the other does not; `required`
    /// is whether the old and the new schema require it. A request property made required
    /// breaks clients that leave it out; a response property made optional breaks clients
    /// that count on it.
    fn property_required(&mut self, at: Place<'_>, (old, new): (bool, bool)) {
        if old == new {
            return;
        }
        let request = at.direction == Direction::Request;
        let side = if request { "request" } else { "response" };
        let became = if new { "required" } else { "optional" };
        self.push(
            new == request,
            format!("{side}-property-became-{became}"),
            at.pointer,
            format!("{} became {became}.", capital(&at.name())),
        );
    }

    /// The router gives a response property to the callers its x-since names: with another
    /// version there, a client of a version in between sees a property of its version
    /// vanish, or one it does not know appear.
    fn property_since(&mut self, at: Place<'_>, old: &Value, new: &Value, property: &str) {
        if at.direction == Direction::Request {
            return;
        }
        let (old_since, new_since) = (spec::since(old, property), spec::since(new, property));
        if old_since != new_since {
            let shown = at.name();
            let noun = shown.trim_start_matches("the ");
            let (from, to) = (old_since.unwrap_or("none"), new_since.unwrap_or("none"));
            self.push(
                true,
                "response-property-since-changed",
                at.pointer,
                format!("The x-since of {noun} changed from {from} to {to}."),
            );
        }
    }

    /// Whether clients of the old spec never see the enumeration value `quoted` (JSON, as
    /// `enumeration` compares values) of the new `schema`: it is added since a later
    /// version, and falls back for older clients to a value they know.
    fn falls_back(&self, schema: &Value, quoted: &str, old_values: &BTreeSet<String>) -> bool {
        let Ok(Value::String(value)) = serde_json::from_str::<Value>(quoted) else {
            return false;
        };
        let fallback = schema.get(spec::FALLBACK).and_then(|f| f.get(&value));
        self.added_since_old(schema, &value)
            && fallback.is_some_and(|f| old_values.contains(&f.to_string()))
    }

    /// Whether the new `schema`'s `x-since` gives `property` a version later than the old
    /// spec's `info.version`.
    fn added_since_old(&self, schema: &Value, property: &str) -> bool {
        let version = |v: Option<&str>| v.and_then(|v| v.parse::<Version>().ok());
        let old = version(self.old.pointer("/info/version").and_then(Value::as_str));
        let since = version(spec::since(schema, property));
        matches!((old, since), (Some(old), Some(since)) if since > old)
    }

    /// Compares `oneOf`, `anyOf` or `allOf` branches, matched by the schema they name, or
    /// by place when they name none.
    fn composition(&mut self, place: Place<'_>, keyword: &str, old: &Value, new: &Value) {
        let branches =
            |v: &Value| v.get(keyword).and_then(Value::as_array).cloned().unwrap_or_default();
        let (old_branches, new_branches) = (branches(old), branches(new));
        if old_branches.is_empty() && new_branches.is_empty() {
            return;
        }
        let key = |i: usize, b: &Value| {
            b.get("$ref").and_then(Value::as_str).map_or_else(|| format!("#{i}"), str::to_string)
        };
        let old_keyed: BTreeMap<String, &Value> =
            old_branches.iter().enumerate().map(|(i, b)| (key(i, b), b)).collect();
        let new_keyed: BTreeMap<String, &Value> =
            new_branches.iter().enumerate().map(|(i, b)| (key(i, b), b)).collect();
        let fragment = match keyword {
            "oneOf" => "one-of",
            "anyOf" => "any-of",
            _ => "all-of",
        };
        // A request passes fewer values with a oneOf or anyOf branch removed, or an allOf
        // branch added; a response may hold more with the opposite.
        let request = place.direction == Direction::Request;
        let narrows_when_added = keyword == "allOf";
        let pointer = format!("{}/{keyword}", place.pointer);
        for (k, _) in old_keyed.iter().filter(|(k, _)| !new_keyed.contains_key(*k)) {
            let breaking = request != narrows_when_added;
            self.push(
                breaking,
                format!("{}-{fragment}-removed", place.subject),
                &pointer,
                format!("The {keyword} branch {k} of {} was removed.", place.name()),
            );
        }
        for (i, branch) in new_branches.iter().enumerate() {
            let k = key(i, branch);
            let branch_pointer = format!("{pointer}/{i}");
            match old_keyed.get(&k) {
                None => {
                    let breaking = request == narrows_when_added;
                    self.push(
                        breaking,
                        format!("{}-{fragment}-added", place.subject),
                        &branch_pointer,
                        format!("The {keyword} branch {k} was added to {}.", place.name()),
                    );
                }
                Some(old_branch) => {
                    self.schema(Place { pointer: &branch_pointer, ..place }, old_branch, branch)
                }
            }
        }
    }
}

fn child_path(path: &str, property: &str) -> String {
    if path.is_empty() {
        property.to_string()
    } else {
        format!("{path}.{property}")
    }
}

fn property_subject(direction: Direction) -> &'static str {
    match direction {
        Direction::Request => "request-property",
        Direction::Response => "response-property",
    }
}

fn capital(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

fn shown_number(value: Option<&Value>) -> String {
    value.map_or_else(|| "none".into(), Value::to_string)
}

/// Loads a spec from `source`: a file (YAML or JSON), or else a git revision, whose
/// `openapi/v1.yaml` is read.
pub fn load(source: &str) -> anyhow::Result<Value> {
    use anyhow::Context;
    let text = if std::path::Path::new(source).is_file() {
        std::fs::read_to_string(source).with_context(|| format!("reading {source}"))?
    } else {
        let shown = format!("{source}:{}", spec::SPEC_PATH);
        let output = std::process::Command::new("git")
            .args(["show", &shown])
            .current_dir(spec::workspace_root())
            .output()
            .context("running git")?;
        if !output.status.success() {
            anyhow::bail!(
                "{source} is neither a file nor a git revision with {}: {}",
                spec::SPEC_PATH,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        String::from_utf8(output.stdout).with_context(|| format!("{shown} is not UTF-8"))?
    };
    spec::parse(&text).with_context(|| format!("parsing {source}"))
}

/// How `cargo xtask diff` prints its changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A line per change: breaking or ok, its rule, its pointer and a message.
    Text,
    /// An array of the changes, each with `breaking`, `rule`, `pointer` and `message`.
    Json,
    /// Breaking changes, then the others, as CHANGELOG.md lists them.
    Markdown,
}

/// The changes in `format`.
pub fn render(changes: &[Change], format: Format) -> String {
    match format {
        Format::Text if changes.is_empty() => "no changes\n".into(),
        Format::Text => changes.iter().map(|c| format!("{c}\n")).collect(),
        Format::Json => serde_json::to_string_pretty(changes).expect("changes serialize") + "\n",
        Format::Markdown => markdown(changes, |_| None),
    }
}

/// The changes as a changelog section: breaking ones first, each with the `reason` a
/// breaking change was accepted for, where there is one.
pub fn markdown<'a>(
    changes: &'a [Change],
    reason: impl Fn(&'a Change) -> Option<&'a str>,
) -> String {
    let mut out = String::new();
    for (breaking, title) in [(true, "Breaking changes"), (false, "Other changes")] {
        let listed: Vec<&Change> = changes.iter().filter(|c| c.breaking == breaking).collect();
        if listed.is_empty() {
            continue;
        }
        out.push_str(&format!("### {title}\n\n"));
        for change in listed {
            out.push_str(&format!(
                "- {} (`{}` at `{}`)\n",
                change.message, change.rule, change.pointer
            ));
            if let Some(reason) = reason(change) {
                out.push_str(&format!("  Accepted without a major version: {}\n", reason.trim()));
            }
        }
        out.push('\n');
    }
    if out.is_empty() {
        out.push_str("No changes to the API.\n\n");
    }
    out
}
