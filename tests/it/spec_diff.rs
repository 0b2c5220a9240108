//! `cargo xtask diff`'s rules: a corpus of mutations of the real spec, each classified
//! as breaking or not, by the rule that must find it and where.

use serde_json::{json, Value};
use xtask::diff::{diff, Change};
use xtask::spec;

use crate::lint_rules::{remove, set};

/// A mutation of the spec.
type Mutation = fn(&mut Value);

const AGENT: &str = "/components/schemas/Agent";
const CREATE_AGENT: &str = "/components/schemas/CreateAgentRequest";
const LIST_AGENTS: &str = "/paths/~1v1~1agents/get";
const AGENT_LABELS: &str = "/paths/~1v1~1agents~1{id}/get/responses/200/content/application~1json\
                            /schema/properties/labels";
const EXPIRES_IN_DAYS: &str = "/paths/~1v1~1tokens/post/requestBody/content/application~1json\
                               /schema/properties/expiresInDays";
const EXPIRES_MULTIPLE_OF: &str =
    "/components/schemas/CreateTokenRequest/properties/expiresInDays/multipleOf";
const UPLOAD_FILES: &str = "/paths/~1v1~1volumes~1{id}~1upload/post/requestBody/content\
                            /application~1json/schema/properties/files";

fn push(doc: &mut Value, at: &str, value: Value) {
    doc.pointer_mut(at)
        .and_then(Value::as_array_mut)
        .unwrap_or_else(|| panic!("no list at {at}"))
        .push(value);
}

/// Each case: what changes, how, whether it breaks clients, the rule that must report it,
/// and a pointer that the rule's change must name (or a prefix of it).
const CORPUS: &[(&str, Mutation, bool, &str, &str)] = &[
    // Paths and operations.
    (
        "a path removed",
        |d| remove(d, "/paths/~1v1~1tokens~1{id}"),
        true,
        "api-path-removed-without-deprecation",
        "/paths/~1v1~1tokens~1{id}",
    ),
    (
        "an operation removed",
        |d| remove(d, "/paths/~1v1~1tokens~1{id}/delete"),
        true,
        "api-removed-without-deprecation",
        "/paths/~1v1~1tokens~1{id}/delete",
    ),
    (
        "a path added",
        |d| {
            set(
                d,
                "/paths/~1v1~1health",
                json!({
                    "get": {"operationId": "health", "responses": {"200": {"description": "ok"}}}
                }),
            )
        },
        false,
        "api-path-added",
        "/paths/~1v1~1health",
    ),
    (
        "a path parameter renamed",
        |d| {
            let item = d.pointer("/paths/~1v1~1tokens~1{id}").unwrap().clone();
            remove(d, "/paths/~1v1~1tokens~1{id}");
            set(d, "/paths/~1v1~1tokens~1{tokenId}", item);
            let mut parameter = d.pointer("/components/parameters/tokenId").unwrap().clone();
            parameter["name"] = json!("tokenId");
            set(d, "/paths/~1v1~1tokens~1{tokenId}/parameters/0", parameter);
        },
        false,
        "",
        "",
    ),
    // Responses.
    (
        "a success status removed",
        |d| remove(d, "/paths/~1v1~1agents/post/responses/201"),
        true,
        "response-success-status-removed",
        "/paths/~1v1~1agents/post/responses/201",
    ),
    (
        "an error status removed",
        |d| remove(d, "/paths/~1v1~1agents/post/responses/409"),
        false,
        "response-non-success-status-removed",
        "/paths/~1v1~1agents/post/responses/409",
    ),
    (
        "an error status added",
        |d| {
            set(
                d,
                "/paths/~1v1~1agents/get/responses/403",
                json!({"$ref": "#/components/responses/BadRequest"}),
            )
        },
        false,
        "response-non-success-status-added",
        "/paths/~1v1~1agents/get/responses/403",
    ),
    (
        "a response media type removed",
        |d| {
            let media = d
                .pointer("/paths/~1v1~1agents/get/responses/200/content/application~1json")
                .unwrap()
                .clone();
            remove(d, "/paths/~1v1~1agents/get/responses/200/content/application~1json");
            set(
                d,
                "/paths/~1v1~1agents/get/responses/200/content/application~1vnd.vm0+json",
                media,
            );
        },
        true,
        "response-media-type-removed",
        "/paths/~1v1~1agents/get/responses/200/content/application~1json",
    ),
    (
        "a required response property removed, in a shared schema",
        |d| {
            remove(d, &format!("{AGENT}/properties/currentVersionId"));
            set(d, &format!("{AGENT}/required"), json!(["id", "name", "createdAt", "updatedAt"]));
        },
        true,
        "response-required-property-removed",
        "/paths/~1v1~1agents~1{id}/get/responses/200/content/application~1json/schema/properties\
            /currentVersionId",
    ),
    (
        "a required response property made optional",
        |d| {
            set(
                d,
                &format!("{AGENT}/required"),
                json!(["id", "name", "currentVersionId", "createdAt"]),
            )
        },
        true,
        "response-property-became-optional",
        "/paths/~1v1~1agents/get/responses/200/content/application~1json/schema/properties/data\
            /items/properties/updatedAt",
    ),
    (
        "a response property made nullable",
        |d| set(d, &format!("{AGENT}/properties/id/nullable"), json!(true)),
        true,
        "response-property-became-nullable",
        "/paths/~1v1~1agents/post/responses/201/content/application~1json/schema/properties/id",
    ),
    (
        "a nullable response property made not nullable",
        |d| remove(d, "/components/schemas/Pagination/properties/nextCursor/nullable"),
        false,
        "response-property-became-not-nullable",
        "/paths/~1v1~1agents/get/responses/200/content/application~1json/schema/properties\
            /pagination/properties/nextCursor",
    ),
    (
        "a response property's type changed",
        |d| set(d, "/components/schemas/Volume/properties/size/type", json!("string")),
        true,
        "response-property-type-changed",
        "/paths/~1v1~1volumes/get/responses/200/content/application~1json/schema/properties/data\
            /items/properties/size",
    ),
    (
        "a response enum value added",
        |d| push(d, "/components/schemas/RunStatus/enum", json!("paused")),
        true,
        "response-property-enum-value-added",
        "/paths/~1v1~1runs~1{id}/get/responses/200/content/application~1json/schema/properties\
            /status",
    ),
    (
        "a property added to a closed response schema",
        |d| set(d, &format!("{AGENT}/properties/labels"), json!({"type": "object"})),
        true,
        "response-property-added-to-closed-schema",
        AGENT_LABELS,
    ),
    (
        "a property added to a closed response schema, for clients of a later version",
        |d| {
            set(d, &format!("{AGENT}/properties/labels"), json!({"type": "object"}));
            set(d, &format!("{AGENT}/x-since"), json!({"labels": "9.9.9"}));
        },
        false,
        "response-property-added-since",
        AGENT_LABELS,
    ),
    (
        "a property added to a closed response schema, marked with a version old clients have",
        |d| {
            set(d, &format!("{AGENT}/properties/labels"), json!({"type": "object"}));
            set(d, &format!("{AGENT}/x-since"), json!({"labels": "1.0.0"}));
        },
        true,
        "response-property-added-to-closed-schema",
        AGENT_LABELS,
    ),
    (
        "a response property's x-since removed, so that older clients get it",
        |d| remove(d, "/components/schemas/LogEntry/x-since/sequence"),
        true,
        "response-property-since-changed",
        "/paths/~1v1~1runs~1{id}~1logs/get/responses/200/content/application~1json/schema\
            /properties/data/items/properties/sequence",
    ),
    (
        "an existing response property given an x-since, so that older clients lose it",
        |d| set(d, "/components/schemas/LogEntry/x-since/message", json!("1.1.0")),
        true,
        "response-property-since-changed",
        "/paths/~1v1~1runs~1{id}~1logs/get/responses/200/content/application~1json/schema\
            /properties/data/items/properties/message",
    ),
    (
        "a property added to an event's data, which the stream's x-event-schema describes",
        |d| {
            set(
                d,
                "/components/schemas/RunOutputData/properties/truncated",
                json!({"type": "boolean"}),
            )
        },
        true,
        "response-property-added-to-closed-schema",
        "/paths/~1v1~1runs~1{id}~1events/get/responses/200/content/text~1event-stream/schema\
            /x-event-schema/oneOf",
    ),
    (
        "a response maxLength removed",
        |d| remove(d, "/components/schemas/AgentName/maxLength"),
        true,
        "response-property-max-length-unset",
        "/paths/~1v1~1agents~1{id}/get/responses/200/content/application~1json/schema/properties\
            /name",
    ),
    (
        "a required response header removed",
        |d| remove(d, "/paths/~1v1~1agents/get/responses/200/headers/X-API-Version"),
        true,
        "required-response-header-removed",
        "/paths/~1v1~1agents/get/responses/200/headers/X-API-Version",
    ),
    (
        "a response header's enumeration widened",
        |d| push(d, "/components/headers/X-API-Version/schema/enum", json!("v2")),
        true,
        "response-header-enum-value-added",
        "/paths/~1v1~1agents/get/responses/200/headers/X-API-Version/schema",
    ),
    (
        "a request body wrapped in a oneOf",
        |d| {
            let body = d.pointer(CREATE_AGENT).unwrap().clone();
            set(
                d,
                CREATE_AGENT,
                json!({"oneOf": [body, {
                    "type": "object",
                    "required": ["template"],
                    "properties": {"template": {"type": "string"}}
                }]}),
            );
        },
        true,
        "request-body-wrapped-in-one-of",
        "/paths/~1v1~1agents/post/requestBody/content/application~1json/schema/oneOf",
    ),
    // Request parameters.
    (
        "a required query parameter added",
        |d| {
            push(
                d,
                &format!("{LIST_AGENTS}/parameters"),
                json!({
                    "name": "owner", "in": "query", "required": true, "schema": {"type": "string"}
                }),
            )
        },
        true,
        "new-required-request-parameter",
        "/paths/~1v1~1agents/get/parameters/4",
    ),
    (
        "an optional query parameter added",
        |d| {
            push(
                d,
                &format!("{LIST_AGENTS}/parameters"),
                json!({"name": "owner", "in": "query", "schema": {"type": "string"}}),
            )
        },
        false,
        "new-optional-request-parameter",
        "/paths/~1v1~1agents/get/parameters/4",
    ),
    (
        "an optional query parameter made required",
        |d| set(d, &format!("{LIST_AGENTS}/parameters/2/required"), json!(true)),
        true,
        "request-parameter-became-required",
        "/paths/~1v1~1agents/get/parameters/2",
    ),
    (
        "a query parameter removed",
        |d| {
            d.pointer_mut(&format!("{LIST_AGENTS}/parameters"))
                .and_then(Value::as_array_mut)
                .unwrap()
                .remove(2);
        },
        true,
        "request-parameter-removed",
        "/paths/~1v1~1agents/get/parameters/2",
    ),
    (
        "a query parameter's type changed",
        |d| set(d, "/components/parameters/limit/schema/type", json!("string")),
        true,
        "request-parameter-type-changed",
        "/paths/~1v1~1agents/get/parameters/0/schema",
    ),
    (
        "a query parameter's maximum lowered",
        |d| set(d, "/components/parameters/limit/schema/maximum", json!(50)),
        true,
        "request-parameter-max-decreased",
        "/paths/~1v1~1runs/get/parameters/0/schema",
    ),
    (
        "a query parameter's maximum raised",
        |d| set(d, "/components/parameters/limit/schema/maximum", json!(500)),
        false,
        "request-parameter-max-increased",
        "/paths/~1v1~1runs/get/parameters/0/schema",
    ),
    (
        "a query parameter's minimum raised",
        |d| set(d, "/components/parameters/limit/schema/minimum", json!(5)),
        true,
        "request-parameter-min-increased",
        "/paths/~1v1~1agents/get/parameters/0/schema",
    ),
    (
        "a query parameter's enum narrowed",
        |d| set(d, "/components/schemas/SortOrder/enum", json!(["asc"])),
        true,
        "request-parameter-enum-value-removed",
        "/paths/~1v1~1runs~1{id}~1logs/get/parameters/",
    ),
    (
        "a query parameter's enum widened",
        |d| push(d, "/components/schemas/SortOrder/enum", json!("random")),
        false,
        "request-parameter-enum-value-added",
        "/paths/~1v1~1runs~1{id}~1logs/get/parameters/",
    ),
    // Request bodies.
    (
        "a required request property added",
        |d| {
            set(d, &format!("{CREATE_AGENT}/properties/owner"), json!({"type": "string"}));
            push(d, &format!("{CREATE_AGENT}/required"), json!("owner"));
        },
        true,
        "new-required-request-property",
        "/paths/~1v1~1agents/post/requestBody/content/application~1json/schema/properties/owner",
    ),
    (
        "an optional request property added",
        |d| set(d, &format!("{CREATE_AGENT}/properties/description"), json!({"type": "string"})),
        false,
        "new-optional-request-property",
        "/paths/~1v1~1agents/post/requestBody/content/application~1json/schema/properties\
            /description",
    ),
    (
        "an optional request property made required",
        |d| push(d, "/components/schemas/CreateTokenRequest/required", json!("expiresInDays")),
        true,
        "request-property-became-required",
        EXPIRES_IN_DAYS,
    ),
    (
        "a required request property made optional",
        |d| set(d, "/components/schemas/CreateVolumeRequest/required", json!([])),
        false,
        "request-property-became-optional",
        "/paths/~1v1~1volumes/post/requestBody/content/application~1json/schema/properties/name",
    ),
    (
        "a property removed from a closed request schema",
        |d| remove(d, "/components/schemas/PrepareUploadRequest/properties/message"),
        true,
        "request-property-removed",
        "/paths/~1v1~1volumes~1{id}~1upload/post/requestBody/content/application~1json/schema\
            /properties/message",
    ),
    (
        "a request pattern added",
        |d| {
            set(
                d,
                "/components/schemas/CreateTokenRequest/properties/name/pattern",
                json!("^[a-z]+$"),
            )
        },
        true,
        "request-property-pattern-added",
        "/paths/~1v1~1tokens/post/requestBody/content/application~1json/schema/properties/name",
    ),
    (
        "a request pattern removed",
        |d| set(d, "/components/schemas/UploadFile/properties/hash", json!({"type": "string"})),
        false,
        "request-property-pattern-removed",
        "/paths/~1v1~1volumes~1{id}~1upload/post/requestBody/content/application~1json/schema\
            /properties/files/items/properties/hash",
    ),
    (
        "a request maxItems lowered",
        |d| {
            set(d, "/components/schemas/PrepareUploadRequest/properties/files/maxItems", json!(100))
        },
        true,
        "request-property-max-items-decreased",
        UPLOAD_FILES,
    ),
    (
        "a request maxLength raised",
        |d| {
            set(
                d,
                "/components/schemas/PrepareUploadRequest/properties/message/maxLength",
                json!(5000),
            )
        },
        false,
        "request-property-max-length-increased",
        "/paths/~1v1~1volumes~1{id}~1upload/post/requestBody/content/application~1json/schema\
            /properties/message",
    ),
    (
        "a request property's integer widened to number",
        |d| {
            set(
                d,
                "/components/schemas/CreateTokenRequest/properties/expiresInDays/type",
                json!("number"),
            )
        },
        false,
        "request-property-type-generalized",
        EXPIRES_IN_DAYS,
    ),
    (
        "a request body made required",
        |d| {
            set(
                d,
                "/paths/~1v1~1runs~1{id}~1cancel/post/requestBody",
                json!({
                    "required": true,
                    "content": {"application/json": {"schema": {"type": "object"}}}
                }),
            )
        },
        true,
        "request-body-added-required",
        "/paths/~1v1~1runs~1{id}~1cancel/post/requestBody",
    ),
    (
        "a request media type removed",
        |d| {
            let media = d
                .pointer("/paths/~1v1~1agents/post/requestBody/content/application~1json")
                .unwrap()
                .clone();
            remove(d, "/paths/~1v1~1agents/post/requestBody/content/application~1json");
            set(d, "/paths/~1v1~1agents/post/requestBody/content/application~1yaml", media);
        },
        true,
        "request-body-media-type-removed",
        "/paths/~1v1~1agents/post/requestBody/content/application~1json",
    ),
    // Security.
    (
        "an operation opened to anonymous callers",
        |d| set(d, "/paths/~1v1~1agents/get/security", json!([{}, {"bearerAuth": []}])),
        false,
        "api-security-made-optional",
        "/paths/~1v1~1agents/get/security",
    ),
    (
        "an operation's security requirement replaced",
        |d| {
            set(
                d,
                "/components/securitySchemes/apiKey",
                json!({"type": "apiKey", "in": "header", "name": "X-Api-Key"}),
            );
            set(d, "/paths/~1v1~1agents/get/security", json!([{"apiKey": []}]));
        },
        true,
        "api-security-removed",
        "/paths/~1v1~1agents/get/security",
    ),
    (
        "a response format removed",
        |d| remove(d, &format!("{AGENT}/properties/createdAt/format")),
        true,
        "response-property-format-changed",
        "/paths/~1v1~1agents~1{id}/get/responses/200/content/application~1json/schema/properties\
            /createdAt",
    ),
    (
        "a request list's items made unique",
        |d| {
            set(
                d,
                "/components/schemas/PrepareUploadRequest/properties/files/uniqueItems",
                json!(true),
            )
        },
        true,
        "request-property-unique-items-set",
        UPLOAD_FILES,
    ),
    (
        "a shared pattern changed",
        |d| set(d, "/components/schemas/Sha256/pattern", json!("^[0-9a-f]{40}$")),
        true,
        "response-property-pattern-changed",
        "/paths/~1v1~1volumes~1{id}~1download/get/responses/200/content/application~1json/schema\
            /properties/files/items/properties/hash",
    ),
    (
        "a response anyOf branch added",
        |d| {
            push(
                d,
                "/components/schemas/VolumeDetail/properties/currentVersion/anyOf",
                json!({"type": "object", "properties": {"note": {"type": "string"}}}),
            )
        },
        true,
        "response-property-any-of-added",
        "/paths/~1v1~1volumes~1{id}/get/responses/200/content/application~1json/schema/properties\
            /currentVersion/anyOf/2",
    ),
    (
        "a response number narrowed to an integer",
        |d| set(d, "/components/schemas/MetricSample/properties/cpuPercent/type", json!("integer")),
        false,
        "response-property-type-specialized",
        "/paths/~1v1~1runs~1{id}~1metrics/get/responses/200/content/application~1json/schema\
            /properties/data/items/properties/cpuPercent",
    ),
    (
        "a required response header made optional",
        |d| set(d, "/components/headers/X-Request-Id/required", json!(false)),
        true,
        "response-header-became-optional",
        "/paths/~1v1~1tokens/get/responses/200/headers/X-Request-Id",
    ),
    (
        "an open request object closed",
        |d| set(d, "/components/schemas/AgentConfig/additionalProperties", json!(false)),
        true,
        "request-property-additional-properties-disallowed",
        "/paths/~1v1~1agents/post/requestBody/content/application~1json/schema/properties/config",
    ),
    (
        "a header parameter removed",
        |d| {
            d.pointer_mut("/paths/~1v1~1runs~1{id}~1events/get/parameters")
                .and_then(Value::as_array_mut)
                .unwrap()
                .remove(1);
        },
        false,
        "request-parameter-removed",
        "/paths/~1v1~1runs~1{id}~1events/get/parameters/1",
    ),
    (
        "a $ref that leads nowhere",
        |d| {
            set(
                d,
                &format!("{AGENT}/properties/name"),
                json!({"$ref": "#/components/schemas/Missing"}),
            )
        },
        true,
        "schema-ref-unresolved",
        "/paths/~1v1~1agents/get/responses/200/content/application~1json/schema/properties/data\
            /items/properties/name",
    ),
    (
        "an operation added to a path",
        |d| {
            set(
                d,
                "/paths/~1v1~1tokens~1{id}/patch",
                json!({"operationId": "renameToken", "responses": {"200": {"description": "ok"}}}),
            )
        },
        false,
        "endpoint-added",
        "/paths/~1v1~1tokens~1{id}/patch",
    ),
    (
        "a success status added",
        |d| {
            set(
                d,
                "/paths/~1v1~1agents/post/responses/200",
                json!({"description": "Already there."}),
            )
        },
        false,
        "response-success-status-added",
        "/paths/~1v1~1agents/post/responses/200",
    ),
    (
        "a query parameter's minimum lowered",
        |d| set(d, "/components/parameters/limit/schema/minimum", json!(0)),
        false,
        "request-parameter-min-decreased",
        "/paths/~1v1~1agents/get/parameters/0/schema",
    ),
    (
        "a request maxItems raised",
        |d| {
            set(
                d,
                "/components/schemas/PrepareUploadRequest/properties/files/maxItems",
                json!(20000),
            )
        },
        false,
        "request-property-max-items-increased",
        UPLOAD_FILES,
    ),
    (
        "a request-only enum widened",
        |d| push(d, "/components/schemas/LogTypeFilter/enum", json!("debug")),
        false,
        "request-parameter-enum-value-added",
        "/paths/~1v1~1runs~1{id}~1logs/get/parameters/",
    ),
    (
        "a request property made nullable",
        |d| {
            set(
                d,
                "/components/schemas/CreateTokenRequest/properties/expiresInDays/nullable",
                json!(true),
            )
        },
        false,
        "request-property-became-nullable",
        EXPIRES_IN_DAYS,
    ),
    (
        "a property added to an open object",
        |d| {
            set(
                d,
                "/components/schemas/AgentConfig/properties",
                json!({"image": {"type": "string"}}),
            )
        },
        false,
        "response-property-added",
        "/paths/~1v1~1agents~1{id}~1versions~1{versionId}/get/responses/200/content\
            /application~1json/schema/properties/config/properties/image",
    ),
    (
        "a security alternative added",
        |d| {
            set(
                d,
                "/components/securitySchemes/apiKey",
                json!({"type": "apiKey", "in": "header", "name": "X-Api-Key"}),
            );
            set(d, "/paths/~1v1~1agents/get/security", json!([{"bearerAuth": []}, {"apiKey": []}]));
        },
        false,
        "api-security-alternative-added",
        "/paths/~1v1~1agents/get/security",
    ),
    // Documentation only.
    (
        "a description reworded",
        |d| set(d, "/paths/~1v1~1agents/get/description", json!("Lists your agents.")),
        false,
        "",
        "",
    ),
    (
        "an example changed",
        |d| {
            set(
                d,
                "/paths/~1v1~1agents/post/responses/201/content/application~1json/example/name",
                json!("other"),
            )
        },
        false,
        "",
        "",
    ),
];

/// Cases that need the old spec changed too: what the old spec had, what the new one
/// has, whether that breaks clients, the rule and the pointer.
const PAIRED: &[(&str, Mutation, Mutation, bool, &str, &str)] = &[
    (
        "a request multipleOf the old one no longer divides",
        |d| set(d, EXPIRES_MULTIPLE_OF, json!(2)),
        |d| set(d, EXPIRES_MULTIPLE_OF, json!(3)),
        true,
        "request-property-multiple-of-changed",
        EXPIRES_IN_DAYS,
    ),
    (
        "a request multipleOf that divides the old one",
        |d| set(d, EXPIRES_MULTIPLE_OF, json!(2)),
        |d| set(d, EXPIRES_MULTIPLE_OF, json!(1)),
        false,
        "request-property-multiple-of-changed",
        EXPIRES_IN_DAYS,
    ),
    (
        "an anonymous operation made to require a token",
        |d| set(d, "/paths/~1v1~1agents/get/security", json!([])),
        |_| {},
        true,
        "api-security-added",
        "/paths/~1v1~1agents/get/security",
    ),
    (
        "an optional request body removed",
        |d| {
            set(
                d,
                "/paths/~1v1~1runs~1{id}~1cancel/post/requestBody",
                json!({"content": {"application/json": {"schema": {"type": "object"}}}}),
            )
        },
        |_| {},
        true,
        "request-body-removed",
        "/paths/~1v1~1runs~1{id}~1cancel/post/requestBody",
    ),
    (
        "a change inside a recursive schema",
        |d| {
            set(
                d,
                &format!("{AGENT}/properties/parent"),
                json!({"$ref": "#/components/schemas/Agent"}),
            )
        },
        |d| {
            set(
                d,
                &format!("{AGENT}/properties/parent"),
                json!({"$ref": "#/components/schemas/Agent"}),
            );
            set(
                d,
                &format!("{AGENT}/required"),
                json!(["id", "name", "currentVersionId", "createdAt"]),
            );
        },
        true,
        "response-property-became-optional",
        "/paths/~1v1~1agents~1{id}/get/responses/200/content/application~1json/schema/properties\
            /updatedAt",
    ),
];

fn spec() -> Value {
    spec::load().expect("openapi/v1.yaml parses")
}

#[test]
fn a_spec_has_no_changes_from_itself() {
    assert_eq!(diff(&spec(), &spec()), Vec::<Change>::new());
}

#[test]
fn each_mutation_is_classified_by_its_rule() {
    let original = spec();
    let cases: Vec<(&str, Mutation, Mutation, bool, &str, &str)> = CORPUS
        .iter()
        .map(|&(what, mutate, breaks, rule, pointer)| {
            (what, (|_| {}) as Mutation, mutate, breaks, rule, pointer)
        })
        .chain(PAIRED.iter().copied())
        .collect();
    let breaking = cases.iter().filter(|case| case.3).count();
    assert!(
        cases.len() >= 30 && breaking * 3 >= cases.len() && breaking * 3 <= cases.len() * 2,
        "{breaking} of {} breaking",
        cases.len()
    );
    let mut failures = Vec::new();
    for (what, before, after, breaks, rule, pointer) in cases {
        let (mut old, mut new) = (original.clone(), original.clone());
        before(&mut old);
        after(&mut new);
        let changes = diff(&old, &new);
        let shown = || changes.iter().map(|c| format!("  {c}")).collect::<Vec<_>>().join("\n");
        if changes.iter().any(|c| c.breaking) != breaks {
            failures.push(format!("{what}: expected breaking = {breaks}, got:\n{}", shown()));
        }
        if rule.is_empty() {
            if !changes.is_empty() {
                failures.push(format!("{what}: expected no change, got:\n{}", shown()));
            }
        } else if !changes
            .iter()
            .any(|c| c.rule == rule && c.breaking == breaks && c.pointer.starts_with(pointer))
        {
            failures.push(format!("{what}: expected {rule} at {pointer}, got:\n{}", shown()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A change inside a shared schema is reported at every operation that reaches it.
#[test]
fn a_shared_schema_change_is_reported_everywhere_it_reaches() {
    let original = spec();
    let mut mutated = original.clone();
    remove(&mut mutated, "/components/schemas/Pagination/properties/hasMore");
    set(&mut mutated, "/components/schemas/Pagination/required", json!(["nextCursor"]));
    let changes = diff(&original, &mutated);
    let operations: std::collections::BTreeSet<&str> = changes
        .iter()
        .filter(|c| c.rule == "response-required-property-removed")
        .map(|c| c.pointer.split("/responses").next().unwrap())
        .collect();
    // Every list operation: agents, agent versions, runs, run logs, volumes, volume
    // versions, artifacts, artifact versions, tokens.
    assert_eq!(operations.len(), 9, "{operations:#?}");
}
