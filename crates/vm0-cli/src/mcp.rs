//! `vm0 mcp`: the API as Model Context Protocol tools for AI agents, served over standard
//! input and output (`vm0-mcp`) with the login in effect.

use anyhow::{anyhow, Result};
use vm0_client::Client;

/// Serve the API as MCP tools over stdio, for an AI assistant to call.
#[derive(clap::Args)]
#[command(after_help = concat!(
    "An MCP client starts it as a server, for example in its configuration:\n",
    "  {\"mcpServers\": {\"vm0\": {\"command\": \"vm0\", \"args\": [\"mcp\"]}}}",
))]
pub(crate) struct McpArgs {
    /// Offer only the tools that change nothing of the API's (reads, waits, pulls).
    #[arg(long)]
    read_only: bool,
    /// Offer only these tools, by name, comma-separated (such as listRuns,getRun,waitForRun).
    #[arg(long, value_delimiter = ',')]
    tools: Option<Vec<String>>,
}

/// Serves until the client closes standard input.
pub(crate) async fn serve(args: McpArgs, client: Client) -> Result<()> {
    let options = vm0_mcp::Options { read_only: args.read_only, tools: args.tools };
    vm0_mcp::serve_stdio(client, &options).await.map_err(|error| anyhow!(error))
}
