//! The run operations of the API: each translates between the generated types and the
//! engine's (`RunRequest`, `RunRow`) or reads the store for the lists.

use std::future::Future;
use std::task::Poll;

use futures_util::{Stream, StreamExt};
use vm0_api::{ApiError, EventStream, ListRunLogsParams, ListRunsParams, StreamRunEventsParams};
use vm0_types as types;

use super::{App, Principal};
use crate::runs::{RunRequest, Target};
use crate::store::{LogQuery, RunFilter, RunRow, Store};

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

    pub(super) async fn create_run(
        &self,
        p: &Principal,
        body: types::CreateRunRequest,
    ) -> Result<types::RunDetail, ApiError> {
        let target = if let Some(name) = body.agent {
            Some(Target::AgentName(name))
        } else if let Some(id) = body.agent_id {
            Some(Target::AgentId(id.to_string()))
        } else if let Some(id) = body.session_id {
            Some(Target::Session(id.to_string()))
        } else {
            body.checkpoint_id.map(|id| Target::Checkpoint(id.to_string()))
        };
        let request = RunRequest {
            user_id: p.user_id.clone(),
            target,
            agent_version: body.agent_version.to_string(),
            prompt: body.prompt.to_string(),
            variables: body.variables,
            secrets: body.secrets,
            volumes: body.volumes,
            artifact_name: body.artifact_name,
            artifact_version: body.artifact_version.map(|v| v.to_string()),
        };
        Ok((&self.engine.submit(request).await?).into())
    }

    pub(super) async fn cancel_run(
        &self,
        p: &Principal,
        id: &str,
    ) -> Result<types::RunDetail, ApiError> {
        Ok((&self.engine.cancel(&p.user_id, id).await?).into())
    }

    pub(super) async fn run_events(
        &self,
        p: &Principal,
        id: &str,
        params: StreamRunEventsParams,
    ) -> Result<EventStream, ApiError> {
        let after = params.last_event_id.or(params.last_event_id_header).unwrap_or(0);
        let events = self.engine.events(&p.user_id, id, after).await?;
        let revoked = self.tokens_held.until_dead(&p.user_id, &p.token_id);
        // The token is looked at only when no event is ready: `take_until` would look before
        // each event, and ten thousand streams on one token would crowd its lock.
        let (mut events, mut revoked) = (Box::pin(events), Box::pin(revoked));
        Ok(Box::pin(
            futures_util::stream::poll_fn(move |cx| match events.as_mut().poll_next(cx) {
                Poll::Pending if revoked.as_mut().poll(cx).is_ready() => Poll::Ready(None),
                polled => polled,
            })
            .fuse(),
        ))
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
