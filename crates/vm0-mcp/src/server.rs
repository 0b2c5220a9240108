//! The MCP server: the table's operations and the hand-written tools, offered as the
//! options say, each call answered with the API's JSON or an error result that says what
//! went wrong. A bad call is answered, never fatal: the server only ends with its input.

use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
    ToolAnnotations,
};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::{ErrorData as McpError, ServerHandler};
use serde_json::{json, Map, Value};
use vm0_client::Client;

use crate::call::{call, CallError};
use crate::extra::{Extra, Failure};
use crate::table::{operations, Operation};

/// Which tools `vm0 mcp` offers.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Only the tools that change nothing of the API's.
    pub read_only: bool,
    /// Only these tools, by name; `None` for all.
    pub tools: Option<Vec<String>>,
}

/// One tool on offer.
#[derive(Clone, Copy)]
enum Offered {
    Operation(&'static Operation),
    Extra(Extra),
}

impl Offered {
    fn name(self) -> &'static str {
        match self {
            Offered::Operation(operation) => &operation.name,
            Offered::Extra(extra) => extra.name(),
        }
    }

    fn read_only(self) -> bool {
        match self {
            Offered::Operation(operation) => operation.read_only,
            Offered::Extra(extra) => extra.read_only(),
        }
    }

    /// The tool's definition, as `tools/list` gives it.
    fn tool(self) -> Tool {
        let (description, schema, destructive) = match self {
            Offered::Operation(operation) => (
                operation.description.clone(),
                operation.input_schema.clone(),
                operation.method == "DELETE",
            ),
            Offered::Extra(extra) => {
                let Value::Object(schema) = extra.input_schema() else {
                    unreachable!("a struct's schema is an object")
                };
                (extra.description().to_string(), schema, false)
            }
        };
        let annotations =
            ToolAnnotations::new().read_only(self.read_only()).destructive(destructive);
        Tool::new(self.name(), description, Arc::new(schema)).with_annotations(annotations)
    }
}

/// Every tool there is: the table's, then the hand-written ones.
fn all_tools() -> impl Iterator<Item = Offered> {
    let table = operations().iter().map(Offered::Operation);
    table.chain(Extra::ALL.into_iter().map(Offered::Extra))
}

/// The names of every tool there is, for `--tools` and its errors.
pub fn tool_names() -> Vec<&'static str> {
    all_tools().map(Offered::name).collect()
}

/// A name given to `--tools` that no tool has.
#[derive(Debug, thiserror::Error)]
#[error("there is no tool {name}; the tools are: {known}")]
pub struct UnknownTool {
    name: String,
    known: String,
}

/// The VM0 API as an MCP server, calling the API with `client`.
#[derive(Clone)]
pub struct Vm0Tools {
    client: Client,
    offered: Arc<Vec<Offered>>,
}

impl Vm0Tools {
    /// The server for `options`; a tool name in `options.tools` that no tool has is an
    /// error naming it and the tools there are.
    pub fn new(client: Client, options: &Options) -> Result<Vm0Tools, UnknownTool> {
        if let Some(unknown) =
            options.tools.iter().flatten().find(|name| !tool_names().contains(&name.as_str()))
        {
            return Err(UnknownTool { name: unknown.clone(), known: tool_names().join(", ") });
        }
        let wanted = |tool: &Offered| {
            (!options.read_only || tool.read_only())
                && options.tools.as_ref().is_none_or(|names| names.iter().any(|n| n == tool.name()))
        };
        Ok(Vm0Tools { client, offered: Arc::new(all_tools().filter(wanted).collect()) })
    }

    async fn answer(&self, tool: Offered, arguments: Map<String, Value>) -> CallToolResult {
        match tool {
            Offered::Operation(operation) => match call(&self.client, operation, arguments).await {
                Ok(Some(value)) => success(value),
                Ok(None) => CallToolResult::success(vec![ContentBlock::text(
                    "Done: the API answered 204 No Content.",
                )]),
                Err(CallError::Argument { name, problem }) => argument_error(&name, &problem),
                Err(CallError::Client(error)) => client_error(&error),
            },
            Offered::Extra(extra) => match extra.call(&self.client, Value::Object(arguments)).await
            {
                Ok(value) => success(value),
                Err(Failure::Arguments(problem)) => argument_error("", &problem),
                Err(Failure::Client(error)) => client_error(&error),
            },
        }
    }
}

impl ServerHandler for Vm0Tools {
    fn get_info(&self) -> ServerConfig {
        let info = Implementation::new("vm0", env!("CARGO_PKG_VERSION"));
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(info)
            .with_instructions(
                "The VM0 API: agents (a command and its configuration), runs of them in \
                 sandboxes, volumes (input files) and artifacts (output files). Create an agent, \
                 start a run with createRun, then waitForRun for its status and output; \
                 listRunLogs reads the whole log.",
            )
    }

    async fn list_tools(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        Ok(ListToolsResult::with_all_items(self.offered.iter().map(|t| t.tool()).collect()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let Some(tool) = self.offered.iter().find(|t| t.name() == request.name).copied() else {
            let message = format!("no tool {} is offered here", request.name);
            return Err(McpError::invalid_params(message, None));
        };
        Ok(self.answer(tool, request.arguments.unwrap_or_default()).await.into())
    }
}

/// The API's JSON, as text for every client and as structured content for those that
/// read it (an object only, as MCP has it).
fn success(value: Value) -> CallToolResult {
    let text = serde_json::to_string_pretty(&value).expect("JSON serializes");
    let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
    if value.is_object() {
        result.structured_content = Some(value);
    }
    result
}

fn argument_error(name: &str, problem: &str) -> CallToolResult {
    let text = if name.is_empty() {
        format!("Bad arguments: {problem}")
    } else {
        format!("Bad argument {name}: {problem}")
    };
    CallToolResult::error(vec![ContentBlock::text(text)])
}

/// An error result naming the API error's type, code, message and request id (and the
/// parameter at fault, when there is one), or what went wrong on the way.
fn client_error(error: &vm0_client::Error) -> CallToolResult {
    let text = match error.api() {
        Some(api) => {
            let detail = json!({
                "status": api.status,
                "type": api.kind,
                "code": api.code,
                "message": api.message,
                "param": api.param,
                "requestId": api.request_id,
            });
            format!(
                "API error {} {}: {}\n{}",
                api.kind,
                api.code,
                api.message,
                serde_json::to_string_pretty(&detail).expect("JSON serializes")
            )
        }
        None => format!("Error: {error}"),
    };
    CallToolResult::error(vec![ContentBlock::text(text)])
}
