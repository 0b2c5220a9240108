//! `vm0 auth`: the API URL and token every other command uses.

use std::io::{BufRead, IsTerminal};

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use vm0_client::{Client, Paginate};

use crate::config::{self, Stored};
use crate::{lookup, output};

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Check an API token against the API and store it.
    ///
    /// The token is asked for with hidden input, or read from standard input when that
    /// is not a terminal. It is stored with the API's URL in the user's configuration
    /// directory, readable by the user only.
    Login {
        /// The API's base URL [default: VM0_API_URL, the stored URL, or https://api.vm0.ai].
        #[arg(long, value_name = "URL")]
        api_url: Option<String>,
        /// The token itself, instead of asking for it (it stays in your shell's history:
        /// prefer the prompt or standard input).
        #[arg(long, value_name = "TOKEN")]
        token: Option<String>,
    },
    /// Print the token in effect, for CI: store it as the secret VM0_TOKEN.
    SetupToken,
    /// Show which API and token are in effect, and whether the API accepts the token.
    Status,
    /// Remove the stored token and URL.
    Logout,
}

pub(crate) async fn run(command: Command, json: bool) -> Result<()> {
    match command {
        Command::Login { api_url, token } => login(api_url, token, json).await,
        Command::SetupToken => setup_token(json),
        Command::Status => status(json).await,
        Command::Logout => logout(json),
    }
}

/// A client for the API and token in effect; an error that says how to log in when there
/// is no token.
pub(crate) fn client() -> Result<Client> {
    let effective = config::effective()?;
    let Some(token) = effective.token else {
        bail!("not logged in to {}: run `vm0 auth login`, or set VM0_TOKEN", effective.api_url);
    };
    // A wait of more than a few seconds is said, with when to try again, rather than
    // waited out in silence.
    let client = Client::builder().base_url(&effective.api_url).token(&token);
    client
        .longest_wait(std::time::Duration::from_secs(5))
        .build()
        .with_context(|| format!("the token from {}", effective.source))
}

/// The token's name, found by its prefix among the tokens it may list; checks the token.
async fn token_name(client: &Client, token: &str) -> Result<Option<String>, vm0_client::Error> {
    Ok(lookup::first(client.list_tokens().stream(), |t| token.starts_with(&t.token_prefix))
        .await?
        .map(|t| t.name))
}

async fn login(api_url: Option<String>, token: Option<String>, json: bool) -> Result<()> {
    let api_url = match api_url {
        Some(url) => url,
        None => config::effective()?.api_url,
    };
    let token = match token {
        Some(token) => token,
        None if std::io::stdin().is_terminal() => {
            eprintln!(
                "Paste an API token for {api_url} (vm0_live_…); the server prints one on its \
                 first start."
            );
            rpassword::prompt_password("Token: ").context("reading the token")?
        }
        None => {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .context("reading the token from standard input")?;
            line
        }
    };
    let token = token.trim().to_string();
    let client = Client::new(&api_url, &token)?;
    let name = token_name(&client, &token)
        .await
        .with_context(|| format!("checking the token against {api_url}"))?;
    let path = config::save(&Stored { api_url: client.base_url().to_string(), token })?;
    if json {
        let base_url = client.base_url();
        output::json(
            &serde_json::json!({ "apiUrl": base_url, "tokenName": name, "configFile": path }),
        )?;
    } else {
        let name = name.map(|n| format!(" with the token \"{n}\"")).unwrap_or_default();
        println!("Logged in to {}{name}.", client.base_url());
        println!("Saved in {} (readable by you only).", path.display());
    }
    Ok(())
}

fn setup_token(json: bool) -> Result<()> {
    let effective = config::effective()?;
    let Some(token) = effective.token else {
        bail!("not logged in: run `vm0 auth login` first");
    };
    if json {
        output::json(&serde_json::json!({ "apiUrl": effective.api_url, "token": token }))?;
    } else {
        println!("{token}");
        if std::io::stdout().is_terminal() {
            eprintln!();
            eprintln!(
                "Store it as the secret VM0_TOKEN of your CI (and VM0_API_URL={}); keep it out \
                 of logs.",
                effective.api_url
            );
        }
    }
    Ok(())
}

async fn status(json: bool) -> Result<()> {
    let effective = config::effective()?;
    let Some(token) = effective.token.clone() else {
        if json {
            output::json(&serde_json::json!({ "apiUrl": effective.api_url, "loggedIn": false }))?;
        }
        bail!("not logged in: run `vm0 auth login`, or set VM0_TOKEN");
    };
    let client = Client::new(&effective.api_url, &token)?;
    let checked = token_name(&client, &token).await;
    let prefix = format!("{}…", &token[..token.len().min(13)]);
    if json {
        output::json(&serde_json::json!({
            "apiUrl": effective.api_url,
            "loggedIn": true,
            "source": effective.source,
            "tokenPrefix": prefix,
            "tokenName": checked.as_ref().ok().cloned().flatten(),
            "valid": checked.is_ok(),
        }))?;
    } else {
        output::fields(&[
            ("API", effective.api_url.clone()),
            ("Token", prefix),
            ("From", effective.source.to_string()),
            ("Name", output::or_dash(checked.as_ref().ok().cloned().flatten())),
            ("Valid", if checked.is_ok() { "yes".into() } else { "no".into() }),
        ]);
    }
    checked.map(|_| ()).map_err(|e| anyhow::Error::new(e).context("the API refused the token"))
}

fn logout(json: bool) -> Result<()> {
    let path = config::path()?;
    let removed = config::remove()?;
    if json {
        output::json(&serde_json::json!({ "removed": removed, "configFile": path }))?;
    } else if removed {
        println!("Logged out: removed {}.", path.display());
    } else {
        println!("Not logged in: there is no {}.", path.display());
    }
    if std::env::var_os("VM0_TOKEN").is_some_and(|v| !v.is_empty()) {
        eprintln!("VM0_TOKEN is still set in your environment and still applies.");
    }
    Ok(())
}
