//! The version of the spec a client was written against, from its `api-version` header,
//! and the response properties added after it, which the router leaves out.
//!
//! Clients generated from the spec send its `info.version` as `api-version` on every
//! request (progenitor's do), and many refuse properties their schema does not list
//! (typify's `deny_unknown_fields`). The spec marks each property added after the first
//! version with `x-since`; `cargo xtask codegen` lists them per operation in
//! `generated.json`, and [`Omitted`] takes out those a caller's version does not know.

use axum::http::HeaderValue;
use serde_json::Value;

use crate::error::ApiError;
use crate::schemas;

/// The request header that names the caller's version.
pub(crate) const HEADER: &str = "api-version";

/// A version of the spec, `MAJOR.MINOR.PATCH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
}

impl Version {
    /// `1.1.0` as a version; `None` for anything else.
    pub fn parse(text: &str) -> Option<Version> {
        let mut parts = text.split('.').map(|part| (!part.is_empty() && part.bytes().all(|b| b.is_ascii_digit())).then(|| part.parse().ok()).flatten());
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(Some(major)), Some(Some(minor)), Some(Some(patch)), None) => Some(Version { major, minor, patch }),
            _ => None,
        }
    }

    /// The version the caller names in `header`, or `None` without one: the caller then
    /// gets every property. A value that is not a version of this API is a 400.
    pub(crate) fn of_caller(header: Option<&HeaderValue>) -> Result<Option<Version>, ApiError> {
        let Some(value) = header else { return Ok(None) };
        match value.to_str().ok().and_then(Version::parse) {
            Some(version) if version.major == 1 => Ok(Some(version)),
            _ => Err(ApiError::invalid_parameter(HEADER, "api-version must be a version of this API, 1.MINOR.PATCH (such as 1.1.0)")),
        }
    }
}

/// One step of the way to a property in a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// The property of this name.
    Property(String),
    /// Every item of an array.
    Items,
    /// The same object, only when its property `.0` is the string `.1` (a branch of a
    /// discriminated union).
    Tagged(String, String),
}

impl Step {
    /// A step as `generated.json` writes it: a name, `[]`, or `?tag=value`.
    pub(crate) fn parse(text: &str) -> Step {
        match text {
            "[]" => Step::Items,
            _ => match text.strip_prefix('?').and_then(|t| t.split_once('=')) {
                Some((tag, value)) => Step::Tagged(tag.to_string(), value.to_string()),
                None => Step::Property(text.to_string()),
            },
        }
    }
}

/// A response property added in a version after the first.
#[derive(Debug)]
pub(crate) struct Added {
    pub path: Vec<Step>,
    pub since: Version,
}

/// The properties to leave out of one operation's responses to one caller: those added
/// after the caller's version. Empty for a caller that names no version.
#[derive(Debug, Default)]
pub struct Omitted(Vec<&'static [Step]>);

impl Omitted {
    /// What to leave out of `operation`'s responses for a caller of `version`.
    pub(crate) fn of(operation: &str, version: Option<Version>) -> Omitted {
        let Some(version) = version else { return Omitted::default() };
        Omitted(schemas::operation(operation).added.iter().filter(|added| added.since > version).map(|added| added.path.as_slice()).collect())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Takes the properties out of `body`.
    pub(crate) fn apply(&self, body: &mut Value) {
        for path in &self.0 {
            remove(body, path);
        }
    }
}

fn remove(value: &mut Value, path: &[Step]) {
    match path {
        [] => {}
        [Step::Property(name)] => {
            if let Value::Object(map) = value {
                map.shift_remove(name);
            }
        }
        [Step::Property(name), rest @ ..] => {
            if let Some(child) = value.get_mut(name) {
                remove(child, rest);
            }
        }
        [Step::Items, rest @ ..] => {
            if let Value::Array(items) = value {
                items.iter_mut().for_each(|item| remove(item, rest));
            }
        }
        [Step::Tagged(tag, expected), rest @ ..] => {
            if value.get(tag).and_then(Value::as_str) == Some(expected.as_str()) {
                remove(value, rest);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn versions_are_three_numbers() {
        assert_eq!(Version::parse("1.1.0"), Some(Version { major: 1, minor: 1, patch: 0 }));
        for bad in ["", "1", "1.1", "v1.1.0", "1.1.0.0", "1..0", "1.1.x", "1.1.-1", "1.1.+1", " 1.1.0"] {
            assert_eq!(Version::parse(bad), None, "{bad:?}");
        }
        let header = |text: &str| HeaderValue::from_str(text).unwrap();
        assert_eq!(Version::of_caller(None).unwrap(), None);
        assert_eq!(Version::of_caller(Some(&header("1.0.0"))).unwrap(), Some(Version { major: 1, minor: 0, patch: 0 }));
        for bad in ["2.0.0", "0.9.0", "v1", "latest"] {
            let error = Version::of_caller(Some(&header(bad))).unwrap_err();
            assert_eq!(error.param.as_deref(), Some(HEADER), "{bad:?}");
        }
    }

    #[test]
    fn a_path_removes_only_what_it_names() {
        let steps = |path: &[&str]| path.iter().map(|s| Step::parse(s)).collect::<Vec<_>>();
        let mut page = json!({"data": [{"a": 1, "new": 2}, {"a": 3, "new": 4}], "pagination": {"new": 5}});
        remove(&mut page, &steps(&["data", "[]", "new"]));
        assert_eq!(page, json!({"data": [{"a": 1}, {"a": 3}], "pagination": {"new": 5}}));

        let path = steps(&["?event=output", "data", "stream"]);
        let mut output = json!({"id": 1, "event": "output", "data": {"content": "x", "stream": "stdout"}});
        let mut other = json!({"id": 2, "event": "status", "data": {"stream": "kept"}});
        remove(&mut output, &path);
        remove(&mut other, &path);
        assert_eq!(output, json!({"id": 1, "event": "output", "data": {"content": "x"}}));
        assert_eq!(other["data"]["stream"], "kept");

        // A body of another shape is left as it is.
        let mut text = json!("plain");
        remove(&mut text, &path);
        assert_eq!(text, json!("plain"));
    }
}
