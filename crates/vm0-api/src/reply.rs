//! Success responses of the generated handlers: JSON, empty, and Server-Sent Events.

use std::convert::Infallible;
use std::pin::Pin;

use axum::http::StatusCode;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt};
use serde::Serialize;

use crate::error::ApiError;
use crate::versions::Omitted;

/// A run's events as the implementation produces them, in order. The router writes each
/// as an SSE message (`id:`, `event:`, one line of JSON `data:`); the stream ends the
/// response when it ends, so it should end after the `complete` event.
pub type EventStream = Pin<Box<dyn Stream<Item = vm0_types::RunEvent> + Send>>;

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
    let messages = stream.map(move |event| {
        let lines = EventLines::omitting(&event, &omitted);
        Ok::<_, Infallible>(
            Event::default().id(lines.id.to_string()).event(lines.event).data(lines.data),
        )
    });
    let mut response = Sse::new(messages).into_response();
    // Proxies must not buffer the stream.
    response.headers_mut().insert("x-accel-buffering", "no".parse().expect("a valid header value"));
    response
}
