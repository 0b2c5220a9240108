//! The VM0 Public API v1 as tools for AI agents, over the Model Context Protocol (with
//! `rmcp`, the protocol's official Rust SDK); `vm0 mcp` serves them over stdio.
//!
//! Every operation of the spec that answers JSON is a tool, from the table `cargo xtask
//! codegen` makes (`tools.json`, read by `table.rs`, called by `call.rs`); the event
//! stream and the file transfers become the hand-written `waitForRun`, `pushVolume` and
//! `pullArtifact` (`extra.rs`). `server.rs` offers them.

mod call;
mod extra;
mod server;
mod table;

pub use server::{tool_names, Options, UnknownTool, Vm0Tools};

/// Serves the tools over standard input and output until the input ends.
pub async fn serve_stdio(
    client: vm0_client::Client,
    options: &Options,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    use rmcp::ServiceExt;
    let tools = Vm0Tools::new(client, options)?;
    tools.serve(rmcp::transport::stdio()).await?.waiting().await?;
    Ok(())
}
