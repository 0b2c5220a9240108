//! The tools written by hand, for what the spec's operations do in steps an agent should
//! not have to take itself: waiting for a run (its event stream) and moving a folder of
//! files (the upload and download URLs the file operations hand out).

use std::path::PathBuf;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value};
use vm0_client::types::{LogTypeFilter, SortOrder};
use vm0_client::{Client, Reply, Transfer};

/// A hand-written tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Extra {
    WaitForRun,
    PushVolume,
    PullArtifact,
}

impl Extra {
    pub(crate) const ALL: [Extra; 3] = [Extra::WaitForRun, Extra::PushVolume, Extra::PullArtifact];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Extra::WaitForRun => "waitForRun",
            Extra::PushVolume => "pushVolume",
            Extra::PullArtifact => "pullArtifact",
        }
    }

    pub(crate) fn description(self) -> &'static str {
        match self {
            Extra::WaitForRun => {
                "Wait for a run to end\n\nWaits until the run ends or `timeoutSeconds` pass, \
                 then returns its status, its error if it failed, whether the wait timed out, \
                 and the last lines of its output (standard output and error). Call it again \
                 to keep waiting."
            }
            Extra::PushVolume => {
                "Push a local folder to a volume\n\nUploads every file under `folder` (on the \
                 machine this tool runs on) as the volume's new version, and returns the \
                 version. Runs that mount the volume see these files."
            }
            Extra::PullArtifact => {
                "Pull an artifact to a local folder\n\nDownloads a version of the artifact (the \
                 current one unless `versionId` is given) into `folder` on the machine this \
                 tool runs on, each file checked against its size and SHA-256, and returns \
                 what was downloaded."
            }
        }
    }

    /// Whether it only reads the API (a pull writes local files, but changes nothing of
    /// the API's).
    pub(crate) fn read_only(self) -> bool {
        !matches!(self, Extra::PushVolume)
    }

    pub(crate) fn input_schema(self) -> Value {
        let schema = match self {
            Extra::WaitForRun => schemars::schema_for!(WaitForRun),
            Extra::PushVolume => schemars::schema_for!(PushVolume),
            Extra::PullArtifact => schemars::schema_for!(PullArtifact),
        };
        serde_json::to_value(schema).expect("a schema serializes")
    }

    /// Calls the tool; its JSON result, or the error: an argument (named) that does not
    /// parse, or the client's.
    pub(crate) async fn call(self, client: &Client, arguments: Value) -> Result<Value, Failure> {
        match self {
            Extra::WaitForRun => wait_for_run(client, parse(arguments)?).await,
            Extra::PushVolume => push_volume(client, parse(arguments)?).await,
            Extra::PullArtifact => pull_artifact(client, parse(arguments)?).await,
        }
    }
}

/// Why a hand-written tool failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Its arguments did not parse: serde's message, which names the argument.
    Arguments(String),
    Client(vm0_client::Error),
}

impl From<vm0_client::Error> for Failure {
    fn from(error: vm0_client::Error) -> Self {
        Failure::Client(error)
    }
}

fn parse<T: serde::de::DeserializeOwned>(arguments: Value) -> Result<T, Failure> {
    serde_json::from_value(arguments).map_err(|e| Failure::Arguments(e.to_string()))
}

/// The arguments of `waitForRun`.
#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct WaitForRun {
    /// The run's ID.
    id: String,
    /// How long to wait at most, in seconds (default 60, at most 600).
    #[schemars(range(min = 1, max = 600))]
    timeout_seconds: Option<u64>,
    /// How many of the last lines of output to return (default 20, at most 200).
    #[schemars(range(min = 0, max = 200))]
    tail_lines: Option<u64>,
}

async fn wait_for_run(client: &Client, args: WaitForRun) -> Result<Value, Failure> {
    let timeout = Duration::from_secs(args.timeout_seconds.unwrap_or(60).clamp(1, 600));
    let timed_out = tokio::time::timeout(timeout, client.wait_for_run(&args.id)).await.is_err();
    let run = client.get_run().id(&args.id).send().await.body()?;
    let tail = args.tail_lines.unwrap_or(20).min(200);
    let mut output = Vec::new();
    if tail > 0 {
        let logs = client
            .list_run_logs()
            .id(&args.id)
            .type_(LogTypeFilter::Agent)
            .order(SortOrder::Desc)
            .limit(tail)
            .send()
            .await
            .body()?;
        output = logs.data.into_iter().rev().map(|entry| entry.message).collect();
    }
    Ok(json!({
        "id": run.id,
        "status": run.status,
        "error": run.error,
        "timedOut": timed_out,
        "output": output,
        "run": run,
    }))
}

/// The arguments of `pushVolume`.
#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PushVolume {
    /// The volume's ID.
    volume_id: String,
    /// The local folder whose files become the volume's new version (an absolute path is
    /// best: a relative one is taken from where this tool runs).
    folder: PathBuf,
    /// A message for the version.
    message: Option<String>,
}

async fn push_volume(client: &Client, args: PushVolume) -> Result<Value, Failure> {
    let (id, folder, message) = (&args.volume_id, &args.folder, args.message.as_deref());
    let version = client.push_volume(id, folder, message, &Transfer::default()).await?;
    Ok(json!(version))
}

/// The arguments of `pullArtifact`.
#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PullArtifact {
    /// The artifact's ID.
    artifact_id: String,
    /// The version to pull (default: the current one).
    version_id: Option<String>,
    /// The local folder to write the files into, made if missing (an absolute path is
    /// best: a relative one is taken from where this tool runs).
    folder: PathBuf,
}

async fn pull_artifact(client: &Client, args: PullArtifact) -> Result<Value, Failure> {
    let (id, version, folder) = (&args.artifact_id, args.version_id.as_deref(), &args.folder);
    let download = client.pull_artifact(id, version, folder, &Transfer::default()).await?;
    Ok(json!({ "folder": folder, "download": download }))
}
