//! What commands print: aligned tables for people, JSON for scripts (`--json`), errors on
//! standard error with their code and request id.

use std::io::IsTerminal;

use anyhow::{bail, Result};
use serde::Serialize;

/// Prints rows under a header, each column as wide as its widest cell.
pub(crate) fn table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> =
            cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row);
    }
}

/// Prints key-value pairs, the keys aligned.
pub(crate) fn fields(pairs: &[(&str, String)]) {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (key, value) in pairs {
        println!("{key:<width$}  {value}");
    }
}

/// Prints a value as pretty JSON.
pub(crate) fn json<T: Serialize>(value: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// An optional value, or `-`.
pub(crate) fn or_dash<T: ToString>(value: Option<T>) -> String {
    value.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

/// A count with its noun, `1 file` or `2 files`.
pub(crate) fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// A timestamp as people read it.
pub(crate) fn time(value: &chrono::DateTime<chrono::Utc>) -> String {
    value.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// Prints an error the way every command does: what was being done and what went wrong on
/// one line, then the API's error code, status, parameter and request id when it gave them,
/// and when to try again when the server said (a rate limit, a queue full).
pub(crate) fn error(error: &anyhow::Error) {
    let mut parts = Vec::new();
    let mut api = None;
    for cause in error.chain() {
        match cause.downcast_ref::<vm0_client::Error>() {
            Some(vm0_client::Error::Api(e)) => {
                parts.push(e.message.clone());
                api = Some(e);
                break;
            }
            // The client's errors already say their causes: the chain ends with them.
            Some(other) => {
                parts.push(other.to_string());
                break;
            }
            None => parts.push(cause.to_string()),
        }
    }
    eprintln!("error: {}", parts.join(": "));
    if let Some(api) = api {
        let mut details = vec![format!("code: {}", api.code), format!("status: {}", api.status)];
        if let Some(param) = &api.param {
            details.push(format!("param: {param}"));
        }
        if let Some(id) = &api.request_id {
            details.push(format!("request id: {id}"));
        }
        eprintln!("  {}", details.join(", "));
        if let Some(wait) = api.retry_after {
            let delta = chrono::TimeDelta::from_std(wait).ok();
            match delta.and_then(|delta| chrono::Utc::now().checked_add_signed(delta)) {
                Some(when) => eprintln!("  try again in {} s (at {})", wait.as_secs(), time(&when)),
                None => eprintln!("  try again in {} s", wait.as_secs()),
            }
        }
        if let Some(limit) = api.rate_limit.filter(|limit| limit.remaining == 0) {
            eprintln!(
                "  this token may make {} requests every {} s",
                limit.limit, limit.window_secs
            );
        }
    }
}

/// Asks a yes/no question on the terminal; without one, the answer is no and the error
/// says to pass `--yes`.
pub(crate) fn confirm(question: &str) -> Result<bool> {
    if !std::io::stdin().is_terminal() {
        bail!("{question} There is no terminal to ask on: pass --yes to confirm.");
    }
    eprint!("{question} [y/N] ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}
