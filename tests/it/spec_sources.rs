//! The spec against the user's documents in `docs/sources/`: the brief's table of
//! operations, and the seeds' JSON examples.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::{json, Value};
use vm0_tests::seeds::{self, SeedExample};
use xtask::spec::{self, workspace_root};

fn source(name: &str) -> String {
    let path = workspace_root().join("docs/sources").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// (method, path, operationId) of every row of the brief's tables. A row naming two
/// operations ("listVolumes / listArtifacts") is the volume one and the artifact one.
fn brief_operations() -> BTreeSet<(String, String, String)> {
    let row =
        regex::Regex::new(r"^\| (\w+)(?: / (\w+))? \| (GET|POST|PUT|PATCH|DELETE) (/v1/\S*) \|")
            .unwrap();
    let mut ops = BTreeSet::new();
    for line in source("API-BRIEF.md").lines() {
        let Some(c) = row.captures(line) else { continue };
        let (method, path) = (c[3].to_lowercase(), c[4].to_string());
        ops.insert((method.clone(), path.clone(), c[1].to_string()));
        if let Some(twin) = c.get(2) {
            ops.insert((
                method,
                path.replacen("/v1/volumes", "/v1/artifacts", 1),
                twin.as_str().to_string(),
            ));
        }
    }
    ops
}

#[test]
fn the_operations_are_the_briefs() {
    let doc = spec::load().unwrap();
    let ours: BTreeSet<_> = spec::operations(&doc)
        .iter()
        .map(|op| (op.method.to_string(), op.path.to_string(), op.id().to_string()))
        .collect();
    let brief = brief_operations();
    assert_eq!(brief.len(), 34, "the brief's tables should list 34 operations");
    let missing: Vec<_> = brief.difference(&ours).collect();
    let extra: Vec<_> = ours.difference(&brief).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing from the spec: {missing:#?}\nnot in the brief: {extra:#?}"
    );
}

/// The seeds hold five JSON examples; each must validate against the schema of what it
/// illustrates, and appear in the spec as that thing's example.
#[test]
fn the_seed_examples_validate_and_appear_verbatim() {
    let doc = spec::load().unwrap();
    let examples: Vec<SeedExample> = ["seed-000-overview.txt", "seed-003-agents.txt"]
        .into_iter()
        .flat_map(|name| seeds::json_examples(name, &source(name)))
        .collect();
    assert_eq!(examples.len(), 5, "expected the seeds' five JSON examples, found {examples:#?}");
    let mut failures = Vec::new();
    for example in &examples {
        let (what, schema, spec_example) = target(&doc, example);
        match spec::validate(&doc, &schema, &example.value) {
            Ok(errors) if errors.is_empty() => {}
            Ok(errors) => failures.push(format!(
                "{} (for {what}) does not validate:\n  {}",
                example.source,
                errors.join("\n  ")
            )),
            Err(error) => failures.push(format!("{what}: {error}")),
        }
        if spec_example.as_ref() != Some(&example.value) {
            failures.push(format!(
                "{} is not the spec's example for {what}; the spec has {spec_example:#?}",
                example.source
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// What a seed example illustrates: the response of the endpoint it follows, else what
/// the section it stands in describes. Returns a name, the schema and the spec's example.
fn target(doc: &Value, example: &SeedExample) -> (String, Value, Option<Value>) {
    if let Some((method, path)) = &example.endpoint {
        let op = spec::operations(doc)
            .into_iter()
            .find(|op| op.method == method && op.path == path)
            .unwrap_or_else(|| {
                panic!("{} follows {method} {path}, which the spec lacks", example.source)
            });
        let media =
            op.op.pointer("/responses/200/content/application~1json").expect("a 200 JSON response");
        return (
            format!("{} 200", op.id()),
            media["schema"].clone(),
            media.get("example").cloned(),
        );
    }
    match example.heading.as_str() {
        "Error Response Format" => {
            let schema = json!({"$ref": "#/components/schemas/Error"});
            let spec_example = doc.pointer("/components/schemas/Error/example").cloned();
            ("the Error envelope".into(), schema, spec_example)
        }
        // The pagination example abbreviates its items to {id, name}: each must still be
        // a valid part of an Agent, and the envelope and its `pagination` exact.
        "Response Format" => {
            let mut partial_agent = doc.pointer("/components/schemas/Agent").unwrap().clone();
            partial_agent.as_object_mut().unwrap().remove("required");
            let schema = json!({
                "type": "object",
                "required": ["data", "pagination"],
                "additionalProperties": false,
                "properties": {
                    "data": {"type": "array", "items": partial_agent},
                    "pagination": {"$ref": "#/components/schemas/Pagination"}
                }
            });
            let description =
                doc.pointer("/info/description").and_then(Value::as_str).unwrap_or_default();
            let in_description = seeds::squash(description).contains(&seeds::squash(&example.text));
            let pagination = doc.pointer("/components/schemas/Pagination/example").cloned();
            let spec_example = (in_description
                && pagination.as_ref() == example.value.get("pagination"))
            .then(|| example.value.clone());
            (
                "the pagination envelope (in info.description, and Pagination's example)".into(),
                schema,
                spec_example,
            )
        }
        other => {
            panic!("{}: no rule says what an example under '{other}' illustrates", example.source)
        }
    }
}

/// The copies in docs/sources are the user's documents as they are now, where those are
/// at hand (beside the checkout, as in CI).
#[test]
fn the_sources_are_current() {
    let shared: PathBuf = workspace_root().join("../shared");
    let pairs = [
        ("API-BRIEF.md", "API-BRIEF.md"),
        ("seeds/000_b3ea7c0633353e8c.txt", "seed-000-overview.txt"),
        ("seeds/003_6b65b2e1bb9089f7.txt", "seed-003-agents.txt"),
    ];
    if !shared.join("API-BRIEF.md").exists() {
        eprintln!("skipped: {} is not here", shared.display());
        return;
    }
    for (theirs, ours) in pairs {
        let theirs = std::fs::read_to_string(shared.join(theirs)).unwrap();
        assert_eq!(
            theirs,
            source(ours),
            "docs/sources/{ours} differs from the user's copy: update it, then the spec"
        );
    }
}
