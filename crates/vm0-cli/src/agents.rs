//! `vm0 agents`: agents and their versions.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use vm0_client::types::{self, Agent, AgentConfig};
use vm0_client::{Client, Paginate, Reply};

use crate::lookup::{self, by_id_or_name};
use crate::output;

#[derive(Subcommand)]
pub(crate) enum Command {
    /// List your agents.
    List {
        /// Show at most this many.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Show an agent and the configuration of its current version.
    Get {
        /// The agent's name or id.
        agent: String,
        /// Show this version instead of the current one: its number or id.
        #[arg(long)]
        version: Option<String>,
    },
    /// List an agent's versions.
    Versions {
        /// The agent's name or id.
        agent: String,
        /// Show at most this many.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Create an agent from a configuration file.
    Create {
        /// The new agent's name: lowercase letters, digits and hyphens.
        name: String,
        /// The configuration, a JSON object (`-` for standard input); the reference
        /// server's local executor takes `command`, `timeoutSeconds` and `files`.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Give an agent a new version with the configuration in a file.
    Update {
        /// The agent's name or id.
        agent: String,
        /// The new configuration, a JSON object (`-` for standard input).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Delete an agent and all its versions (its runs are kept).
    Delete {
        /// The agent's name or id.
        agent: String,
        /// Do not ask for confirmation.
        #[arg(long, short)]
        yes: bool,
    },
}

pub(crate) async fn run(command: Command, client: &Client, json: bool) -> Result<()> {
    match command {
        Command::List { limit } => list(client, limit, json).await,
        Command::Get { agent, version } => show(client, &agent, version, json).await,
        Command::Versions { agent, limit } => versions(client, &agent, limit, json).await,
        Command::Create { name, config } => create(client, &name, &config, json).await,
        Command::Update { agent, config } => update(client, &agent, &config, json).await,
        Command::Delete { agent, yes } => delete(client, &agent, yes, json).await,
    }
}

/// `vm0 agents list`.
async fn list(client: &Client, limit: Option<usize>, json: bool) -> Result<()> {
    let agents = lookup::collect(client.list_agents().stream(), limit).await?;
    if json {
        return output::json(&agents);
    }
    let rows = agents
        .iter()
        .map(|a| vec![a.name.to_string(), a.id.clone(), output::time(&a.updated_at)])
        .collect();
    output::table(&["NAME", "ID", "UPDATED"], rows);
    Ok(())
}

/// `vm0 agents get`: an agent and one version's configuration (its current one by default).
async fn show(client: &Client, agent: &str, version: Option<String>, json: bool) -> Result<()> {
    let agent = find(client, agent).await?;
    let version = match version {
        Some(version) => find_version(client, &agent, &version).await?,
        None => client
            .get_agent_version()
            .id(&agent.id)
            .version_id(&agent.current_version_id)
            .send()
            .await
            .body()?,
    };
    if json {
        let mut value = serde_json::to_value(&agent)?;
        value["version"] = serde_json::to_value(&version)?;
        return output::json(&value);
    }
    output::fields(&[
        ("Name", agent.name.to_string()),
        ("ID", agent.id.clone()),
        ("Created", output::time(&agent.created_at)),
        ("Updated", output::time(&agent.updated_at)),
        (
            "Version",
            format!(
                "{} ({}){}",
                version.version_number,
                version.id,
                if version.id == agent.current_version_id { ", current" } else { "" }
            ),
        ),
    ]);
    println!("Configuration:");
    println!("{}", serde_json::to_string_pretty(&version.config)?);
    Ok(())
}

/// `vm0 agents versions`.
async fn versions(client: &Client, agent: &str, limit: Option<usize>, json: bool) -> Result<()> {
    let agent = find(client, agent).await?;
    let versions =
        lookup::collect(client.list_agent_versions().id(&agent.id).stream(), limit).await?;
    if json {
        return output::json(&versions);
    }
    let rows = versions
        .iter()
        .map(|v| {
            let current = if v.id == agent.current_version_id { "current" } else { "" };
            vec![
                v.version_number.to_string(),
                v.id.clone(),
                output::time(&v.created_at),
                current.into(),
            ]
        })
        .collect();
    output::table(&["VERSION", "ID", "CREATED", ""], rows);
    Ok(())
}

/// `vm0 agents create`.
async fn create(client: &Client, name: &str, config: &Path, json: bool) -> Result<()> {
    let body = types::CreateAgentRequest {
        name: crate::parse_arg(name).context("the agent name")?,
        config: read_config(config)?,
    };
    let agent = client.create_agent().body(body).send().await.body()?;
    if json {
        return output::json(&agent);
    }
    println!("Created agent {} ({}), version 1.", agent.name.as_str(), agent.id);
    Ok(())
}

/// `vm0 agents update`: a new version, which becomes the current one.
async fn update(client: &Client, agent: &str, config: &Path, json: bool) -> Result<()> {
    let agent = find(client, agent).await?;
    let body = types::UpdateAgentRequest { config: read_config(config)? };
    let agent = client.update_agent().id(&agent.id).body(body).send().await.body()?;
    if json {
        return output::json(&agent);
    }
    let version = client
        .get_agent_version()
        .id(&agent.id)
        .version_id(&agent.current_version_id)
        .send()
        .await
        .body()?;
    println!(
        "Updated agent {}: version {} ({}) is current.",
        agent.name.as_str(),
        version.version_number,
        version.id
    );
    Ok(())
}

/// `vm0 agents delete`, once confirmed.
async fn delete(client: &Client, agent: &str, yes: bool, json: bool) -> Result<()> {
    let agent = find(client, agent).await?;
    if !yes
        && !output::confirm(&format!(
            "Delete agent {} ({}) and all its versions?",
            agent.name.as_str(),
            agent.id
        ))?
    {
        bail!("not deleted");
    }
    client.delete_agent().id(&agent.id).send().await.body()?;
    if json {
        return output::json(&serde_json::json!({ "id": agent.id, "deleted": true }));
    }
    println!("Deleted agent {} ({}).", agent.name.as_str(), agent.id);
    Ok(())
}

/// The agent `key` names, by id or name.
pub(crate) async fn find(client: &Client, key: &str) -> Result<Agent> {
    let by_id = async { client.get_agent().id(key).send().await.body() };
    let by_name = async {
        // A key that is not a valid name can only have been an id.
        let Ok(name) = key.parse::<types::AgentName>() else { return Ok(None) };
        lookup::first(client.list_agents().name(name).stream(), |a| a.name.as_str() == key).await
    };
    by_id_or_name("agent", key, by_id, by_name).await
}

/// One version of `agent`, by number or id.
async fn find_version(
    client: &Client,
    agent: &Agent,
    key: &str,
) -> Result<types::AgentVersionDetail> {
    let id = match key.parse::<u64>() {
        Ok(number) => {
            lookup::first(client.list_agent_versions().id(&agent.id).stream(), |v| {
                v.version_number.get() == number
            })
            .await?
            .with_context(|| format!("agent {} has no version {number}", agent.name.as_str()))?
            .id
        }
        Err(_) => key.to_string(),
    };
    Ok(client.get_agent_version().id(&agent.id).version_id(id).send().await.body()?)
}

/// An agent configuration from a JSON file, or from standard input for `-`.
fn read_config(path: &Path) -> Result<AgentConfig> {
    let text = if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading the configuration from standard input")?;
        text
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
    };
    let value: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not valid JSON", path.display()))?;
    match value {
        serde_json::Value::Object(map) => Ok(AgentConfig(map)),
        _ => bail!("{}: the configuration must be a JSON object", path.display()),
    }
}
