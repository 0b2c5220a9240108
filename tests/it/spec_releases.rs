//! Releases of the spec: CI's comparison with the latest release, and `cargo xtask
//! release`, each run on a copy of the workspace's release files in a scratch directory.

use std::path::Path;

use serde_json::{json, Value};
use xtask::diff::Change;
use xtask::release::{self, Version};
use xtask::spec;

use crate::lint_rules::{remove, set};

/// A scratch workspace at the latest release: its spec as openapi/v1.yaml (JSON is
/// YAML), nothing allowed, the releases, and the manifests a release rewrites. The tests
/// make their own changes from there, whatever the real spec has changed since.
fn workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = spec::workspace_root();
    copy(&root.join("Cargo.toml"), &dir.path().join("Cargo.toml"));
    for entry in std::fs::read_dir(root.join(release::RELEASED)).unwrap() {
        let path = entry.unwrap().path();
        copy(&path, &dir.path().join(release::RELEASED).join(path.file_name().unwrap()));
    }
    let (_, latest) = release::latest(root.as_path()).unwrap().expect("a release");
    copy(&latest, &dir.path().join(spec::SPEC_PATH));
    let allowlist = std::fs::read_to_string(root.join(release::ALLOWLIST)).unwrap();
    let comments: String = allowlist
        .lines()
        .take_while(|l| !l.starts_with("allowed:"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(dir.path().join(release::ALLOWLIST), format!("{comments}allowed: []\n"))
        .unwrap();
    for name in release::PUBLISHED {
        let manifest = format!("crates/{name}/Cargo.toml");
        copy(&root.join(&manifest), &dir.path().join(manifest));
    }
    dir
}

fn copy(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::copy(from, to).unwrap_or_else(|e| panic!("copying {}: {e}", from.display()));
}

/// Rewrites the scratch workspace's spec with `change`.
fn edit_spec(root: &Path, change: impl FnOnce(&mut Value)) {
    let path = root.join(spec::SPEC_PATH);
    let mut doc = spec::parse(&std::fs::read_to_string(&path).unwrap()).unwrap();
    change(&mut doc);
    std::fs::write(&path, serde_saphyr::to_string(&doc).unwrap()).unwrap();
}

/// The version after the latest release, by `bump` (minor or patch) of it.
fn after_latest(bump: impl FnOnce(&mut Version)) -> String {
    let (mut version, _) =
        release::latest(spec::workspace_root().as_path()).unwrap().expect("a release");
    bump(&mut version);
    version.to_string()
}

fn next_minor() -> String {
    after_latest(|v| {
        v.minor += 1;
        v.patch = 0;
    })
}

fn set_version(doc: &mut Value, version: &str) {
    set(doc, "/info/version", json!(version));
}

/// The breaking change the tests make: a required response property removed.
fn remove_a_response_property(doc: &mut Value) {
    remove(doc, "/components/schemas/Token/properties/tokenPrefix");
    set(
        doc,
        "/components/schemas/Token/required",
        json!(["id", "name", "lastUsedAt", "expiresAt", "createdAt"]),
    );
}

/// An allowlist entry, with a reason, for each of `changes`.
fn excuses(changes: &[Change]) -> Vec<Value> {
    let reason = "No client reads tokenPrefix.";
    let entry = |c: &Change| json!({"rule": c.rule, "pointer": c.pointer, "reason": reason});
    changes.iter().map(entry).collect()
}

#[test]
fn the_spec_is_compatible_with_its_latest_release() {
    let check = release::check(&spec::workspace_root()).unwrap();
    assert!(check.passed(), "{}", check.report());
}

#[test]
fn ci_fails_on_a_breaking_change_without_a_major_version() {
    let dir = workspace();
    let root = dir.path();
    edit_spec(root, |doc| {
        remove_a_response_property(doc);
        set_version(doc, &next_minor());
    });
    let check = release::check(root).unwrap();
    assert!(!check.passed(), "{}", check.report());
    let report = check.report();
    assert!(
        report.contains(
            "not allowed: breaking  response-required-property-removed  /paths/~1v1~1tokens/get/"
        ),
        "{report}"
    );
    assert!(report.contains("raise the major version"), "{report}");

    // Listing every change it reports, each with a reason, lets it through.
    let entries = excuses(&check.unexcused);
    std::fs::write(
        root.join(release::ALLOWLIST),
        serde_saphyr::to_string(&json!({"allowed": entries})).unwrap(),
    )
    .unwrap();
    assert!(release::check(root).unwrap().passed());
    // But not without a reason.
    let entries: Vec<Value> = check
        .unexcused
        .iter()
        .map(|c| json!({"rule": c.rule, "pointer": c.pointer, "reason": " "}))
        .collect();
    std::fs::write(
        root.join(release::ALLOWLIST),
        serde_saphyr::to_string(&json!({"allowed": entries})).unwrap(),
    )
    .unwrap();
    let error = release::check(root).err().expect("an entry without a reason is refused");
    assert!(error.to_string().contains("gives no reason"), "{error:#}");

    // A major version lets it through too, with nothing allowed.
    std::fs::write(root.join(release::ALLOWLIST), "allowed: []\n").unwrap();
    edit_spec(root, |doc| set_version(doc, "2.0.0"));
    let check = release::check(root).unwrap();
    assert!(check.passed(), "{}", check.report());
    assert_eq!(check.current, Version { major: 2, minor: 0, patch: 0 });
}

#[test]
fn a_version_lower_than_the_release_fails() {
    let dir = workspace();
    edit_spec(dir.path(), |doc| set_version(doc, "0.9.0"));
    let check = release::check(dir.path()).unwrap();
    assert!(!check.passed());
    assert!(check.report().contains("lower than the latest release"), "{}", check.report());
}

#[test]
fn a_release_writes_its_file_changelog_and_crate_versions() {
    let dir = workspace();
    let root = dir.path();
    let (minor, patch) = (
        next_minor(),
        after_latest(|v| {
            v.minor += 1;
            v.patch = 1;
        }),
    );
    // Nothing changed: the latest release is released already.
    let error =
        release::release(root, "2026-12-01").err().expect("the same version twice is refused");
    assert!(error.to_string().contains("released already"), "{error:#}");

    release_an_added_property(root, &minor);
    // The next release's entry goes on top.
    edit_spec(root, |doc| set_version(doc, &patch));
    release::release(root, "2026-12-02").unwrap();
    let changelog = std::fs::read_to_string(root.join("CHANGELOG.md")).unwrap();
    let (newer, older) = (
        changelog.find(&format!("## {patch}")).unwrap(),
        changelog.find(&format!("## {minor}")).unwrap(),
    );
    assert!(newer < older, "{changelog}");
    assert!(
        changelog.contains(&format!("## {patch} (2026-12-02)\n\nNo changes to the API.")),
        "{changelog}"
    );
    release_an_excused_breaking_change(root);
}

/// Releases `minor`, which adds a request property: its file, its changelog entry, and the
/// published crates' versions.
fn release_an_added_property(root: &Path, minor: &str) {
    edit_spec(root, |doc| {
        set(
            doc,
            "/components/schemas/CreateTokenRequest/properties/description",
            json!({"type": "string", "maxLength": 200}),
        );
        set_version(doc, minor);
    });
    let released = release::release(root, "2026-12-01").unwrap();
    assert_eq!(released.version.to_string(), minor);
    let file: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join(format!("openapi/released/v{minor}.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(file["info"]["version"], minor);
    assert_eq!(release::latest(root).unwrap().unwrap().0.to_string(), minor);

    let changelog = std::fs::read_to_string(root.join("CHANGELOG.md")).unwrap();
    assert!(changelog.starts_with("# Changelog"), "{changelog}");
    assert!(
        changelog.contains(&format!(
            "## {minor} (2026-12-01)\n\n### Other changes\n\n\
             - The optional property `description` of the request body was added."
        )),
        "{changelog}"
    );
    for name in release::PUBLISHED {
        let manifest =
            std::fs::read_to_string(root.join(format!("crates/{name}/Cargo.toml"))).unwrap();
        assert!(manifest.contains(&format!("\nversion = \"{minor}\"\n")), "{name}: {manifest}");
    }
    let workspace = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    for name in release::PUBLISHED {
        assert!(
            workspace.contains(&format!(
                "{name} = {{ path = \"crates/{name}\", version = \"{minor}\" }}"
            )),
            "{workspace}"
        );
    }
}

/// A breaking change the allowlist accepts is released with its reason, and the
/// allowlist is emptied for the next release.
fn release_an_excused_breaking_change(root: &Path) {
    let third = after_latest(|v| {
        v.minor += 2;
        v.patch = 0;
    });
    edit_spec(root, |doc| {
        remove_a_response_property(doc);
        set_version(doc, &third);
    });
    let check = release::check(root).unwrap();
    let entries = excuses(&check.unexcused);
    assert!(!entries.is_empty());
    std::fs::write(
        root.join(release::ALLOWLIST),
        serde_saphyr::to_string(&json!({"allowed": entries})).unwrap(),
    )
    .unwrap();
    release::release(root, "2026-12-03").unwrap();
    let changelog = std::fs::read_to_string(root.join("CHANGELOG.md")).unwrap();
    assert!(
        changelog.contains(concat!(
            "was removed. (`response-required-property-removed` at `/paths/~1v1~1tokens/get",
            "/responses/200/content/application~1json/schema/properties/data/items/properties",
            "/tokenPrefix`)\n  Accepted without a major version: No client reads tokenPrefix.\n"
        )),
        "{changelog}"
    );
    assert!(std::fs::read_to_string(root.join(release::ALLOWLIST))
        .unwrap()
        .ends_with("allowed: []\n"));
}

#[test]
fn versions_order_as_numbers() {
    let v = |s: &str| s.parse::<Version>().unwrap();
    assert!(v("1.10.0") > v("1.9.3"));
    assert!(v("2.0.0") > v("1.99.99"));
    for bad in ["1.0", "v1.0.0", "1.+1.0", "01.0.0", "1.0.00", "1.0.0.0", ""] {
        assert!(bad.parse::<Version>().is_err(), "{bad:?}");
    }
    assert_eq!(v("1.0.0").to_string(), "1.0.0");
}
