//! `vm0 tokens`: the API tokens of your account.

use std::io::IsTerminal;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use vm0_client::types::{self, Token};
use vm0_client::{Client, Paginate, Reply};

use crate::lookup::{self, by_id_or_name};
use crate::output;

#[derive(Subcommand)]
pub(crate) enum Command {
    /// List your tokens (never their values).
    List {
        /// Show at most this many.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Create a token; its value is shown this once.
    Create {
        /// What the token is for, such as "ci".
        name: String,
        /// Days until it expires.
        #[arg(long, value_name = "DAYS", default_value_t = 90)]
        expires_in_days: u64,
    },
    /// Revoke a token: requests made with it fail from now on.
    Revoke {
        /// The token's id, or its name when only one token has it.
        token: String,
        /// Do not ask for confirmation.
        #[arg(long, short)]
        yes: bool,
    },
}

pub(crate) async fn run(command: Command, client: &Client, json: bool) -> Result<()> {
    match command {
        Command::List { limit } => {
            let tokens = lookup::collect(client.list_tokens().stream(), limit).await?;
            if json {
                return output::json(&tokens);
            }
            let rows = tokens
                .iter()
                .map(|t| {
                    vec![
                        t.name.clone(),
                        t.id.clone(),
                        format!("{}…", t.token_prefix),
                        output::or_dash(t.last_used_at.as_ref().map(output::time)),
                        output::time(&t.expires_at),
                    ]
                })
                .collect();
            output::table(&["NAME", "ID", "TOKEN", "LAST USED", "EXPIRES"], rows);
        }
        Command::Create { name, expires_in_days } => {
            let body = types::CreateTokenRequest {
                name: crate::parse_arg(&name).context("the token name")?,
                expires_in_days: expires_in_days
                    .try_into()
                    .map_err(|_| anyhow::anyhow!("--expires-in-days must be at least 1"))?,
            };
            let created = client.create_token().body(body).send().await.body()?;
            if json {
                return output::json(&created);
            }
            println!("{}", created.token.as_str());
            if std::io::stdout().is_terminal() {
                eprintln!();
                eprintln!(
                    "Token {} ({}) expires {}. Copy it now: it is not shown again.",
                    created.name,
                    created.id,
                    output::time(&created.expires_at)
                );
            }
        }
        Command::Revoke { token, yes } => {
            let token = find(client, &token).await?;
            if !yes
                && !output::confirm(&format!(
                    "Revoke token {} ({}, {}…)?",
                    token.name, token.id, token.token_prefix
                ))?
            {
                bail!("not revoked");
            }
            client.revoke_token().id(&token.id).send().await.body()?;
            if json {
                return output::json(&serde_json::json!({ "id": token.id, "revoked": true }));
            }
            println!("Revoked token {} ({}).", token.name, token.id);
        }
    }
    Ok(())
}

/// Every token's name by its id, for the tables that say which token made something.
pub(crate) async fn names(client: &Client) -> Result<std::collections::HashMap<String, String>> {
    Ok(lookup::collect(client.list_tokens().stream(), None)
        .await?
        .into_iter()
        .map(|t| (t.id, t.name))
        .collect())
}

/// The token `key` names: by id, or by a name only one token has.
async fn find(client: &Client, key: &str) -> Result<Token> {
    let by_id = async { client.get_token().id(key).send().await.body() };
    let by_name = async {
        let named: Vec<Token> = lookup::collect(client.list_tokens().stream(), None)
            .await?
            .into_iter()
            .filter(|t| t.name == key)
            .collect();
        if named.len() > 1 {
            let ids: Vec<&str> = named.iter().map(|t| t.id.as_str()).collect();
            return Err(vm0_client::Error::Invalid(format!(
                "{} tokens are named {key:?} ({}): give the id",
                named.len(),
                ids.join(", ")
            )));
        }
        Ok(named.into_iter().next())
    };
    by_id_or_name("token", key, by_id, by_name).await
}
