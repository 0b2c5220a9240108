//! Conditional writes: the `ETag` of a resource as it stands, and the `If-Match` a write
//! carries (RFC 9110, section 13.1.1). The router reads and checks the header; the
//! implementation knows what a resource's tag is, so it makes the tags, compares them,
//! and makes the comparison and its write one step.

use std::fmt;

use axum::http::StatusCode;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use vm0_types::{ErrorCode, ErrorType};

use crate::error::ApiError;

/// The header the failed precondition names in its error.
pub const IF_MATCH: &str = "If-Match";

/// A strong entity tag, quotes included: `"agv_01j..."`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ETag(String);

impl ETag {
    /// The tag of a resource whose state is named by `revision`, an id that every write
    /// of it replaces (an agent's current version). It must be made of the characters an
    /// entity tag allows, as the server's ids are.
    pub fn of_revision(revision: &str) -> ETag {
        debug_assert!(revision.bytes().all(|b| b == b'!' || (b'#'..=b'~').contains(&b)));
        ETag(format!("\"{revision}\""))
    }

    /// The tag of a resource that has no revision of its own: a digest of `body`, its
    /// whole representation.
    pub fn of_body<T: Serialize>(body: &T) -> ETag {
        let bytes = serde_json::to_vec(body).expect("a response body serializes");
        let digest = Sha256::digest(bytes);
        let hex: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
        ETag(format!("\"{hex}\""))
    }

    /// The tag as the `ETag` header says it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ETag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A success answer that carries its resource's `ETag`.
#[derive(Debug, Clone)]
pub struct Tagged<T> {
    pub body: T,
    pub etag: ETag,
}

/// An `If-Match` header, as the spec's pattern allows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfMatch {
    /// `*`: the resource exists.
    Any,
    /// The strong tags listed, quotes included; weak ones (`W/"..."`) are left out, since
    /// `If-Match` compares strongly and they can never match.
    Tags(Vec<String>),
}

impl IfMatch {
    /// Reads a header value; `None` when it is not `*` nor a list of entity tags.
    pub fn parse(text: &str) -> Option<IfMatch> {
        let text = text.trim();
        if text == "*" {
            return Some(IfMatch::Any);
        }
        let mut tags = Vec::new();
        let mut rest = text;
        loop {
            let (weak, tail) = match rest.strip_prefix("W/") {
                Some(tail) => (true, tail),
                None => (false, rest),
            };
            let tail = tail.strip_prefix('"')?;
            let end = tail.find('"')?;
            let opaque = &tail[..end];
            if !opaque.bytes().all(|b| b == b'!' || (b'#'..=b'~').contains(&b)) {
                return None;
            }
            if !weak {
                tags.push(format!("\"{opaque}\""));
            }
            rest = tail[end + 1..].trim_start_matches([' ', '\t']);
            if rest.is_empty() {
                return Some(IfMatch::Tags(tags));
            }
            rest = rest.strip_prefix(',')?.trim_start_matches([' ', '\t']);
        }
    }

    /// Whether a resource whose tag is `current` meets the condition.
    pub fn matches(&self, current: &ETag) -> bool {
        match self {
            IfMatch::Any => true,
            IfMatch::Tags(tags) => tags.contains(&current.0),
        }
    }
}

impl ApiError {
    /// 412 `precondition_failed`: the resource (`what`, such as "agent") is no longer the
    /// one whose `ETag` the caller sent in `If-Match`.
    pub fn precondition_failed(what: &str) -> ApiError {
        ApiError {
            status: StatusCode::PRECONDITION_FAILED,
            kind: ErrorType::ConflictError,
            code: ErrorCode::PreconditionFailed,
            message: format!(
                "The {what} changed since its ETag was read (If-Match): read it again, and \
                 send its new ETag"
            ),
            param: Some(IF_MATCH.to_string()),
            internal: None,
            retry_after: None,
        }
    }
}

impl fmt::Display for IfMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IfMatch::Any => f.write_str("*"),
            IfMatch::Tags(tags) => f.write_str(&tags.join(", ")),
        }
    }
}

// The router checks the header against the spec's pattern before it reads it as this.
impl<'de> Deserialize<'de> for IfMatch {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        IfMatch::parse(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("not an If-Match value: {text}")))
    }
}

impl Serialize for IfMatch {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_match_reads_star_lists_and_leaves_weak_tags_out() {
        assert_eq!(IfMatch::parse("*"), Some(IfMatch::Any));
        assert_eq!(
            IfMatch::parse(r#""a", W/"b" ,"c""#),
            Some(IfMatch::Tags(vec![r#""a""#.into(), r#""c""#.into()]))
        );
        assert_eq!(IfMatch::parse(r#"W/"a""#), Some(IfMatch::Tags(vec![])));
        for bad in ["", "a", r#""a"#, r#""a" "b""#, r#""a","#, r#""a b""#, "**"] {
            assert_eq!(IfMatch::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn only_the_current_strong_tag_or_a_star_matches() {
        let current = ETag::of_revision("agv_2");
        assert!(IfMatch::Any.matches(&current));
        assert!(IfMatch::parse(r#""agv_1", "agv_2""#).unwrap().matches(&current));
        assert!(!IfMatch::parse(r#"W/"agv_2""#).unwrap().matches(&current));
        assert!(!IfMatch::parse(r#""agv_1""#).unwrap().matches(&current));
        let error = ApiError::precondition_failed("agent");
        assert_eq!((error.status.as_u16(), error.param.as_deref()), (412, Some("If-Match")));
    }

    #[test]
    fn a_body_tag_changes_with_the_body() {
        let (a, b) = (ETag::of_body(&["x"]), ETag::of_body(&["y"]));
        assert_ne!(a, b);
        assert_eq!(a, ETag::of_body(&["x"]));
        assert!(a.as_str().starts_with('"') && a.as_str().ends_with('"'));
    }
}
