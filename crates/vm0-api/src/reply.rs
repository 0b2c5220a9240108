//! Success responses of the generated handlers: JSON, empty, and Server-Sent Events.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use axum::body::{Body, Bytes};
use axum::http::header::{self, HeaderName};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt};
use serde::Serialize;

use crate::error::ApiError;
use crate::versions::Omitted;

/// A run's events as the implementation produces them, in order. The router writes each
/// as an SSE message (`id:`, `event:`, one line of JSON `data:`); the stream ends the
/// response when it ends, so it should end after the `complete` event.
pub type EventStream = Pin<Box<dyn Stream<Item = Arc<SentEvent>> + Send>>;

/// A run event as streams send it. Its SSE message is written by the first stream that
/// sends it to a caller of the current version and shared by every other stream the same
/// `Arc` reaches: one live event sent to ten thousand streams is serialized once, not ten
/// thousand times.
pub struct SentEvent {
    event: vm0_types::RunEvent,
    message: OnceLock<Bytes>,
}

impl SentEvent {
    pub fn new(event: vm0_types::RunEvent) -> Arc<SentEvent> {
        Arc::new(SentEvent { event, message: OnceLock::new() })
    }

    pub fn event(&self) -> &vm0_types::RunEvent {
        &self.event
    }

    /// The SSE message for a caller who is not to see the `omitted` properties.
    fn message(&self, omitted: &Omitted) -> Bytes {
        if omitted.is_empty() {
            return self.message.get_or_init(|| EventLines::of(&self.event).message()).clone();
        }
        EventLines::omitting(&self.event, omitted).message()
    }
}

/// A run event as its SSE lines say it, and as a store keeps it: its id, its `event` name
/// and its `data` as one line of JSON.
pub struct EventLines {
    pub id: u64,
    pub event: String,
    pub data: String,
}

impl EventLines {
    /// The lines of `event`, which serializes as the spec's object `{"id", "event", "data"}`.
    pub fn of(event: &vm0_types::RunEvent) -> EventLines {
        EventLines::omitting(event, &Omitted::default())
    }

    /// The lines of `event` without the `omitted` properties.
    fn omitting(event: &vm0_types::RunEvent, omitted: &Omitted) -> EventLines {
        let mut value = serde_json::to_value(event).expect("a run event serializes");
        // The id and name frame the event: they are read before any omission, which can
        // only take from what the event says.
        let id = value["id"].as_u64().expect("a run event has an id");
        let name = value["event"].as_str().expect("a run event has a name").to_string();
        omitted.apply(&mut value);
        EventLines { id, event: name, data: value["data"].to_string() }
    }

    /// The lines as one SSE message. None of them holds a line break: the id is a number,
    /// the name one of the spec's, and the data one line of JSON (a line break inside a
    /// string is escaped).
    fn message(&self) -> Bytes {
        format!("id: {}\nevent: {}\ndata: {}\n\n", self.id, self.event, self.data).into()
    }
}

/// A JSON body with `status`, without the `omitted` properties.
pub(crate) fn json<T: Serialize>(status: StatusCode, body: &T, omitted: &Omitted) -> Response {
    if omitted.is_empty() {
        return (status, axum::Json(body)).into_response();
    }
    match serde_json::to_value(body) {
        Ok(mut value) => {
            omitted.apply(&mut value);
            (status, axum::Json(value)).into_response()
        }
        Err(error) => {
            ApiError::internal(format!("the response does not serialize: {error}")).into_response()
        }
    }
}

/// A JSON body with `status` and its resource's `ETag`, without the `omitted` properties.
pub(crate) fn tagged<T: Serialize>(
    status: StatusCode,
    output: &crate::Tagged<T>,
    omitted: &Omitted,
) -> Response {
    let mut response = json(status, &output.body, omitted);
    if let Ok(value) = output.etag.as_str().parse() {
        response.headers_mut().insert(axum::http::header::ETAG, value);
    }
    response
}

/// No body, with `status` (204).
pub(crate) fn empty(status: StatusCode) -> Response {
    status.into_response()
}

/// A `text/event-stream` of the run's events, without the `omitted` properties.
pub(crate) fn events(stream: EventStream, omitted: Omitted) -> Response {
    let messages = stream.map(move |event| Ok::<_, Infallible>(event.message(&omitted)));
    let headers = [
        (header::CONTENT_TYPE, "text/event-stream"),
        (header::CACHE_CONTROL, "no-cache"),
        // Proxies must not buffer the stream.
        (HeaderName::from_static("x-accel-buffering"), "no"),
    ];
    (headers, Body::from_stream(messages)).into_response()
}
