//! Runs: the operations of the API (`create`, `list`, `get`, `cancel`, `events`, `logs`,
//! `metrics`) over the store and the engine (`engine.rs`), which executes them with an
//! `Executor` (`local.rs`), checking agent configurations against `config.rs`.

pub mod config;
pub mod engine;
pub mod local;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};
use vm0_api::{ApiError, EventStream, ListRunLogsParams, ListRunsParams, StreamRunEventsParams};
use vm0_types as types;

use crate::api::{App, Principal};
use crate::ids;
use crate::store::{Kind, LogQuery, Page, RunEnd, RunFilter, RunRow, SessionRow, Store, StoreError};

/// How long a stream stays quiet before a heartbeat.
const HEARTBEAT: Duration = Duration::from_secs(15);

fn internal(error: StoreError) -> ApiError {
    ApiError::internal(format!("{error:?}"))
}

fn typed<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, ApiError> {
    serde_json::from_value(value).map_err(ApiError::internal)
}

fn run_json(run: &RunRow) -> Value {
    json!({
        "id": run.id, "agentId": run.agent_id, "agentName": run.agent_name, "status": run.status,
        "prompt": run.prompt, "createdAt": run.created_at, "startedAt": run.started_at, "completedAt": run.completed_at,
    })
}

fn detail_json(run: &RunRow) -> Value {
    let mut out = run_json(run);
    let extra = json!({
        "error": run.error, "executionTimeMs": run.execution_time_ms, "checkpointId": run.checkpoint_id,
        "sessionId": run.session_id, "artifactName": run.artifact_name, "artifactVersion": run.artifact_version,
        "volumes": run.volumes,
    });
    out.as_object_mut().expect("an object").extend(extra.as_object().expect("an object").clone());
    out
}

async fn run<S: Store>(app: &App<S>, p: &Principal, id: &str) -> Result<RunRow, ApiError> {
    app.store.get_run(&p.user_id, id).await.map_err(internal)?.ok_or_else(|| ApiError::not_found("run", id))
}

pub async fn list<S: Store>(app: &App<S>, p: &Principal, params: ListRunsParams) -> Result<types::RunList, ApiError> {
    let filter = RunFilter { agent_id: params.agent_id.clone(), status: params.status.map(|s| s.to_string()), since: params.since };
    let scope = app.scope(format!("runs:{}:{:?}:{:?}:{:?}", p.user_id, filter.agent_id, filter.status, filter.since));
    let page = app.page(&scope, params.limit, params.cursor.as_deref())?;
    let rows = app.store.list_runs(&p.user_id, &filter, &page).await.map_err(internal)?;
    let (rows, pagination) = app.paginate(&scope, rows, params.limit, |r| r.id.clone());
    typed(json!({ "data": rows.iter().map(run_json).collect::<Vec<_>>(), "pagination": pagination }))
}

/// Environment names a run's variables and secrets may use.
fn check_names(map: &std::collections::HashMap<String, String>, param: &str) -> Result<(), ApiError> {
    for name in map.keys() {
        let mut chars = name.chars();
        let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_') && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(ApiError::invalid_parameter(
                format!("{param}.{name}"),
                format!("{param} names must be environment variable names (letters, digits, _)"),
            ));
        }
        if name.starts_with("VM0_") || name == "PATH" || name == "HOME" {
            return Err(ApiError::invalid_parameter(format!("{param}.{name}"), format!("{name} is set by the server")));
        }
    }
    Ok(())
}

pub async fn create<S: Store>(app: &App<S>, p: &Principal, body: types::CreateRunRequest) -> Result<types::RunDetail, ApiError> {
    check_names(&body.variables, "variables")?;
    check_names(&body.secrets, "secrets")?;
    // What to run: an agent (a new session), a session (its latest state), or a checkpoint
    // (a new session from that snapshot).
    let (agent, session, from_checkpoint) = if let Some(name) = &body.agent {
        let page = Page { limit: 1, after: None };
        let agent = app.store.list_agents(&p.user_id, Some(name), &page).await.map_err(internal)?.into_iter().next();
        (agent.ok_or_else(|| ApiError::not_found("agent", name).with_param("agent"))?, None, None)
    } else if let Some(id) = &body.agent_id {
        (app.agent(p, id).await.map_err(|e| e.with_param("agentId"))?, None, None)
    } else if let Some(id) = &body.session_id {
        let session = app.store.get_session(&p.user_id, id).await.map_err(internal)?;
        let session = session.ok_or_else(|| ApiError::not_found("session", id).with_param("sessionId"))?;
        let agent = app.store.get_agent(&p.user_id, &session.agent_id).await.map_err(internal)?;
        (agent.ok_or_else(|| ApiError::invalid_state(format!("The agent of session '{}' was deleted", id.as_str())))?, Some(session.id), None)
    } else if let Some(id) = &body.checkpoint_id {
        let checkpoint = app.store.get_checkpoint(&p.user_id, id).await.map_err(internal)?;
        let checkpoint = checkpoint.ok_or_else(|| ApiError::not_found("checkpoint", id).with_param("checkpointId"))?;
        let agent = app.store.get_agent(&p.user_id, &checkpoint.agent_id).await.map_err(internal)?;
        (agent.ok_or_else(|| ApiError::invalid_state(format!("The agent of checkpoint '{}' was deleted", id.as_str())))?, None, Some(checkpoint.id))
    } else {
        return Err(ApiError::missing_parameter("agent"));
    };

    let wanted = body.agent_version.to_string();
    let version = if wanted == "latest" {
        app.store.get_agent_version(&agent.id, &agent.current_version_id).await.map_err(internal)?
    } else if let Ok(number) = wanted.parse::<i64>() {
        app.store.get_agent_version_by_number(&agent.id, number).await.map_err(internal)?
    } else {
        app.store.get_agent_version(&agent.id, &wanted).await.map_err(internal)?
    };
    let version = version.ok_or_else(|| ApiError::not_found("agent version", &wanted).with_param("agentVersion"))?;
    config::check(&version.config).map_err(|e| ApiError::invalid_state(format!("Agent version '{}' cannot run here: {}", version.id, e.message)))?;

    let mut volumes = Map::new();
    for (name, wanted) in &body.volumes {
        let param = format!("volumes.{name}");
        let volume = app.store.get_storage_by_name(Kind::Volume, &p.user_id, name).await.map_err(internal)?;
        let volume = volume.ok_or_else(|| ApiError::not_found("volume", name).with_param(param.clone()))?;
        let resolved = if wanted == "latest" {
            volume.current_version_id.ok_or_else(|| ApiError::invalid_state(format!("Volume '{name}' has no version yet")).with_param(param.clone()))?
        } else {
            let version = app.store.get_version(&volume.id, wanted).await.map_err(internal)?;
            version.ok_or_else(|| ApiError::not_found("volume version", wanted).with_param(param.clone()))?.id
        };
        volumes.insert(name.clone(), Value::String(resolved));
    }

    let artifact_name = body.artifact_name.as_ref().map(|n| n.to_string());
    let mut artifact_base = None;
    if let Some(name) = &artifact_name {
        let artifact = match app.store.get_storage_by_name(Kind::Artifact, &p.user_id, name).await.map_err(internal)? {
            Some(artifact) => artifact,
            None => match app.store.create_storage(Kind::Artifact, &p.user_id, name, ids::now()).await {
                Ok(created) => created,
                Err(StoreError::Conflict) => app
                    .store
                    .get_storage_by_name(Kind::Artifact, &p.user_id, name)
                    .await
                    .map_err(internal)?
                    .ok_or_else(|| ApiError::internal("artifact vanished"))?,
                Err(other) => return Err(internal(other)),
            },
        };
        artifact_base = match &body.artifact_version {
            Some(wanted) => {
                let version = app.store.get_version(&artifact.id, wanted).await.map_err(internal)?;
                Some(version.ok_or_else(|| ApiError::not_found("artifact version", wanted).with_param("artifactVersion"))?.id)
            }
            None => artifact.current_version_id,
        };
    } else if body.artifact_version.is_some() {
        return Err(ApiError::invalid_parameter("artifactVersion", "artifactVersion needs artifactName"));
    }

    let new_session = match &session {
        Some(_) => None,
        None => Some(SessionRow { id: ids::new("sess"), user_id: p.user_id.clone(), agent_id: agent.id.clone() }),
    };
    let row = RunRow {
        id: ids::new("run"),
        user_id: p.user_id.clone(),
        agent_id: agent.id.clone(),
        agent_name: agent.name.clone(),
        agent_version_id: version.id.clone(),
        session_id: session.unwrap_or_else(|| new_session.as_ref().expect("a new session").id.clone()),
        from_checkpoint,
        status: "pending".into(),
        prompt: body.prompt.to_string(),
        variables: serde_json::to_value(&body.variables).map_err(ApiError::internal)?,
        secrets: serde_json::to_value(&body.secrets).map_err(ApiError::internal)?,
        volumes: Value::Object(volumes),
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
    app.store.create_run(&row, new_session.as_ref()).await.map_err(internal)?;
    let secrets = engine::secret_values(&row);
    engine::record(app, &row.id, &secrets, "status", json!({ "status": "pending" })).await;
    engine::log(app, &row.id, &secrets, "system", "info", "Run created", json!({ "status": "pending", "agentVersionId": version.id })).await;
    app.engine.wake();
    typed(detail_json(&row))
}

pub async fn get<S: Store>(app: &App<S>, p: &Principal, id: &str) -> Result<types::RunDetail, ApiError> {
    typed(detail_json(&run(app, p, id).await?))
}

pub async fn cancel<S: Store>(app: &App<S>, p: &Principal, id: &str) -> Result<types::RunDetail, ApiError> {
    let row = run(app, p, id).await?;
    let end = RunEnd {
        status: "cancelled".into(),
        error: Some("Cancelled by request".into()),
        execution_time_ms: None,
        completed_at: ids::now(),
        checkpoint_id: None,
        artifact_version: None,
    };
    match row.status.as_str() {
        "pending" if app.store.cancel_pending_run(id, &end).await.map_err(internal)? => {
            engine::announce_end(app, id, &end, &engine::secret_values(&row)).await;
        }
        "pending" | "running" => {
            app.engine.cancel(id);
            // The engine kills the process group and records the end; wait for it.
            for _ in 0..100 {
                if run(app, p, id).await?.completed_at.is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        finished => return Err(ApiError::invalid_state(format!("Run '{id}' has already finished ({finished})"))),
    }
    get(app, p, id).await
}

pub async fn events<S: Store>(app: &Arc<App<S>>, p: &Principal, id: &str, params: StreamRunEventsParams) -> Result<EventStream, ApiError> {
    run(app, p, id).await?;
    let after = params.last_event_id.or(params.last_event_id_header).unwrap_or(0);
    let feed = Feed { app: app.clone(), run: id.to_string(), after, buffer: VecDeque::new(), done: false };
    Ok(Box::pin(futures_util::stream::unfold(feed, Feed::next)))
}

/// One subscriber's position in a run's events.
struct Feed<S> {
    app: Arc<App<S>>,
    run: String,
    after: i64,
    buffer: VecDeque<types::RunEvent>,
    done: bool,
}

impl<S: Store> Feed<S> {
    /// The next event: stored ones first, then live ones as they come, a heartbeat after
    /// each quiet spell, and the end after `complete`.
    async fn next(mut self) -> Option<(types::RunEvent, Self)> {
        loop {
            if let Some(event) = self.buffer.pop_front() {
                self.done = event.event == types::RunEventType::Complete;
                return Some((event, self));
            }
            if self.done {
                return None;
            }
            // Subscribe before reading, so that no event falls between the two.
            let mut wake = self.app.engine.subscribe(&self.run);
            let batch = self.app.store.events_after(&self.run, self.after, 500).await.ok()?;
            if !batch.is_empty() {
                for (id, event, data) in batch {
                    self.after = id;
                    let event = json!({ "id": id, "event": event, "data": data });
                    match serde_json::from_value(event) {
                        Ok(event) => self.buffer.push_back(event),
                        Err(error) => tracing::error!(%error, "a stored run event does not read as a RunEvent"),
                    }
                }
                continue;
            }
            let woken = match wake.as_mut() {
                Some(wake) => tokio::time::timeout(HEARTBEAT, wake.changed()).await.map(|r| r.is_ok()),
                // No live feed: the run ended (its last events are stored), or another
                // process runs it; look again shortly.
                None => tokio::time::timeout(Duration::from_millis(500), std::future::pending::<()>()).await.map(|_| true),
            };
            match woken {
                Ok(_) => continue,
                Err(_) if wake.is_some() => {
                    let heartbeat = json!({ "id": self.after.max(1), "event": "heartbeat", "data": {} });
                    return Some((serde_json::from_value(heartbeat).ok()?, self));
                }
                Err(_) => continue,
            }
        }
    }
}

pub async fn logs<S: Store>(app: &App<S>, p: &Principal, id: &str, params: ListRunLogsParams) -> Result<types::RunLogList, ApiError> {
    let row = run(app, p, id).await?;
    let kind = match params.r#type {
        types::LogTypeFilter::All => None,
        other => Some(other.to_string()),
    };
    let query = LogQuery { kind, since: params.since, until: params.until, descending: params.order == types::SortOrder::Desc };
    let scope = app.scope(format!("logs:{}:{query:?}", row.id));
    let page = app.page(&scope, params.limit, params.cursor.as_deref())?;
    let rows = app.store.list_logs(&row.id, &query, &page).await.map_err(internal)?;
    let (rows, pagination) = app.paginate(&scope, rows, params.limit, |r| r.seq.to_string());
    let data: Vec<Value> =
        rows.iter().map(|l| json!({ "timestamp": l.timestamp, "type": l.kind, "level": l.level, "message": l.message, "metadata": l.metadata })).collect();
    typed(json!({ "data": data, "pagination": pagination }))
}

pub async fn metrics<S: Store>(app: &App<S>, p: &Principal, id: &str) -> Result<types::RunMetrics, ApiError> {
    let row = run(app, p, id).await?;
    let samples = app.store.metrics(&row.id).await.map_err(internal)?;
    let average = if samples.is_empty() { 0.0 } else { samples.iter().map(|s| s.cpu_percent).sum::<f64>() / samples.len() as f64 };
    let peak = samples.iter().map(|s| s.memory_used_mb).fold(0.0, f64::max);
    let data: Vec<Value> = samples
        .iter()
        .map(|s| {
            json!({
                "timestamp": s.timestamp, "cpuPercent": s.cpu_percent, "memoryUsedMb": s.memory_used_mb,
                "memoryTotalMb": s.memory_total_mb, "diskUsedMb": s.disk_used_mb, "diskTotalMb": s.disk_total_mb,
            })
        })
        .collect();
    let total = row.completed_at.and(row.execution_time_ms);
    typed(json!({ "data": data, "summary": { "avgCpuPercent": average, "maxMemoryUsedMb": peak, "totalDurationMs": total } }))
}
