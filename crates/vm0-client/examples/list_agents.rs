//! Lists your agents, every page of them.
//!
//! ```sh
//! VM0_API_URL=http://127.0.0.1:8080 VM0_TOKEN=vm0_live_… \
//!     cargo run -p vm0-client --example list_agents
//! ```

#![allow(clippy::print_stdout)] // Printing is what this program is for.

use futures::TryStreamExt;
use vm0_client::{Client, Paginate};

#[tokio::main]
async fn main() -> Result<(), vm0_client::Error> {
    let client = Client::from_env()?;
    let mut agents = client.list_agents().limit(100).stream();
    while let Some(agent) = agents.try_next().await? {
        println!("{}  {}  (version {})", agent.id, agent.name.as_str(), agent.current_version_id);
    }
    Ok(())
}
