//! Auto-pagination: every list operation's builder, with its filters and its `limit` as
//! the page size, becomes a `Stream` of items that follows `nextCursor` until `hasMore` is
//! false.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;

use futures_util::Stream;

use super::Error;
use crate::types;

/// A list operation that can be consumed item by item.
pub trait Paginate<'a>: Sized {
    /// What the list holds.
    type Item: Send + 'a;

    /// Every item of the list, page after page; the first error ends the stream.
    ///
    /// ```no_run
    /// # async fn demo(client: vm0_client::Client) -> Result<(), vm0_client::Error> {
    /// use futures::TryStreamExt;
    /// use vm0_client::Paginate;
    /// let agents: Vec<_> = client.list_agents().limit(100).stream().try_collect().await?;
    /// # Ok(()) }
    /// ```
    fn stream(self) -> Pin<Box<dyn Stream<Item = Result<Self::Item, Error>> + Send + 'a>>;
}

type Page<T> = (Vec<T>, types::Pagination);

struct State<B, T> {
    builder: B,
    cursor: Option<String>,
    buffer: VecDeque<T>,
    done: bool,
}

fn pages<'a, B, T, F, Fut>(
    builder: B,
    fetch: F,
) -> Pin<Box<dyn Stream<Item = Result<T, Error>> + Send + 'a>>
where
    B: Clone + Send + 'a,
    T: Send + 'a,
    F: Fn(B, Option<String>) -> Fut + Send + Sync + 'a,
    Fut: Future<Output = Result<Page<T>, Error>> + Send + 'a,
{
    let state = State { builder, cursor: None, buffer: VecDeque::new(), done: false };
    Box::pin(futures_util::stream::unfold((state, fetch), |(mut state, fetch)| async move {
        loop {
            if let Some(item) = state.buffer.pop_front() {
                return Some((Ok(item), (state, fetch)));
            }
            if state.done {
                return None;
            }
            match fetch(state.builder.clone(), state.cursor.take()).await {
                Ok((items, pagination)) => {
                    state.buffer.extend(items);
                    state.cursor = pagination.next_cursor.filter(|_| pagination.has_more);
                    state.done = state.cursor.is_none();
                }
                Err(error) => {
                    state.done = true;
                    return Some((Err(error), (state, fetch)));
                }
            }
        }
    }))
}

macro_rules! paginate {
    ($($builder:ident => $item:ty,)*) => {$(
        impl<'a> Paginate<'a> for crate::builder::$builder<'a> {
            type Item = $item;

            fn stream(self) -> Pin<Box<dyn Stream<Item = Result<$item, Error>> + Send + 'a>> {
                pages(self, |builder, cursor| async move {
                    let builder = match cursor {
                        Some(cursor) => builder.cursor(cursor),
                        None => builder,
                    };
                    let page = builder.send().await?.into_inner();
                    Ok((page.data, page.pagination))
                })
            }
        }
    )*};
}

paginate! {
    ListAgents => types::Agent,
    ListAgentVersions => types::AgentVersion,
    ListRuns => types::Run,
    ListRunLogs => types::LogEntry,
    ListVolumes => types::Volume,
    ListVolumeVersions => types::VolumeVersion,
    ListArtifacts => types::Artifact,
    ListArtifactVersions => types::ArtifactVersion,
    ListTokens => types::Token,
}
