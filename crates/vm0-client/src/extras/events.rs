//! A run's events as a typed stream: `GET /v1/runs/{id}/events` read as Server-Sent
//! Events, resumed with `Last-Event-ID` when the connection drops, until `complete`.

use std::pin::Pin;

use eventsource_stream::{Event, EventStreamError, Eventsource};
use futures_util::{Stream, StreamExt};

use super::{backoff, error, Client, Error};
use crate::types::{self, RunStatus};

/// How many times in a row a dropped stream is reconnected before giving up.
const RECONNECTS: u32 = 5;

/// One event of a run. Heartbeats, which only keep the connection alive, are left out.
#[derive(Debug, Clone, PartialEq)]
pub enum RunEvent {
    /// The run's status changed.
    Status {
        /// The event's id, increasing within the run.
        id: u64,
        /// The new status.
        status: RunStatus,
    },
    /// One line of the agent's output.
    Output {
        /// The event's id.
        id: u64,
        /// The line, without its line ending.
        content: String,
        /// The stream the agent wrote it to.
        stream: types::OutputStream,
    },
    /// An error of the run.
    Error {
        /// The event's id.
        id: u64,
        /// What went wrong.
        message: String,
    },
    /// The last event: the run ended.
    Complete {
        /// The event's id.
        id: u64,
        /// How it ended.
        status: RunStatus,
        /// How long it executed, in milliseconds; none when it never started.
        execution_time_ms: Option<i64>,
    },
}

impl RunEvent {
    /// The event's id.
    pub fn id(&self) -> u64 {
        match self {
            RunEvent::Status { id, .. }
            | RunEvent::Output { id, .. }
            | RunEvent::Error { id, .. }
            | RunEvent::Complete { id, .. } => *id,
        }
    }
}

/// The typed event of one SSE message; `None` for heartbeats and unknown event names.
fn parse(id: &str, event: &str, data: &str) -> Result<Option<RunEvent>, Error> {
    let id: u64 = id.parse().map_err(|_| Error::Transport {
        message: format!("an event id that is not a number: {id:?}"),
        request_id: None,
    })?;
    let invalid = |e: serde_json::Error| Error::Transport {
        message: format!("unreadable {event} event {id}: {e}"),
        request_id: None,
    };
    Ok(Some(match event {
        "status" => RunEvent::Status {
            id,
            status: serde_json::from_str::<types::RunStatusData>(data).map_err(invalid)?.status,
        },
        "output" => {
            let data: types::RunOutputData = serde_json::from_str(data).map_err(invalid)?;
            RunEvent::Output { id, content: data.content, stream: data.stream }
        }
        "error" => RunEvent::Error {
            id,
            message: serde_json::from_str::<types::RunErrorData>(data).map_err(invalid)?.message,
        },
        "complete" => {
            let data: types::RunCompleteData = serde_json::from_str(data).map_err(invalid)?;
            RunEvent::Complete {
                id,
                status: data.status,
                execution_time_ms: data.execution_time_ms,
            }
        }
        _ => return Ok(None),
    }))
}

/// The messages of one connection; an error ends the connection, which is then resumed.
type Messages = Pin<Box<dyn Stream<Item = Result<Event, EventStreamError<reqwest::Error>>> + Send>>;

struct Follow {
    client: Client,
    run_id: String,
    last_id: u64,
    messages: Option<Messages>,
    failures: u32,
    done: bool,
    /// Whether the connection open now has given an event.
    delivered: bool,
}

/// Opens the event stream after `last_id`.
async fn connect(client: Client, run_id: String, last_id: u64) -> Result<Messages, Error> {
    let url = format!("{}/v1/runs/{run_id}/events", client.base_url());
    let mut request = client
        .authorize(client.http().get(url))
        .header(reqwest::header::ACCEPT, "text/event-stream");
    if last_id > 0 {
        request = request.header("Last-Event-ID", last_id.to_string());
    }
    let response = request.send().await?;
    if !response.status().is_success() {
        return Err(error::from_response(response).await);
    }
    Ok(Box::pin(response.bytes_stream().eventsource()))
}

/// Whether run `run_id` has ended, as far as a look at it can tell.
async fn run_ended(client: &Client, run_id: &str) -> bool {
    let run = client.get_run().id(run_id).send().await;
    run.is_ok_and(|run| {
        !matches!(run.into_inner().status, types::RunStatus::Pending | types::RunStatus::Running)
    })
}

impl Follow {
    async fn next(mut self) -> Option<(Result<RunEvent, Error>, Self)> {
        loop {
            if self.done {
                return None;
            }
            let Some(messages) = self.messages.as_mut() else {
                match connect(self.client.clone(), self.run_id.clone(), self.last_id).await {
                    Ok(messages) => {
                        self.messages = Some(messages);
                        self.delivered = false;
                    }
                    // Client errors (a missing run, a bad token) are final; others are retried.
                    Err(error)
                        if error.status().is_some_and(|s| s < 500)
                            || self.failures >= RECONNECTS =>
                    {
                        self.done = true;
                        return Some((Err(error), self));
                    }
                    Err(_) => {
                        tokio::time::sleep(backoff(self.failures)).await;
                        self.failures += 1;
                    }
                }
                continue;
            };
            match messages.next().await {
                Some(Ok(message)) => match parse(&message.id, &message.event, &message.data) {
                    // An id at or before the last one is a repeat after a reconnection.
                    Ok(Some(event)) if event.id() > self.last_id => {
                        self.last_id = event.id();
                        self.failures = 0;
                        self.delivered = true;
                        self.done = matches!(event, RunEvent::Complete { .. });
                        return Some((Ok(event), self));
                    }
                    Ok(_) => {}
                    Err(error) => {
                        self.done = true;
                        return Some((Err(error), self));
                    }
                },
                // A stream that gave nothing and ended before `complete`: over if the run has
                // ended (without its `complete` event, which the server's stream ends on
                // too). One that gave events is resumed first, for what may follow them.
                None if !self.delivered && run_ended(&self.client, &self.run_id).await => {
                    return None
                }
                // The connection dropped or the stream ended before `complete`: resume.
                Some(Err(_)) | None => {
                    self.messages = None;
                    if self.failures >= RECONNECTS {
                        self.done = true;
                        let message =
                            format!("the event stream of run {} kept dropping", self.run_id);
                        return Some((Err(Error::Transport { message, request_id: None }), self));
                    }
                    tokio::time::sleep(backoff(self.failures)).await;
                    self.failures += 1;
                }
            }
        }
    }
}

impl Client {
    /// The run's events from its first, then live until it ends, as typed [`RunEvent`]s.
    /// A dropped connection is resumed with `Last-Event-ID`, so no event is lost or
    /// repeated; heartbeats are left out.
    pub fn run_events(
        &self,
        run_id: &str,
    ) -> Pin<Box<dyn Stream<Item = Result<RunEvent, Error>> + Send>> {
        self.run_events_after(run_id, 0)
    }

    /// The run's events after the one with id `last_event_id`.
    pub fn run_events_after(
        &self,
        run_id: &str,
        last_event_id: u64,
    ) -> Pin<Box<dyn Stream<Item = Result<RunEvent, Error>> + Send>> {
        let follow = Follow {
            client: self.clone(),
            run_id: run_id.to_string(),
            last_id: last_event_id,
            messages: None,
            failures: 0,
            done: false,
            delivered: false,
        };
        Box::pin(futures_util::stream::unfold(follow, Follow::next))
    }

    /// Follows the run until it ends, and returns it as it ended.
    pub async fn wait_for_run(&self, run_id: &str) -> Result<types::RunDetail, Error> {
        let mut events = self.run_events(run_id);
        while let Some(event) = events.next().await {
            if let RunEvent::Complete { .. } = event? {
                break;
            }
        }
        Ok(self.get_run().id(run_id).send().await?.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::{parse, RunEvent};
    use crate::types::{self, RunStatus};

    #[test]
    fn a_status_event_keeps_its_status() {
        assert_eq!(
            parse("1", "status", r#"{"status":"running"}"#).unwrap(),
            Some(RunEvent::Status { id: 1, status: RunStatus::Running })
        );
    }

    #[test]
    fn an_output_event_keeps_its_line() {
        let line = parse("2", "output", r#"{"content":"Hello","stream":"stderr"}"#).unwrap();
        assert_eq!(
            line,
            Some(RunEvent::Output {
                id: 2,
                content: "Hello".into(),
                stream: types::OutputStream::Stderr
            })
        );
    }

    #[test]
    fn an_error_event_keeps_its_message() {
        assert_eq!(
            parse("3", "error", r#"{"message":"out of memory"}"#).unwrap(),
            Some(RunEvent::Error { id: 3, message: "out of memory".into() })
        );
    }

    #[test]
    fn a_complete_event_keeps_its_status_and_execution_time() {
        let complete =
            parse("4", "complete", r#"{"executionTimeMs":8012,"status":"completed"}"#).unwrap();
        assert_eq!(
            complete,
            Some(RunEvent::Complete {
                id: 4,
                status: RunStatus::Completed,
                execution_time_ms: Some(8012)
            })
        );
        let never_started =
            parse("2", "complete", r#"{"executionTimeMs":null,"status":"cancelled"}"#).unwrap();
        assert_eq!(
            never_started,
            Some(RunEvent::Complete {
                id: 2,
                status: RunStatus::Cancelled,
                execution_time_ms: None
            })
        );
    }

    #[test]
    fn a_heartbeat_and_an_unknown_event_are_left_out() {
        assert_eq!(parse("4", "heartbeat", "{}").unwrap(), None);
        assert_eq!(parse("4", "progress", r#"{"percent":50}"#).unwrap(), None);
    }

    #[test]
    fn data_of_another_event_s_shape_is_an_error_not_a_guess() {
        assert!(parse("4", "complete", r#"{"content":"Hello"}"#).is_err());
        assert!(parse("4", "status", r#"{"status":"completed","executionTimeMs":1}"#).is_err());
    }

    /// The generated `RunEvent` is tagged by `event`, as the spec discriminates it: each
    /// branch reads as its own variant with every field, and writes back the same.
    #[test]
    fn the_generated_run_event_reads_each_branch_by_its_name() {
        let wire = [
            (r#"{"data":{"status":"running"},"event":"status","id":1}"#, "Status"),
            (r#"{"data":{"content":"Hello","stream":"stdout"},"event":"output","id":2}"#, "Output"),
            (r#"{"data":{"message":"out of memory"},"event":"error","id":3}"#, "Error"),
            (
                concat!(
                    r#"{"data":{"executionTimeMs":8012,"status":"completed"},"#,
                    r#""event":"complete","id":4}"#
                ),
                "Complete",
            ),
            (r#"{"data":{},"event":"heartbeat","id":4}"#, "Heartbeat"),
        ];
        for (text, variant) in wire {
            let event: types::RunEvent = serde_json::from_str(text).unwrap();
            assert!(format!("{event:?}").starts_with(variant), "{text} read as {event:?}");
            assert_eq!(
                serde_json::to_value(&event).unwrap(),
                serde_json::from_str::<serde_json::Value>(text).unwrap()
            );
        }
        let complete: types::RunEvent = serde_json::from_str(wire[3].0).unwrap();
        assert!(matches!(
            complete,
            types::RunEvent::Complete {
                data: types::RunCompleteData { execution_time_ms: Some(8012), .. },
                ..
            }
        ));
    }
}
