//! Releases of the spec. `openapi/released/` holds the spec as it was at each release
//! (`v1.0.0.json`, …). CI compares `openapi/v1.yaml` with the latest of them
//! ([`check`]) and fails on a breaking change, unless `info.version` raises the major
//! version or the change is listed, with a reason, in `openapi/breaking-changes.yaml`.
//! `cargo xtask release` ([`release`]) writes the next release file, its CHANGELOG.md
//! entry and the published crates' versions.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use serde_json::Value;

use crate::diff::{self, Change};
use crate::spec::{self, SPEC_PATH};
// Where the tests and the other commands have always found it.
pub use crate::version::Version;

/// Where the released specs are, relative to the workspace root.
pub const RELEASED: &str = "openapi/released";
/// The breaking changes accepted without a major version, each with its reason.
pub const ALLOWLIST: &str = "openapi/breaking-changes.yaml";
/// The crates whose versions follow the spec's.
pub const PUBLISHED: [&str; 3] = ["vm0-types", "vm0-client", "vm0-api"];

fn version_of(doc: &Value, shown: &str) -> Result<Version> {
    doc.pointer("/info/version")
        .and_then(Value::as_str)
        .with_context(|| format!("{shown} has no info.version"))?
        .parse()
        .with_context(|| format!("the info.version of {shown}"))
}

/// The latest release under `root`: its version and file.
pub fn latest(root: &Path) -> Result<Option<(Version, PathBuf)>> {
    let dir = root.join(RELEASED);
    let mut releases = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if let Some(version) = name.strip_prefix('v').and_then(|n| n.strip_suffix(".json")) {
            releases.push((
                version
                    .parse::<Version>()
                    .with_context(|| format!("the release file {}", path.display()))?,
                path,
            ));
        }
    }
    Ok(releases.into_iter().max())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Allowlist {
    #[serde(default)]
    allowed: Vec<Allowed>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Allowed {
    rule: String,
    pointer: String,
    reason: String,
}

fn allowlist(root: &Path) -> Result<Allowlist> {
    let path = root.join(ALLOWLIST);
    let Ok(text) = std::fs::read_to_string(&path) else { return Ok(Allowlist::default()) };
    let list: Option<Allowlist> =
        serde_saphyr::from_str(&text).with_context(|| format!("parsing {ALLOWLIST}"))?;
    let list = list.unwrap_or_default();
    if let Some(entry) = list.allowed.iter().find(|a| a.reason.trim().is_empty()) {
        bail!("{ALLOWLIST}: the entry for {} at {} gives no reason", entry.rule, entry.pointer);
    }
    Ok(list)
}

/// The spec against its latest release.
pub struct Check {
    pub released: Version,
    pub current: Version,
    pub changes: Vec<Change>,
    /// The breaking changes the allowlist does not name.
    pub unexcused: Vec<Change>,
    /// Allowlist entries that name no change, as `rule at pointer`.
    pub unused: Vec<String>,
}

impl Check {
    /// Whether CI passes: the version did not go down, and every breaking change comes
    /// with a major version or is allowed.
    pub fn passed(&self) -> bool {
        self.current >= self.released
            && (self.current.major > self.released.major || self.unexcused.is_empty())
    }

    /// What CI prints.
    pub fn report(&self) -> String {
        let mut out = format!(
            "openapi/v1.yaml {} against the release {}: {} changes, {} breaking\n",
            self.current,
            self.released,
            self.changes.len(),
            self.changes.iter().filter(|c| c.breaking).count()
        );
        if self.current < self.released {
            out.push_str(&format!(
                "info.version {} is lower than the latest release, {}\n",
                self.current, self.released
            ));
        }
        if self.current.major > self.released.major {
            out.push_str("a new major version: breaking changes are allowed\n");
        } else {
            for change in &self.unexcused {
                out.push_str(&format!("not allowed: {change}\n"));
            }
            if !self.unexcused.is_empty() {
                out.push_str(&format!(
                    "raise the major version of info.version, or list each change with a reason \
                     in {ALLOWLIST}\n"
                ));
            }
        }
        for entry in &self.unused {
            out.push_str(&format!(
                "warning: {ALLOWLIST} allows {entry}, which is no change any more\n"
            ));
        }
        out
    }
}

/// Compares the spec under `root` with its latest release.
pub fn check(root: &Path) -> Result<Check> {
    let (released, path) = latest(root)?.with_context(|| format!("no release in {RELEASED}"))?;
    let old = spec::parse(
        &std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?,
    )?;
    let new = spec::parse(
        &std::fs::read_to_string(root.join(SPEC_PATH))
            .with_context(|| format!("reading {SPEC_PATH}"))?,
    )?;
    let current = version_of(&new, SPEC_PATH)?;
    let changes = diff::diff(&old, &new);
    let allowed = allowlist(root)?.allowed;
    let excused = |c: &Change| allowed.iter().any(|a| a.rule == c.rule && a.pointer == c.pointer);
    let unexcused = changes.iter().filter(|c| c.breaking && !excused(c)).cloned().collect();
    let unused = allowed
        .iter()
        .filter(|a| !changes.iter().any(|c| a.rule == c.rule && a.pointer == c.pointer))
        .map(|a| format!("{} at {}", a.rule, a.pointer))
        .collect();
    Ok(Check { released, current, changes, unexcused, unused })
}

/// What a release wrote.
pub struct Released {
    pub version: Version,
    pub file: PathBuf,
    pub changes: usize,
}

/// Releases the spec under `root` as its `info.version`: writes the release file, the
/// CHANGELOG.md entry, the published crates' versions, and empties the allowlist.
pub fn release(root: &Path, date: &str) -> Result<Released> {
    let check = check(root)?;
    if !check.passed() {
        bail!("the spec cannot be released:\n{}", check.report());
    }
    if check.current <= check.released {
        bail!("{} is released already: raise info.version in {SPEC_PATH} first", check.released);
    }
    // Every file's new contents first, so that a release that fails writes nothing.
    let doc = spec::parse(&std::fs::read_to_string(root.join(SPEC_PATH))?)?;
    let file = root.join(RELEASED).join(format!("v{}.json", check.current));
    let mut writes = vec![(file.clone(), crate::codegen::bundled_json(&doc)?)];

    let changelog = root.join("CHANGELOG.md");
    let before = std::fs::read_to_string(&changelog).unwrap_or_else(|_| {
        "# Changelog\n\nThe changes to the VM0 Public API v1, release by release, as `cargo \
         xtask release` writes them from `cargo xtask diff`.\n\n"
            .into()
    });
    let allowed = allowlist(root)?.allowed;
    let reason = |c: &Change| {
        allowed
            .iter()
            .find(|a| a.rule == c.rule && a.pointer == c.pointer)
            .map(|a| a.reason.as_str())
    };
    let entry =
        format!("## {} ({date})\n\n{}", check.current, diff::markdown(&check.changes, reason));
    let at = before.find("\n## ").map_or(before.len(), |i| i + 1);
    writes.push((changelog, format!("{}{entry}{}", &before[..at], &before[at..])));

    for name in PUBLISHED {
        let manifest = root.join("crates").join(name).join("Cargo.toml");
        let text = std::fs::read_to_string(&manifest)
            .with_context(|| format!("reading {}", manifest.display()))?;
        let text = set_package_version(&text, &check.current)
            .with_context(|| format!("{} has no version line in [package]", manifest.display()))?;
        writes.push((manifest, text));
    }
    let workspace = root.join("Cargo.toml");
    let text = set_dependency_versions(&std::fs::read_to_string(&workspace)?, &check.current)
        .context("the workspace's Cargo.toml")?;
    writes.push((workspace, text));
    // The entries were for this release; the file's comments stay.
    let list = std::fs::read_to_string(root.join(ALLOWLIST)).unwrap_or_default();
    let comments: String =
        list.lines().take_while(|l| !l.starts_with("allowed:")).map(|l| format!("{l}\n")).collect();
    writes.push((root.join(ALLOWLIST), format!("{comments}allowed: []\n")));

    for (path, contents) in writes {
        std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(Released { version: check.current, file, changes: check.changes.len() })
}

/// The manifest with the `version = "…"` line of its `[package]` table set to `version`.
fn set_package_version(manifest: &str, version: &Version) -> Option<String> {
    let mut in_package = false;
    let mut found = false;
    let mut out = String::new();
    for line in manifest.lines() {
        if line.starts_with('[') {
            in_package = line.trim() == "[package]";
        }
        if in_package && !found && line.starts_with("version = \"") {
            out.push_str(&format!("version = \"{version}\"\n"));
            found = true;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    found.then_some(out)
}

/// The workspace manifest with the published crates' dependency entries at `version`;
/// an error unless there is exactly one entry for each.
fn set_dependency_versions(manifest: &str, version: &Version) -> Result<String> {
    let pattern = regex::Regex::new(
        r#"(?m)^(vm0-(?:types|client|api) = \{ path = "[^"]+", version = ")[^"]*(")"#,
    )
    .expect("the pattern compiles");
    let found = pattern.find_iter(manifest).count();
    if found != PUBLISHED.len() {
        bail!(
            "expected one `NAME = {{ path = \"…\", version = \"…\" }}` line for each of {}, \
             found {found}",
            PUBLISHED.join(", ")
        );
    }
    Ok(pattern.replace_all(manifest, format!("${{1}}{version}${{2}}")).into_owned())
}

/// Today's date in UTC, as `YYYY-MM-DD`.
pub fn today() -> String {
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400) as i64;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}
