//! The documentation portal: the spec rendered by Redoc, with each operation's code
//! samples (its `x-codeSamples`), and a try-it console of our own (`docs/try-it.js`) that
//! sends requests to the server it is served from. One page, self-contained: the server
//! serves it at `/docs`, and `cargo xtask docs` builds the same page as a file (this
//! source file is compiled into xtask too, so both fill the one template alike).
//!
//! Redoc's standalone bundle is vendored in `docs/redoc.standalone.js` from the npm
//! package pinned in `xtask/lint-tools/`, with its one outside address (a logo) replaced;
//! `cargo xtask docs --check` fails when it no longer matches the pinned package.

/// The page, with `{{title}}`, `{{spec}}`, `{{redoc}}` and `{{try_it}}` to fill.
const TEMPLATE: &str = include_str!("../docs/portal.html");
/// The try-it console.
const TRY_IT: &str = include_str!("../docs/try-it.js");
/// The vendored Redoc bundle.
#[allow(dead_code)] // xtask compiles this file too, and takes the bundle from npm.
pub(crate) const REDOC: &str = include_str!("../docs/redoc.standalone.js");

/// The portal of `spec`, rendered by the Redoc bundle `redoc`.
pub(crate) fn page(spec: &serde_json::Value, redoc: &str) -> String {
    let title = spec.pointer("/info/title").and_then(|t| t.as_str()).unwrap_or("API");
    // Inside a script element, `</` would end it: JSON lets `/` be escaped.
    let spec = serde_json::to_string(spec).expect("JSON serializes").replace("</", "<\\/");
    let mut out = String::with_capacity(TEMPLATE.len() + spec.len() + redoc.len());
    let mut rest = TEMPLATE;
    // One pass over the template: what is filled in is never searched for markers.
    while let Some(start) = rest.find("{{") {
        let end = rest[start..].find("}}").map(|e| start + e + 2).expect("markers are closed");
        out.push_str(&rest[..start]);
        out.push_str(match &rest[start..end] {
            "{{title}}" => title,
            "{{spec}}" => &spec,
            "{{redoc}}" => redoc,
            "{{try_it}}" => TRY_IT,
            other => panic!("the portal's template has an unknown marker {other}"),
        });
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}
