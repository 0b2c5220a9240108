//! The compile-time keeper of the client: every operation called with every parameter,
//! each result bound to the type the spec gives it. It never runs; a spec change that
//! breaks the client's surface (a removed or renamed operation, parameter or field, a
//! changed type) makes it fail to compile. Request bodies go through the generated
//! builders, so adding an optional field is not a break. The trait's keeper is
//! `recorder.rs`.

#![allow(dead_code)]

use std::collections::HashMap;

use chrono::Utc;
use vm0_client::{ByteStream, RawClient as Client, RawError as Error};
use vm0_types::{self as types, LogTypeFilter, RunStatus, SortOrder};

type Result<T> = std::result::Result<T, Error<types::Error>>;

async fn agents(c: &Client) -> Result<()> {
    let _: types::AgentList =
        c.list_agents().limit(20).cursor("c").name("my-agent").send().await?.into_inner();
    let config = types::AgentConfig(serde_json::Map::new());
    let _: types::Agent = c
        .create_agent()
        .body_map(|b| b.name("my-agent").config(config.clone()))
        .send()
        .await?
        .into_inner();
    let _: types::Agent = c.get_agent().id("ag_1").send().await?.into_inner();
    let _: types::Agent =
        c.update_agent().id("ag_1").body_map(|b| b.config(config)).send().await?.into_inner();
    let _: () = c.delete_agent().id("ag_1").send().await?.into_inner();
    let _: types::AgentVersionList =
        c.list_agent_versions().id("ag_1").limit(20).cursor("c").send().await?.into_inner();
    let version: types::AgentVersionDetail =
        c.get_agent_version().id("ag_1").version_id("v1").send().await?.into_inner();
    let _: &types::AgentConfig = &version.config;
    Ok(())
}

async fn runs(c: &Client) -> Result<()> {
    let _: types::RunList = c
        .list_runs()
        .limit(20)
        .cursor("c")
        .agent_id("ag_1")
        .status(RunStatus::Running)
        .since(Utc::now())
        .send()
        .await?
        .into_inner();
    let detail: types::RunDetail = c
        .create_run()
        .body_map(|b| {
            b.agent(Some("my-agent".parse().unwrap()))
                .prompt("hello")
                .agent_version("latest")
                .variables(map("K", "V"))
                .secrets(map("S", "s"))
                .volumes(map("notes", "latest"))
                .artifact_name(Some("out".parse().unwrap()))
        })
        .send()
        .await?
        .into_inner();
    let _: Option<i64> = detail.execution_time_ms;
    let _: types::RunDetail = c
        .create_run()
        .body_map(|b| b.session_id(Some("sess_1".parse().unwrap())).prompt("again"))
        .send()
        .await?
        .into_inner();
    let _: types::RunDetail = c.get_run().id("run_1").send().await?.into_inner();
    let _: types::RunDetail = c.cancel_run().id("run_1").send().await?.into_inner();
    let _: ByteStream =
        c.stream_run_events().id("run_1").last_event_id(3).send().await?.into_inner();
    let _: types::RunLogList = c
        .list_run_logs()
        .id("run_1")
        .limit(20)
        .cursor("c")
        .type_(LogTypeFilter::Agent)
        .since(Utc::now())
        .until(Utc::now())
        .order(SortOrder::Desc)
        .send()
        .await?
        .into_inner();
    let _: types::RunMetrics = c.get_run_metrics().id("run_1").send().await?.into_inner();
    Ok(())
}

fn map(key: &str, value: &str) -> HashMap<String, String> {
    HashMap::from([(key.to_string(), value.to_string())])
}

fn upload() -> types::builder::PrepareUploadRequest {
    let file = types::UploadFile {
        path: "a/b.txt".parse().unwrap(),
        size: 3,
        hash: "0".repeat(64).parse().unwrap(),
    };
    types::PrepareUploadRequest::builder().files(vec![file]).message(Some("first".parse().unwrap()))
}

async fn volumes(c: &Client) -> Result<()> {
    let _: types::VolumeList = c.list_volumes().limit(20).cursor("c").send().await?.into_inner();
    let _: types::Volume =
        c.create_volume().body_map(|b| b.name("notes")).send().await?.into_inner();
    let _: types::VolumeDetail = c.get_volume().id("vol_1").send().await?.into_inner();
    let _: () = c.delete_volume().id("vol_1").send().await?.into_inner();
    let _: types::VolumeVersionList =
        c.list_volume_versions().id("vol_1").limit(20).cursor("c").send().await?.into_inner();
    let prepared: types::PrepareUploadResponse =
        c.prepare_volume_upload().id("vol_1").body(upload()).send().await?.into_inner();
    let session = prepared.upload_session_id;
    let _: types::VolumeVersion = c
        .commit_volume_upload()
        .id("vol_1")
        .body_map(|b| {
            b.upload_session_id(
                session.parse::<types::CommitUploadRequestUploadSessionId>().unwrap(),
            )
        })
        .send()
        .await?
        .into_inner();
    let _: types::DownloadResponse =
        c.download_volume().id("vol_1").version_id("v").send().await?.into_inner();
    Ok(())
}

async fn artifacts(c: &Client) -> Result<()> {
    let _: types::ArtifactList =
        c.list_artifacts().limit(20).cursor("c").send().await?.into_inner();
    let _: types::Artifact =
        c.create_artifact().body_map(|b| b.name("out")).send().await?.into_inner();
    let _: types::ArtifactDetail = c.get_artifact().id("art_1").send().await?.into_inner();
    let _: () = c.delete_artifact().id("art_1").send().await?.into_inner();
    let _: types::ArtifactVersionList =
        c.list_artifact_versions().id("art_1").limit(20).cursor("c").send().await?.into_inner();
    let prepared: types::PrepareUploadResponse =
        c.prepare_artifact_upload().id("art_1").body(upload()).send().await?.into_inner();
    let session = prepared.upload_session_id;
    let _: types::ArtifactVersion = c
        .commit_artifact_upload()
        .id("art_1")
        .body_map(|b| {
            b.upload_session_id(
                session.parse::<types::CommitUploadRequestUploadSessionId>().unwrap(),
            )
        })
        .send()
        .await?
        .into_inner();
    let _: types::DownloadResponse =
        c.download_artifact().id("art_1").version_id("v").send().await?.into_inner();
    Ok(())
}

async fn tokens(c: &Client) -> Result<()> {
    let _: types::TokenList = c.list_tokens().limit(20).cursor("c").send().await?.into_inner();
    let created: types::CreatedToken = c
        .create_token()
        .body_map(|b| b.name("ci").expires_in_days(std::num::NonZeroU64::new(30).unwrap()))
        .send()
        .await?
        .into_inner();
    let _: types::Token = c.get_token().id(created.id).send().await?.into_inner();
    let _: () = c.revoke_token().id("tok_1").send().await?.into_inner();
    Ok(())
}
