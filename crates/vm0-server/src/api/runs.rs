//! The run operations of the API, over the store and the engine, and the event stream
//! of `streamRunEvents`: stored events first, then live ones from the engine's memory.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use vm0_api::{ApiError, EventStream, ListRunLogsParams, ListRunsParams, StreamRunEventsParams};
use vm0_types::{self as types, RunStatus};

use super::{App, Principal};
use crate::ids;
use crate::metrics::SubscriberGuard;
use crate::runs::{Engine, Subscription};
use crate::store::{
    event_id, positive, AgentRow, Kind, LogQuery, RunFilter, RunRow, RunStore, SessionRow,
    StorageRow, Store, StoreError,
};

/// How long a stream stays quiet before a heartbeat.
const HEARTBEAT: Duration = Duration::from_secs(15);
/// Stored events read at once when a stream replays.
const REPLAY_BATCH: i64 = 500;

/// Environment names a run's variables and secrets may use.
fn check_names(map: &HashMap<String, String>, param: &str) -> Result<(), ApiError> {
    for name in map.keys() {
        let mut chars = name.chars();
        let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(ApiError::invalid_parameter(
                format!("{param}.{name}"),
                format!("{param} names must be environment variable names (letters, digits, _)"),
            ));
        }
        if name.starts_with("VM0_") || name == "PATH" || name == "HOME" {
            return Err(ApiError::invalid_parameter(
                format!("{param}.{name}"),
                format!("{name} is set by the server"),
            ));
        }
    }
    Ok(())
}

/// Timestamps in cursor scopes, to the millisecond as the API gives them.
fn stamp(time: Option<chrono::DateTime<chrono::Utc>>) -> String {
    time.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)).unwrap_or_default()
}

impl<S: Store> App<S> {
    pub(super) async fn run_row(&self, p: &Principal, id: &str) -> Result<RunRow, ApiError> {
        self.store.get_run(&p.user_id, id).await?.ok_or_else(|| ApiError::not_found("run", id))
    }

    pub(super) async fn list_runs(
        &self,
        p: &Principal,
        params: ListRunsParams,
    ) -> Result<types::RunList, ApiError> {
        let filter =
            RunFilter { agent_id: params.agent_id, status: params.status, since: params.since };
        let (agent, status) = (
            filter.agent_id.clone().unwrap_or_default(),
            filter.status.map(|s| s.to_string()).unwrap_or_default(),
        );
        let listing = self.listing(
            "runs",
            &[&p.user_id, &agent, &status, &stamp(filter.since)],
            params.limit,
        );
        let rows = self
            .store
            .list_runs(&p.user_id, &filter, &listing.page(params.cursor.as_deref())?)
            .await?;
        let (data, pagination) = listing.finish(rows, |r| r.id.clone());
        Ok(types::RunList { data, pagination })
    }

    /// The agent a new run executes, with the session it continues and the checkpoint a
    /// new session starts from.
    async fn run_target(
        &self,
        p: &Principal,
        body: &types::CreateRunRequest,
    ) -> Result<(AgentRow, Option<String>, Option<String>), ApiError> {
        if let Some(name) = &body.agent {
            let agent = self.store.get_agent_by_name(&p.user_id, name).await?;
            return Ok((
                agent.ok_or_else(|| ApiError::not_found("agent", name).with_param("agent"))?,
                None,
                None,
            ));
        }
        if let Some(id) = &body.agent_id {
            return Ok((self.agent(p, id).await.map_err(|e| e.with_param("agentId"))?, None, None));
        }
        if let Some(id) = &body.session_id {
            let session = self.store.get_session(&p.user_id, id).await?;
            let session = session
                .ok_or_else(|| ApiError::not_found("session", id).with_param("sessionId"))?;
            if session.expired_at.is_some() {
                let message = format!("Session '{}' has expired: it was unused for longer than this server keeps sessions", id.as_str());
                return Err(ApiError::invalid_state(message).with_param("sessionId"));
            }
            let agent = self.store.get_agent(&p.user_id, &session.agent_id).await?;
            let agent = agent.ok_or_else(|| {
                ApiError::invalid_state(format!(
                    "The agent of session '{}' was deleted",
                    id.as_str()
                ))
            })?;
            return Ok((agent, Some(session.id), None));
        }
        if let Some(id) = &body.checkpoint_id {
            let checkpoint = self.store.get_checkpoint(&p.user_id, id).await?;
            let checkpoint = checkpoint
                .ok_or_else(|| ApiError::not_found("checkpoint", id).with_param("checkpointId"))?;
            let agent = self.store.get_agent(&p.user_id, &checkpoint.agent_id).await?;
            let agent = agent.ok_or_else(|| {
                ApiError::invalid_state(format!(
                    "The agent of checkpoint '{}' was deleted",
                    id.as_str()
                ))
            })?;
            return Ok((agent, None, Some(checkpoint.id)));
        }
        Err(ApiError::missing_parameter("agent"))
    }

    pub(super) async fn create_run(
        &self,
        p: &Principal,
        body: types::CreateRunRequest,
    ) -> Result<types::RunDetail, ApiError> {
        check_names(&body.variables, "variables")?;
        check_names(&body.secrets, "secrets")?;
        let retry = body.clone();
        let (agent, session, from_checkpoint) = self.run_target(p, &body).await?;

        let wanted = body.agent_version.to_string();
        let version = if wanted == "latest" {
            self.store.get_agent_version(&agent.id, &agent.current_version_id).await?
        } else if let Ok(number) = wanted.parse::<i64>() {
            self.store.get_agent_version_by_number(&agent.id, number).await?
        } else {
            self.store.get_agent_version(&agent.id, &wanted).await?
        };
        let version = version.ok_or_else(|| {
            ApiError::not_found("agent version", &wanted).with_param("agentVersion")
        })?;
        crate::runs::config::check(&version.config.0).map_err(|e| {
            ApiError::invalid_state(format!(
                "Agent version '{}' cannot run here: {}",
                version.id, e.message
            ))
        })?;

        let mut volumes = HashMap::new();
        for (name, wanted) in &body.volumes {
            let param = format!("volumes.{name}");
            let volume = self.store.get_storage_by_name(Kind::Volume, &p.user_id, name).await?;
            let volume = volume
                .ok_or_else(|| ApiError::not_found("volume", name).with_param(param.clone()))?;
            let resolved = if wanted == "latest" {
                volume.current_version_id.ok_or_else(|| {
                    ApiError::invalid_state(format!("Volume '{name}' has no version yet"))
                        .with_param(param.clone())
                })?
            } else {
                let version = self.store.get_version(&volume.id, wanted).await?;
                version
                    .ok_or_else(|| {
                        ApiError::not_found("volume version", wanted).with_param(param.clone())
                    })?
                    .id
            };
            volumes.insert(name.clone(), resolved);
        }

        // An artifact that does not exist yet is made with the run, in its transaction, so
        // a run that is refused leaves no artifact behind.
        let artifact_name = body.artifact_name.as_ref().map(|n| n.to_string());
        let (mut artifact_base, mut new_artifact) = (None, None);
        if let Some(name) = &body.artifact_name {
            match self.store.get_storage_by_name(Kind::Artifact, &p.user_id, name).await? {
                Some(artifact) => {
                    artifact_base = match &body.artifact_version {
                        Some(wanted) => {
                            let version = self.store.get_version(&artifact.id, wanted).await?;
                            Some(
                                version
                                    .ok_or_else(|| {
                                        ApiError::not_found("artifact version", wanted)
                                            .with_param("artifactVersion")
                                    })?
                                    .id,
                            )
                        }
                        None => artifact.current_version_id,
                    }
                }
                None => {
                    if let Some(wanted) = &body.artifact_version {
                        return Err(ApiError::not_found("artifact version", wanted)
                            .with_param("artifactVersion"));
                    }
                    let now = ids::now();
                    new_artifact = Some(StorageRow {
                        id: ids::new("art"),
                        name: name.clone(),
                        current_version_id: None,
                        size: 0,
                        file_count: 0,
                        created_at: now,
                        updated_at: now,
                    });
                }
            }
        } else if body.artifact_version.is_some() {
            return Err(ApiError::invalid_parameter(
                "artifactVersion",
                "artifactVersion needs artifactName",
            ));
        }

        let new_session = match &session {
            Some(_) => None,
            None => Some(SessionRow {
                id: ids::new("sess"),
                user_id: p.user_id.clone(),
                agent_id: agent.id.clone(),
                expired_at: None,
            }),
        };
        let row = RunRow {
            id: ids::new("run"),
            user_id: p.user_id.clone(),
            agent_id: agent.id.clone(),
            agent_name: agent.name.to_string(),
            agent_version_id: version.id.clone(),
            session_id: session
                .unwrap_or_else(|| new_session.as_ref().expect("a new session").id.clone()),
            from_checkpoint,
            status: RunStatus::Pending,
            prompt: body.prompt.to_string(),
            variables: sqlx::types::Json(body.variables),
            secrets: sqlx::types::Json(self.engine.seal(body.secrets)),
            volumes: sqlx::types::Json(volumes),
            artifact_name,
            artifact_base,
            artifact_version: None,
            checkpoint_id: None,
            error: None,
            execution_time_ms: None,
            created_at: ids::now(),
            started_at: None,
            completed_at: None,
        };
        match self
            .store
            .create_run(
                &row,
                new_session.as_ref(),
                new_artifact.as_ref(),
                &Engine::<S>::first_records(&row),
            )
            .await
        {
            Ok(()) => {}
            // Another request made the artifact meanwhile: this one tries again with it.
            Err(StoreError::Conflict) => return Box::pin(self.create_run(p, retry)).await,
            Err(other) => return Err(other.into()),
        }
        self.engine.submitted();
        Ok((&row).into())
    }

    pub(super) async fn cancel_run(
        &self,
        p: &Principal,
        id: &str,
    ) -> Result<types::RunDetail, ApiError> {
        let row = self.run_row(p, id).await?;
        if row.completed_at.is_some() {
            return Err(ApiError::invalid_state(format!(
                "Run '{id}' has already finished ({})",
                row.status
            )));
        }
        self.engine.cancel(&row).await?;
        Ok((&self.run_row(p, id).await?).into())
    }

    pub(super) async fn run_events(
        self: &Arc<Self>,
        p: &Principal,
        id: &str,
        params: StreamRunEventsParams,
    ) -> Result<EventStream, ApiError> {
        self.run_row(p, id).await?;
        let after = params.last_event_id.or(params.last_event_id_header).unwrap_or(0);
        // Subscribed before anything is read, so that no event falls between the two.
        let live = self.engine.subscribe(id);
        let feed = Feed {
            store: self.store.clone(),
            run: id.to_string(),
            after,
            live,
            replaying: true,
            buffer: VecDeque::new(),
            done: false,
            draining: self.engine.draining().clone(),
            _counted: self.metrics.subscribed(),
        };
        Ok(Box::pin(futures_util::stream::unfold(feed, Feed::next)))
    }

    pub(super) async fn run_logs(
        &self,
        p: &Principal,
        id: &str,
        params: ListRunLogsParams,
    ) -> Result<types::RunLogList, ApiError> {
        let row = self.run_row(p, id).await?;
        let kind = match params.r#type {
            types::LogTypeFilter::All => None,
            types::LogTypeFilter::Agent => Some(types::LogType::Agent),
            types::LogTypeFilter::System => Some(types::LogType::System),
            types::LogTypeFilter::Network => Some(types::LogType::Network),
        };
        let descending = params.order == types::SortOrder::Desc;
        let query = LogQuery {
            kind,
            since: params.since,
            until: params.until,
            after_sequence: params.after_sequence.unwrap_or(0),
            descending,
        };
        let mut parts = vec![
            row.id.clone(),
            params.r#type.to_string(),
            stamp(query.since),
            stamp(query.until),
            params.order.to_string(),
        ];
        // Only when given, so that a cursor issued before afterSequence existed still reads.
        parts.extend(params.after_sequence.map(|after| format!("after {after}")));
        let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
        let listing = self.listing("logs", &parts, params.limit);
        let rows =
            self.store.list_logs(&row.id, &query, &listing.page(params.cursor.as_deref())?).await?;
        let (data, pagination) = listing.finish(rows, |r| r.seq.to_string());
        Ok(types::RunLogList { data, pagination })
    }

    pub(super) async fn run_metrics(
        &self,
        p: &Principal,
        id: &str,
    ) -> Result<types::RunMetrics, ApiError> {
        let row = self.run_row(p, id).await?;
        let samples = self.store.metrics(&row.id).await?;
        let avg_cpu_percent = if samples.is_empty() {
            0.0
        } else {
            samples.iter().map(|s| s.cpu_percent).sum::<f64>() / samples.len() as f64
        };
        let max_memory_used_mb = samples.iter().map(|s| s.memory_used_mb).fold(0.0, f64::max);
        let summary = types::MetricsSummary {
            avg_cpu_percent,
            max_memory_used_mb,
            total_duration_ms: row.completed_at.and(row.execution_time_ms),
        };
        Ok(types::RunMetrics { data: samples.into_iter().map(Into::into).collect(), summary })
    }
}

/// One subscriber's position in a run's events.
struct Feed<S> {
    store: S,
    run: String,
    after: i64,
    live: Subscription,
    /// Reading stored events, until caught up with the store.
    replaying: bool,
    buffer: VecDeque<types::RunEvent>,
    done: bool,
    /// The instance's drain, which ends the stream: its client resumes with
    /// `Last-Event-ID`, on another instance or after the restart.
    draining: CancellationToken,
    _counted: SubscriberGuard,
}

impl<S: RunStore + Send + Sync> Feed<S> {
    /// The next event: stored ones first, then live ones as they come, a heartbeat after
    /// each quiet spell, and the end after `complete`.
    async fn next(mut self) -> Option<(types::RunEvent, Self)> {
        loop {
            if let Some(event) = self.buffer.pop_front() {
                self.after = event_id(&event);
                self.done = matches!(event, types::RunEvent::Complete { .. });
                return Some((event, self));
            }
            if self.done || self.draining.is_cancelled() {
                return None;
            }
            if self.replaying {
                let batch = match self.store.events_after(&self.run, self.after, REPLAY_BATCH).await
                {
                    Ok(batch) => batch,
                    Err(error) => {
                        tracing::error!(run = %self.run, %error, "could not read a run's events");
                        return None;
                    }
                };
                if batch.is_empty() {
                    self.replaying = false;
                    // Caught up to a `complete` event already sent (a client resuming
                    // after the last event, or a feed closed at the run's end): the
                    // stream is over.
                    let last = self
                        .store
                        .events_after(&self.run, self.after - 1, 1)
                        .await
                        .unwrap_or_default();
                    if self.after > 0
                        && last.first().is_some_and(|e| e.id == self.after && e.event == "complete")
                    {
                        return None;
                    }
                }
                for row in batch {
                    // Past a row that does not read, too, so that it is not read again.
                    self.after = self.after.max(row.id);
                    match types::RunEvent::try_from(row) {
                        Ok(event) => self.buffer.push_back(event),
                        Err(error) => {
                            tracing::error!(run = %self.run, %error, "a stored run event does not read as a RunEvent")
                        }
                    }
                }
                continue;
            }
            let received = tokio::select! {
                received = tokio::time::timeout(HEARTBEAT, self.live.events.recv()) => received,
                _ = self.draining.cancelled() => return None,
            };
            match received {
                Err(_) => {
                    let heartbeat = types::RunEvent::Heartbeat {
                        id: positive(self.after),
                        data: types::RunHeartbeatData {},
                    };
                    return Some((heartbeat, self));
                }
                Ok(Ok(event)) if event_id(&event) <= self.after => {}
                Ok(Ok(event)) if event_id(&event) == self.after + 1 => {
                    self.buffer.push_back((*event).clone())
                }
                // A gap, or this subscriber fell behind: the store has the rest.
                Ok(Ok(_)) | Ok(Err(RecvError::Lagged(_))) => self.replaying = true,
                // The run's feed closed: it ended, and what is left is stored, or it had
                // no other subscriber for a moment. Replay, then a fresh subscription
                // waits for the rest should the run still be going.
                Ok(Err(RecvError::Closed)) => {
                    self.live = self.live.renew();
                    self.replaying = true;
                }
            }
        }
    }
}
