//! Where `vm0 auth login` keeps the API URL and token: `config.json` in the user's config
//! directory (`$XDG_CONFIG_HOME/vm0` or `~/.config/vm0` on Linux), readable by its owner
//! only. `VM0_API_URL` and `VM0_TOKEN` override it.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// What is stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Stored {
    pub api_url: String,
    pub token: String,
}

/// The configuration file's path.
pub(crate) fn path() -> Result<PathBuf> {
    Ok(dirs::config_dir()
        .context("this system has no configuration directory")?
        .join("vm0")
        .join("config.json"))
}

/// The stored configuration, if any.
pub(crate) fn load() -> Result<Option<Stored>> {
    let path = path()?;
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some(
            serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Writes the configuration, readable and writable by its owner only (0600).
pub(crate) fn save(stored: &Stored) -> Result<PathBuf> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let path = path()?;
    let folder = path.parent().expect("the file is in a folder");
    std::fs::create_dir_all(folder).with_context(|| format!("creating {}", folder.display()))?;
    let temp = folder.join(".config.json.partial");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temp)?;
    // The mode of an existing file is not changed by open: set it.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(serde_json::to_string_pretty(stored)?.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&temp, &path)?;
    Ok(path)
}

/// Removes the configuration; whether there was one.
pub(crate) fn remove() -> Result<bool> {
    match std::fs::remove_file(path()?) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The API URL and token in effect, and where each comes from.
pub(crate) struct Effective {
    pub api_url: String,
    pub token: Option<String>,
    pub source: &'static str,
}

/// The environment over the file over the default URL. The stored token goes only to the
/// URL it was stored for: with `VM0_API_URL` naming another API and no `VM0_TOKEN`, there
/// is no token, rather than one sent to a server it was never meant for.
pub(crate) fn effective() -> Result<Effective> {
    let stored = load()?;
    let env_url = std::env::var("VM0_API_URL")
        .ok()
        .filter(|v| !v.is_empty())
        .map(|v| v.trim_end_matches('/').to_string());
    let env_token = std::env::var("VM0_TOKEN").ok().filter(|v| !v.is_empty());
    let api_url = env_url
        .or_else(|| stored.as_ref().map(|s| s.api_url.clone()))
        .unwrap_or_else(|| vm0_client::DEFAULT_BASE_URL.to_string());
    let stored_token = stored.filter(|s| s.api_url == api_url).map(|s| s.token);
    let (token, source) = match (env_token, stored_token) {
        (Some(token), _) => (Some(token), "environment (VM0_TOKEN)"),
        (None, Some(token)) => (Some(token), "config file"),
        (None, None) => (None, "none"),
    };
    Ok(Effective { api_url, token, source })
}
