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
        Err(e) if e.status() == Some(404) => by_name.await?.ok_or_else(|| NotFound { what, key: key.to_string() }.into()),
        Err(e) => Err(e.into()),
    }
}

/// The first item of a listing that `matches`, reading only as many pages as it takes.
pub(crate) async fn first<T>(items: impl Stream<Item = Result<T, vm0_client::Error>>, matches: impl Fn(&T) -> bool) -> Result<Option<T>, vm0_client::Error> {
    let mut items = std::pin::pin!(items);
    while let Some(item) = items.try_next().await? {
        if matches(&item) {
            return Ok(Some(item));
        }
    }
    Ok(None)
}

/// A listing cut to `limit` items when one is given.
pub(crate) async fn collect<T>(items: impl Stream<Item = Result<T, vm0_client::Error>>, limit: Option<usize>) -> Result<Vec<T>, vm0_client::Error> {
    let items = std::pin::pin!(items);
    match limit {
        Some(limit) => items.take(limit).try_collect().await,
        None => items.try_collect().await,
    }
}
