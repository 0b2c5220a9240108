//! The tool table that `cargo xtask codegen` makes from the spec (`tools.json`): one entry
//! per operation that answers JSON, with where each of its arguments goes.

use std::sync::LazyLock;

use serde::Deserialize;
use serde_json::{Map, Value};

/// One operation of the spec, as a tool.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Operation {
    /// The `operationId`.
    pub name: String,
    /// The summary and the description.
    pub description: String,
    pub method: String,
    /// The path template, such as `/v1/agents/{id}`.
    pub path: String,
    /// Whether it only reads (a GET).
    pub read_only: bool,
    pub arguments: Vec<Argument>,
    /// The JSON Schema of its arguments, an object.
    pub input_schema: Map<String, Value>,
}

/// One argument of an operation's tool, and where it goes in the request.
#[derive(Debug, Deserialize)]
pub(crate) struct Argument {
    pub name: String,
    #[serde(rename = "in")]
    pub location: Location,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Location {
    Path,
    Query,
    Header,
    /// A property of the JSON body.
    Body,
}

#[derive(Deserialize)]
struct Table {
    tools: Vec<Operation>,
}

/// Every operation of the table, read once.
pub(crate) fn operations() -> &'static [Operation] {
    static TABLE: LazyLock<Vec<Operation>> = LazyLock::new(|| {
        let table: Table =
            serde_json::from_str(include_str!("tools.json")).expect("tools.json is a tool table");
        table.tools
    });
    &TABLE
}
