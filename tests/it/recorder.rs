//! `Recorder`, a tiny in-memory `Vm0Api`: it notes which operation was reached and with
//! which inputs, and answers with the spec's own example for that operation.
//!
//! It implements every method by hand, so it is also the compile-time keeper of the
//! trait: an operation added, removed or changed in the spec without updating this file
//! is a compile error here, not a surprise for implementers.

use std::sync::{Arc, LazyLock, Mutex};

use serde::de::DeserializeOwned;
use serde_json::Value;
use vm0_api::{ApiError, ETag, EventStream, SentEvent, Tagged, Vm0Api};
use vm0_api::{
    CommitArtifactUploadParams, CommitVolumeUploadParams, DeleteAgentParams, DeleteArtifactParams,
    DeleteVolumeParams, DownloadArtifactParams, DownloadVolumeParams, ListAgentVersionsParams,
    ListAgentsParams, ListArtifactVersionsParams, ListArtifactsParams, ListRunLogsParams,
    ListRunsParams, ListTokensParams, ListVolumeVersionsParams, ListVolumesParams,
    RevokeTokenParams, StreamRunEventsParams, UpdateAgentParams,
};
use vm0_types::*;
use xtask::spec;

/// The only token `Recorder` accepts.
pub(crate) const TOKEN: &str =
    "vm0_live_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

static SPEC: LazyLock<Value> = LazyLock::new(|| spec::load().expect("the spec loads"));

/// The example of `op`'s success response, as `T`.
fn example<T: DeserializeOwned>(op: &str) -> T {
    let operation =
        spec::operations(&SPEC).into_iter().find(|o| o.id() == op).expect("the operation exists");
    let (_, response) = operation.op["responses"]
        .as_object()
        .unwrap()
        .iter()
        .find(|(s, _)| s.starts_with('2'))
        .unwrap();
    let media = response["content"].as_object().unwrap().values().next().unwrap();
    let value = media.get("example").cloned().unwrap_or_else(|| {
        let first = media["examples"].as_object().unwrap().values().next().unwrap();
        first["value"].clone()
    });
    serde_json::from_value(value)
        .unwrap_or_else(|e| panic!("the example of {op} does not read as its type: {e}"))
}

/// The events of a `text/event-stream` example, each message's `id:`, `event:` and `data:`
/// lines read as the spec's `RunEvent` object.
fn events(stream: &str) -> Vec<RunEvent> {
    let message = |block: &str| {
        let event = vm0_tests::conformance::event_object(block)
            .unwrap()
            .expect("an event, not only comments");
        serde_json::from_value(event).unwrap()
    };
    stream.split("\n\n").filter(|block| !block.trim().is_empty()).map(message).collect()
}

/// Every call that reached the implementation: the operation and its inputs' Debug text.
#[derive(Default, Clone)]
pub(crate) struct Recorder {
    pub calls: Arc<Mutex<Vec<(&'static str, String)>>>,
}

impl Recorder {
    fn reach<T: DeserializeOwned>(&self, op: &'static str, inputs: String) -> Result<T, ApiError> {
        self.calls.lock().unwrap().push((op, inputs));
        Ok(example(op))
    }

    /// `reach`, tagged as the spec's `ETag` example.
    fn reach_tagged<T: DeserializeOwned>(
        &self,
        op: &'static str,
        inputs: String,
    ) -> Result<Tagged<T>, ApiError> {
        let body = self.reach(op, inputs)?;
        Ok(Tagged { body, etag: ETag::of_revision("3q2bn8d7yq0c5xvh4k1m") })
    }

    fn reach_empty(&self, op: &'static str, inputs: String) -> Result<(), ApiError> {
        self.calls.lock().unwrap().push((op, inputs));
        Ok(())
    }
}

impl Vm0Api for Recorder {
    type Principal = &'static str;

    async fn authenticate(&self, token: &str) -> Result<Self::Principal, ApiError> {
        if token == TOKEN {
            Ok("user")
        } else {
            Err(ApiError::unauthorized("Unknown API key"))
        }
    }

    async fn list_agents(
        &self,
        _: &&'static str,
        params: ListAgentsParams,
    ) -> Result<AgentList, ApiError> {
        self.reach("listAgents", format!("{params:?}"))
    }
    async fn create_agent(
        &self,
        _: &&'static str,
        body: CreateAgentRequest,
    ) -> Result<Agent, ApiError> {
        self.reach("createAgent", format!("{body:?}"))
    }
    async fn get_agent(&self, _: &&'static str, id: String) -> Result<Tagged<Agent>, ApiError> {
        self.reach_tagged("getAgent", id)
    }
    async fn update_agent(
        &self,
        _: &&'static str,
        id: String,
        params: UpdateAgentParams,
        body: UpdateAgentRequest,
    ) -> Result<Tagged<Agent>, ApiError> {
        self.reach_tagged("updateAgent", format!("{id} {params:?} {body:?}"))
    }
    async fn delete_agent(
        &self,
        _: &&'static str,
        id: String,
        params: DeleteAgentParams,
    ) -> Result<(), ApiError> {
        self.reach_empty("deleteAgent", format!("{id} {params:?}"))
    }
    async fn list_agent_versions(
        &self,
        _: &&'static str,
        id: String,
        params: ListAgentVersionsParams,
    ) -> Result<AgentVersionList, ApiError> {
        self.reach("listAgentVersions", format!("{id} {params:?}"))
    }
    async fn get_agent_version(
        &self,
        _: &&'static str,
        id: String,
        version_id: String,
    ) -> Result<Tagged<AgentVersionDetail>, ApiError> {
        self.reach_tagged("getAgentVersion", format!("{id} {version_id}"))
    }
    async fn list_runs(
        &self,
        _: &&'static str,
        params: ListRunsParams,
    ) -> Result<RunList, ApiError> {
        self.reach("listRuns", format!("{params:?}"))
    }
    async fn create_run(
        &self,
        _: &&'static str,
        body: CreateRunRequest,
    ) -> Result<RunDetail, ApiError> {
        self.reach("createRun", format!("{body:?}"))
    }
    async fn get_run(&self, _: &&'static str, id: String) -> Result<Tagged<RunDetail>, ApiError> {
        self.reach_tagged("getRun", id)
    }
    async fn cancel_run(&self, _: &&'static str, id: String) -> Result<RunDetail, ApiError> {
        self.reach("cancelRun", id)
    }
    async fn stream_run_events(
        &self,
        _: &&'static str,
        id: String,
        params: StreamRunEventsParams,
    ) -> Result<EventStream, ApiError> {
        let stream: String = self.reach("streamRunEvents", format!("{id} {params:?}"))?;
        Ok(Box::pin(futures::stream::iter(events(&stream).into_iter().map(SentEvent::new))))
    }
    async fn list_run_logs(
        &self,
        _: &&'static str,
        id: String,
        params: ListRunLogsParams,
    ) -> Result<RunLogList, ApiError> {
        self.reach("listRunLogs", format!("{id} {params:?}"))
    }
    async fn get_run_metrics(&self, _: &&'static str, id: String) -> Result<RunMetrics, ApiError> {
        self.reach("getRunMetrics", id)
    }
    async fn list_volumes(
        &self,
        _: &&'static str,
        params: ListVolumesParams,
    ) -> Result<VolumeList, ApiError> {
        self.reach("listVolumes", format!("{params:?}"))
    }
    async fn create_volume(
        &self,
        _: &&'static str,
        body: CreateVolumeRequest,
    ) -> Result<Volume, ApiError> {
        self.reach("createVolume", format!("{body:?}"))
    }
    async fn get_volume(
        &self,
        _: &&'static str,
        id: String,
    ) -> Result<Tagged<VolumeDetail>, ApiError> {
        self.reach_tagged("getVolume", id)
    }
    async fn delete_volume(
        &self,
        _: &&'static str,
        id: String,
        params: DeleteVolumeParams,
    ) -> Result<(), ApiError> {
        self.reach_empty("deleteVolume", format!("{id} {params:?}"))
    }
    async fn list_volume_versions(
        &self,
        _: &&'static str,
        id: String,
        params: ListVolumeVersionsParams,
    ) -> Result<VolumeVersionList, ApiError> {
        self.reach("listVolumeVersions", format!("{id} {params:?}"))
    }
    async fn prepare_volume_upload(
        &self,
        _: &&'static str,
        id: String,
        body: PrepareUploadRequest,
    ) -> Result<PrepareUploadResponse, ApiError> {
        self.reach("prepareVolumeUpload", format!("{id} {body:?}"))
    }
    async fn commit_volume_upload(
        &self,
        _: &&'static str,
        id: String,
        params: CommitVolumeUploadParams,
        body: CommitUploadRequest,
    ) -> Result<VolumeVersion, ApiError> {
        self.reach("commitVolumeUpload", format!("{id} {params:?} {body:?}"))
    }
    async fn download_volume(
        &self,
        _: &&'static str,
        id: String,
        params: DownloadVolumeParams,
    ) -> Result<DownloadResponse, ApiError> {
        self.reach("downloadVolume", format!("{id} {params:?}"))
    }
    async fn list_artifacts(
        &self,
        _: &&'static str,
        params: ListArtifactsParams,
    ) -> Result<ArtifactList, ApiError> {
        self.reach("listArtifacts", format!("{params:?}"))
    }
    async fn create_artifact(
        &self,
        _: &&'static str,
        body: CreateArtifactRequest,
    ) -> Result<Artifact, ApiError> {
        self.reach("createArtifact", format!("{body:?}"))
    }
    async fn get_artifact(
        &self,
        _: &&'static str,
        id: String,
    ) -> Result<Tagged<ArtifactDetail>, ApiError> {
        self.reach_tagged("getArtifact", id)
    }
    async fn delete_artifact(
        &self,
        _: &&'static str,
        id: String,
        params: DeleteArtifactParams,
    ) -> Result<(), ApiError> {
        self.reach_empty("deleteArtifact", format!("{id} {params:?}"))
    }
    async fn list_artifact_versions(
        &self,
        _: &&'static str,
        id: String,
        params: ListArtifactVersionsParams,
    ) -> Result<ArtifactVersionList, ApiError> {
        self.reach("listArtifactVersions", format!("{id} {params:?}"))
    }
    async fn prepare_artifact_upload(
        &self,
        _: &&'static str,
        id: String,
        body: PrepareUploadRequest,
    ) -> Result<PrepareUploadResponse, ApiError> {
        self.reach("prepareArtifactUpload", format!("{id} {body:?}"))
    }
    async fn commit_artifact_upload(
        &self,
        _: &&'static str,
        id: String,
        params: CommitArtifactUploadParams,
        body: CommitUploadRequest,
    ) -> Result<ArtifactVersion, ApiError> {
        self.reach("commitArtifactUpload", format!("{id} {params:?} {body:?}"))
    }
    async fn download_artifact(
        &self,
        _: &&'static str,
        id: String,
        params: DownloadArtifactParams,
    ) -> Result<DownloadResponse, ApiError> {
        self.reach("downloadArtifact", format!("{id} {params:?}"))
    }
    async fn list_tokens(
        &self,
        _: &&'static str,
        params: ListTokensParams,
    ) -> Result<TokenList, ApiError> {
        self.reach("listTokens", format!("{params:?}"))
    }
    async fn create_token(
        &self,
        _: &&'static str,
        body: CreateTokenRequest,
    ) -> Result<CreatedToken, ApiError> {
        self.reach("createToken", format!("{body:?}"))
    }
    async fn get_token(&self, _: &&'static str, id: String) -> Result<Tagged<Token>, ApiError> {
        self.reach_tagged("getToken", id)
    }
    async fn revoke_token(
        &self,
        _: &&'static str,
        id: String,
        params: RevokeTokenParams,
    ) -> Result<(), ApiError> {
        self.reach_empty("revokeToken", format!("{id} {params:?}"))
    }
}
