//! Finding what a command argument names: commands take an id or a name alike.

use std::future::Future;

use anyhow::Result;
use futures::{Stream, StreamExt, TryStreamExt};

/// No resource has the id or name a command was given.
#[derive(Debug)]
pub(crate) struct NotFound {
    pub what: &'static str,
    pub key: String,
}

impl std::fmt::Display for NotFound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no {} has the id or name {:?}", self.what, self.key)
    }
}

impl std::error::Error for NotFound {}

/// The resource `key` names: the one with that id, or else the one with that name.
/// `by_name` runs only when no resource has the id.
pub(crate) async fn by_id_or_name<T>(
    what: &'static str,
    key: &str,
    by_id: impl Future<Output = Result<T, vm0_client::Error>>,
    by_name: impl Future<Output = Result<Option<T>, vm0_client::Error>>,
) -> Result<T> {
    match by_id.await {
        Ok(found) => Ok(found),
        Err(e) if e.status() == Some(404) => {
            by_name.await?.ok_or_else(|| NotFound { what, key: key.to_string() }.into())
        }
        Err(e) => Err(e.into()),
    }
}

/// The first item of a listing that `matches`, reading only as many pages as it takes.
pub(crate) async fn first<T>(
    items: impl Stream<Item = Result<T, vm0_client::Error>>,
    matches: impl Fn(&T) -> bool,
) -> Result<Option<T>, vm0_client::Error> {
    let mut items = std::pin::pin!(items);
    while let Some(item) = items.try_next().await? {
        if matches(&item) {
            return Ok(Some(item));
        }
    }
    Ok(None)
}

/// A listing cut to `limit` items when one is given.
pub(crate) async fn collect<T>(
    items: impl Stream<Item = Result<T, vm0_client::Error>>,
    limit: Option<usize>,
) -> Result<Vec<T>, vm0_client::Error> {
    let items = std::pin::pin!(items);
    match limit {
        Some(limit) => items.take(limit).try_collect().await,
        None => items.try_collect().await,
    }
}

/// The fewest characters a short id has, as git abbreviates hashes but longer, so that a
/// short id stays unique as a listing grows.
const SHORT: usize = 12;

/// Whether `id` is a 64-character hex id: a version's, which is its content's SHA-256.
fn is_hash_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The ids as tables and messages show them: a 64-hex id cut to the shortest prefix of at
/// least `SHORT` characters that no other id of `ids` shares; other ids whole. Commands
/// take the short form back (see `expand`).
pub(crate) fn abbreviated(ids: &[&str]) -> Vec<String> {
    ids.iter()
        .map(|id| {
            if !is_hash_id(id) {
                return id.to_string();
            }
            let shared = ids
                .iter()
                .filter(|other| *other != id)
                .map(|other| id.bytes().zip(other.bytes()).take_while(|(a, b)| a == b).count())
                .max();
            id[..SHORT.max(shared.map_or(0, |n| n + 1)).min(id.len())].to_string()
        })
        .collect()
}

/// One id, abbreviated on its own.
pub(crate) fn short(id: &str) -> String {
    abbreviated(&[id]).remove(0)
}

/// Whether `key` may be a short form of a 64-hex id: 4 to 63 hex characters.
pub(crate) fn is_short_hash(key: &str) -> bool {
    (4..64).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The one id of `ids` that starts with `prefix`; an error when none or several do.
pub(crate) fn expand(
    what: &'static str,
    prefix: &str,
    ids: impl IntoIterator<Item = String>,
) -> Result<String> {
    let prefix = prefix.to_ascii_lowercase();
    let matching: Vec<String> = ids.into_iter().filter(|id| id.starts_with(&prefix)).collect();
    match matching.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(NotFound { what, key: prefix }.into()),
        several => anyhow::bail!(
            "{} {what}s have ids starting with {prefix}: give more of it ({})",
            several.len(),
            abbreviated(&several.iter().map(String::as_str).collect::<Vec<_>>()).join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_ids_shorten_to_a_prefix_no_other_shares() {
        let a = format!("{}{}", "ab12".repeat(4), "0".repeat(48));
        let b = format!("{}{}", "ab12".repeat(4), "1".repeat(48));
        let c = "f".repeat(64);
        let short = abbreviated(&[&a, &b, &c, "run_01abc"]);
        assert_eq!(
            short,
            [
                format!("{}0", "ab12".repeat(4)),
                format!("{}1", "ab12".repeat(4)),
                "f".repeat(12),
                "run_01abc".to_string()
            ]
        );
        assert_eq!(expand("version", &short[0], [a.clone(), b.clone(), c.clone()]).unwrap(), a);
        assert!(expand("version", "ab12", [a, b])
            .unwrap_err()
            .to_string()
            .contains("2 versions have ids starting with ab12"));
        assert!(expand("version", "0000", [c]).unwrap_err().downcast_ref::<NotFound>().is_some());
        assert!(
            is_short_hash("ab12") && !is_short_hash("latest") && !is_short_hash(&"a".repeat(64))
        );
    }
}
