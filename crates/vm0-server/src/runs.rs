//! Runs. This server does not execute runs yet (the runs engine is its own piece of work):
//! no run is ever created, so lists are empty and every run id is unknown, and createRun,
//! once the agent it names is found, says so with `invalid_state`.

use serde_json::json;
use vm0_api::{ApiError, EventStream, ListRunLogsParams, ListRunsParams, StreamRunEventsParams};
use vm0_types as types;

use crate::api::{App, Principal};
use crate::store::Store;

fn no_run(id: &str) -> ApiError {
    ApiError::not_found("run", id)
}

pub async fn list<S: Store>(_: &App<S>, _: &Principal, _: ListRunsParams) -> Result<types::RunList, ApiError> {
    serde_json::from_value(json!({ "data": [], "pagination": { "hasMore": false, "nextCursor": null } })).map_err(ApiError::internal)
}

pub async fn create<S: Store>(app: &App<S>, p: &Principal, body: types::CreateRunRequest) -> Result<types::RunDetail, ApiError> {
    let missing = |what: &str, id: &str, param: &str| ApiError::not_found(what, id).with_param(param);
    if let Some(name) = &body.agent {
        let page = crate::store::Page { limit: 1, after: None };
        let found = app.store.list_agents(&p.user_id, Some(name), &page).await.map_err(|e| ApiError::internal(format!("{e:?}")))?;
        if found.is_empty() {
            return Err(missing("agent", name, "agent"));
        }
    }
    if let Some(id) = &body.agent_id {
        app.store.get_agent(&p.user_id, id).await.map_err(|e| ApiError::internal(format!("{e:?}")))?.ok_or_else(|| missing("agent", id, "agentId"))?;
    }
    if let Some(id) = &body.session_id {
        return Err(missing("session", id, "sessionId"));
    }
    if let Some(id) = &body.checkpoint_id {
        return Err(missing("checkpoint", id, "checkpointId"));
    }
    Err(ApiError::invalid_state("This server does not execute runs yet"))
}

pub async fn get<S: Store>(_: &App<S>, _: &Principal, id: &str) -> Result<types::RunDetail, ApiError> {
    Err(no_run(id))
}

pub async fn cancel<S: Store>(_: &App<S>, _: &Principal, id: &str) -> Result<types::RunDetail, ApiError> {
    Err(no_run(id))
}

pub async fn events<S: Store>(_: &App<S>, _: &Principal, id: &str, _: StreamRunEventsParams) -> Result<EventStream, ApiError> {
    Err(no_run(id))
}

pub async fn logs<S: Store>(_: &App<S>, _: &Principal, id: &str, _: ListRunLogsParams) -> Result<types::RunLogList, ApiError> {
    Err(no_run(id))
}

pub async fn metrics<S: Store>(_: &App<S>, _: &Principal, id: &str) -> Result<types::RunMetrics, ApiError> {
    Err(no_run(id))
}
