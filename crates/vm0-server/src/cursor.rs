//! Opaque pagination cursors. A cursor carries the sort key of the last item of a page
//! (`{"k":"ag_01j…"}` in base64url) and a signature that binds it to the list it came
//! from (the user, the resource, the filters), so a forged, garbled or borrowed cursor is
//! a 400 naming `cursor` rather than a page of something else.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::json;
use vm0_api::ApiError;

use crate::secrets;

/// The signing key and the list a cursor belongs to.
pub struct Scope<'a> {
    pub key: &'a [u8],
    pub list: String,
}

impl Scope<'_> {
    /// The cursor that resumes after the item with sort key `after`.
    pub fn encode(&self, after: &str) -> String {
        let payload = URL_SAFE_NO_PAD.encode(json!({ "k": after }).to_string());
        let signature = secrets::sign(self.key, &format!("{}\n{payload}", self.list));
        format!("{payload}.{}", &signature[..32])
    }

    /// The sort key a cursor resumes after, if this list issued it.
    pub fn decode(&self, cursor: &str) -> Result<String, ApiError> {
        let invalid = || ApiError::invalid_parameter("cursor", "Invalid cursor: pass the nextCursor of the previous page of the same list");
        let (payload, signature) = cursor.split_once('.').ok_or_else(invalid)?;
        let expected = secrets::sign(self.key, &format!("{}\n{payload}", self.list));
        if !secrets::same(&expected.as_bytes()[..32], signature.as_bytes()) {
            return Err(invalid());
        }
        let bytes = URL_SAFE_NO_PAD.decode(payload).map_err(|_| invalid())?;
        let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
        value.get("k").and_then(|k| k.as_str()).map(str::to_string).ok_or_else(invalid)
    }
}
