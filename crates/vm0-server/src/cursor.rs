//! Opaque pagination cursors. A cursor carries the sort key of the last item of a page
//! (`{"k":"ag_01j…"}` in base64url) and a signature that binds it to the list it came
//! from (the user, the resource, the filters), so a forged, garbled or borrowed cursor is
//! a 400 naming `cursor` rather than a page of something else.
//!
//! A list is named by its parts written out explicitly (never a `Debug` rendering), so
//! that the cursors of a running server stay valid across an upgrade.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use vm0_api::ApiError;

use crate::secrets;

/// The signing key and the list a cursor belongs to.
pub(crate) struct Scope<'a> {
    key: &'a [u8],
    list: String,
}

/// The sort key inside a cursor.
#[derive(serde::Serialize, serde::Deserialize)]
struct Payload {
    k: String,
}

impl<'a> Scope<'a> {
    /// The list `name` of the given parts, such as `("agents", [user id, name filter])`;
    /// an absent filter is an empty part.
    pub(crate) fn new(key: &'a [u8], name: &str, parts: &[&str]) -> Scope<'a> {
        let mut list = name.to_string();
        for part in parts {
            // Parts are ids, names, enum values and timestamps: none holds a newline.
            list.push('\n');
            list.push_str(part);
        }
        Scope { key, list }
    }

    /// The cursor that resumes after the item with sort key `after`.
    pub(crate) fn encode(&self, after: &str) -> String {
        let payload = URL_SAFE_NO_PAD.encode(
            serde_json::to_vec(&Payload { k: after.to_string() }).expect("a string serializes"),
        );
        let signature = secrets::sign(self.key, &format!("{}\n{payload}", self.list));
        format!("{payload}.{}", &signature[..32])
    }

    /// The sort key a cursor resumes after, if this list issued it.
    pub(crate) fn decode(&self, cursor: &str) -> Result<String, ApiError> {
        let invalid = || {
            ApiError::invalid_parameter(
                "cursor",
                "Invalid cursor: pass the nextCursor of the previous page of the same list",
            )
        };
        let (payload, signature) = cursor.split_once('.').ok_or_else(invalid)?;
        let expected = secrets::sign(self.key, &format!("{}\n{payload}", self.list));
        if !secrets::same(&expected.as_bytes()[..32], signature.as_bytes()) {
            return Err(invalid());
        }
        let bytes = URL_SAFE_NO_PAD.decode(payload).map_err(|_| invalid())?;
        let payload: Payload = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
        Ok(payload.k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn a_cursor_resumes_its_own_list_only() {
        let runs = Scope::new(KEY, "runs", &["usr_1", "", "running", ""]);
        let cursor = runs.encode("run_01");
        assert_eq!(runs.decode(&cursor).unwrap(), "run_01");
        let other_filter = Scope::new(KEY, "runs", &["usr_1", "", "failed", ""]);
        assert_eq!(other_filter.decode(&cursor).unwrap_err().param.as_deref(), Some("cursor"));
        let other_user = Scope::new(KEY, "runs", &["usr_2", "", "running", ""]);
        assert!(other_user.decode(&cursor).is_err());
    }

    #[test]
    fn a_garbled_or_forged_cursor_is_refused() {
        let scope = Scope::new(KEY, "agents", &["usr_1", ""]);
        let cursor = scope.encode("ag_01");
        for bad in ["", "x", "x.y", &cursor[1..], &format!("{cursor}0"), &cursor.replace('.', "")] {
            assert!(scope.decode(bad).is_err(), "{bad:?} was accepted");
        }
        let forged = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(br#"{"k":"ag_99"}"#),
            &cursor.split_once('.').unwrap().1
        );
        assert!(scope.decode(&forged).is_err());
    }

    /// The exact bytes a cursor is signed over: changing them would invalidate every
    /// cursor a running server has handed out.
    #[test]
    fn cursors_are_stable_across_builds() {
        let scope =
            Scope::new(KEY, "runs", &["usr_1", "ag_1", "completed", "2026-01-01T00:00:00.000Z"]);
        assert_eq!(scope.list, "runs\nusr_1\nag_1\ncompleted\n2026-01-01T00:00:00.000Z");
        assert_eq!(
            scope.encode("run_1"),
            "eyJrIjoicnVuXzEifQ.".to_string()
                + &secrets::sign(KEY, &format!("{}\neyJrIjoicnVuXzEifQ", scope.list))[..32]
        );
    }
}
