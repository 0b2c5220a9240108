//! Starts a run of an agent and follows its output until it ends; exits with 0 when it
//! completed, 1 otherwise.
//!
//! `VM0_API_URL=… VM0_TOKEN=… cargo run -p vm0-client --example run_and_follow -- AGENT "PROMPT"`

#![allow(clippy::print_stdout)] // Printing is what this program is for.

use futures::TryStreamExt;
use vm0_client::{types, Client, RunEvent};

#[tokio::main]
async fn main() -> Result<(), vm0_client::Error> {
    let mut args = std::env::args().skip(1);
    let (Some(agent), Some(prompt)) = (args.next(), args.next()) else {
        eprintln!("usage: run_and_follow AGENT PROMPT");
        std::process::exit(2);
    };
    let client = Client::from_env()?;
    let agent = agent.parse().map_err(|e| vm0_client::Error::Invalid(format!("agent: {e}")))?;
    let request = types::CreateRunRequest::builder().agent(Some(agent)).prompt(prompt.as_str());
    let run = client.create_run().body(request).send().await?.into_inner();
    eprintln!("run {} ({})", run.id, run.status);
    let mut events = client.run_events(&run.id);
    while let Some(event) = events.try_next().await? {
        match event {
            RunEvent::Output { content, .. } => println!("{content}"),
            RunEvent::Error { message, .. } => eprintln!("error: {message}"),
            RunEvent::Status { status, .. } => eprintln!("status: {status}"),
            RunEvent::Complete { status, execution_time_ms, .. } => {
                eprintln!("{status} in {} ms", execution_time_ms.unwrap_or_default());
                std::process::exit(if status == types::RunStatus::Completed { 0 } else { 1 });
            }
        }
    }
    Ok(())
}
