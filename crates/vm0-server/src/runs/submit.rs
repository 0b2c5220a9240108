//! The submission of a run, all of it: the agent, version, session or checkpoint it
//! names are resolved, its volumes and artifact found (the artifact made with the run
//! when it does not exist yet), its secrets sealed, and the run recorded with its first
//! events before the scheduler is woken. The API layer only translates its request.

use std::collections::HashMap;

use sqlx::types::Json;
use vm0_types::{AgentName, LogLevel, LogType, RunStatus, StorageName};

use super::recorder::{meta, status_event};
use super::{Engine, RunError};
use crate::ids::{self, Prefix};
use crate::store::{
    event_row, AgentRow, AgentVersionRow, Batch, Kind, LogRow, RunRow, SessionRow, StorageRow,
    Store, StoreError,
};

/// The version a request asks for when it wants the current one.
const LATEST: &str = "latest";

/// What a caller asks the engine to run.
#[derive(Debug, Clone)]
pub struct RunRequest {
    pub user_id: String,
    /// What the run executes; `None` when the request named nothing.
    pub target: Option<Target>,
    /// `latest`, a version number, or a version id.
    pub agent_version: String,
    pub prompt: String,
    pub variables: HashMap<String, String>,
    pub secrets: HashMap<String, String>,
    /// Each volume's name and the version wanted: `latest` or a version id.
    pub volumes: HashMap<String, String>,
    pub artifact_name: Option<StorageName>,
    /// The artifact's version the run starts from; its current one when `None`.
    pub artifact_version: Option<String>,
}

/// What a run executes: an agent, or the agent of a session it continues or of a
/// checkpoint a new session starts from.
#[derive(Debug, Clone)]
pub enum Target {
    AgentName(AgentName),
    AgentId(String),
    Session(String),
    Checkpoint(String),
}

/// The agent a run executes, with the session it continues or the checkpoint it starts
/// from.
struct Resolved {
    agent: AgentRow,
    session: Option<String>,
    checkpoint: Option<String>,
}

/// The artifact a run writes: its base version, and the row to make with the run when it
/// does not exist yet.
#[derive(Default)]
struct ArtifactPlan {
    base: Option<String>,
    new: Option<StorageRow>,
}

impl<S: Store> Engine<S> {
    /// Records a new run, pending, and wakes the scheduler; the run as stored.
    pub async fn submit(&self, request: RunRequest) -> Result<RunRow, RunError> {
        check_names(&request.variables, "variables")?;
        check_names(&request.secrets, "secrets")?;
        let user = request.user_id.as_str();
        let target = self.resolve(user, request.target.as_ref()).await?;
        let version = self.agent_version(&target.agent, &request.agent_version).await?;
        let volumes = self.volumes(user, &request.volumes).await?;
        let artifact = self.artifact(user, &request).await?;
        let (session_id, new_session) = match target.session {
            Some(id) => (id, None),
            None => {
                let session = SessionRow {
                    id: ids::new(Prefix::Session),
                    user_id: user.to_string(),
                    agent_id: target.agent.id.clone(),
                    expired_at: None,
                };
                (session.id.clone(), Some(session))
            }
        };
        let row = RunRow {
            id: ids::new(Prefix::Run),
            user_id: user.to_string(),
            agent_id: target.agent.id.clone(),
            agent_name: target.agent.name.to_string(),
            agent_version_id: version.id.clone(),
            session_id,
            from_checkpoint: target.checkpoint,
            status: RunStatus::Pending,
            prompt: request.prompt.clone(),
            variables: Json(request.variables.clone()),
            secrets: Json(self.seal(&request.secrets)),
            volumes: Json(volumes),
            artifact_name: request.artifact_name.as_ref().map(|n| n.to_string()),
            artifact_base: artifact.base,
            artifact_version: None,
            checkpoint_id: None,
            error: None,
            execution_time_ms: None,
            created_at: ids::now(),
            started_at: None,
            completed_at: None,
            epoch: 0,
            base_checkpoint_id: None,
            logs_expired_at: None,
        };
        let first = first_records(&row);
        let (session, new_artifact) = (new_session.as_ref(), artifact.new.as_ref());
        let cap = self.limits.pending_per_user;
        match self.store.create_run(&row, session, new_artifact, &first, cap).await {
            Ok(()) => {}
            Err(StoreError::TooMany) => return Err(RunError::TooManyPending { cap }),
            // Another request made the artifact meanwhile: this one tries again with it.
            Err(StoreError::Conflict) => return Box::pin(self.submit(request)).await,
            Err(other) => return Err(other.into()),
        }
        self.wake.notify_one();
        Ok(row)
    }

    /// A run's secrets as they are stored: sealed.
    fn seal(&self, secrets: &HashMap<String, String>) -> HashMap<String, String> {
        secrets.iter().map(|(name, value)| (name.clone(), self.sealer.seal(value))).collect()
    }

    /// The agent `target` names, with its session or checkpoint.
    async fn resolve(&self, user: &str, target: Option<&Target>) -> Result<Resolved, RunError> {
        let agent = |agent: AgentRow| Resolved { agent, session: None, checkpoint: None };
        match target {
            None => Err(RunError::MissingParameter { param: "agent" }),
            Some(Target::AgentName(name)) => {
                match self.store.get_agent_by_name(user, name).await? {
                    Some(row) => Ok(agent(row)),
                    None => Err(RunError::not_found("agent", name).at("agent")),
                }
            }
            Some(Target::AgentId(id)) => match self.store.get_agent(user, id).await? {
                Some(row) => Ok(agent(row)),
                None => Err(RunError::not_found("agent", id).at("agentId")),
            },
            Some(Target::Session(id)) => self.resolve_session(user, id).await,
            Some(Target::Checkpoint(id)) => {
                let checkpoint = self.store.get_checkpoint(user, id).await?;
                let checkpoint = checkpoint
                    .ok_or_else(|| RunError::not_found("checkpoint", id).at("checkpointId"))?;
                let agent = self.store.get_agent(user, &checkpoint.agent_id).await?;
                let agent = agent.ok_or_else(|| {
                    RunError::invalid_state(format!("The agent of checkpoint '{id}' was deleted"))
                })?;
                Ok(Resolved { agent, session: None, checkpoint: Some(checkpoint.id) })
            }
        }
    }

    /// The agent of session `id`, which the run continues.
    async fn resolve_session(&self, user: &str, id: &str) -> Result<Resolved, RunError> {
        let session = self.store.get_session(user, id).await?;
        let session = session.ok_or_else(|| RunError::not_found("session", id).at("sessionId"))?;
        if session.expired_at.is_some() {
            let message = format!(
                "Session '{id}' has expired: it was unused for longer than this server keeps \
                 sessions"
            );
            return Err(RunError::invalid_state(message).at("sessionId"));
        }
        let agent = self.store.get_agent(user, &session.agent_id).await?;
        let agent = agent.ok_or_else(|| {
            RunError::invalid_state(format!("The agent of session '{id}' was deleted"))
        })?;
        Ok(Resolved { agent, session: Some(session.id), checkpoint: None })
    }

    /// The version `wanted` of `agent`, checked to be one this server can run.
    async fn agent_version(
        &self,
        agent: &AgentRow,
        wanted: &str,
    ) -> Result<AgentVersionRow, RunError> {
        let version = if wanted == LATEST {
            self.store.get_agent_version(&agent.id, &agent.current_version_id).await?
        } else if let Ok(number) = wanted.parse::<i64>() {
            self.store.get_agent_version_by_number(&agent.id, number).await?
        } else {
            self.store.get_agent_version(&agent.id, wanted).await?
        };
        let version = version
            .ok_or_else(|| RunError::not_found("agent version", wanted).at("agentVersion"))?;
        super::config::check(&version.config.0, &self.limits.caps).map_err(|e| {
            RunError::invalid_state(format!("Agent version '{}' cannot run here: {e}", version.id))
        })?;
        Ok(version)
    }

    /// The version id each wanted volume mounts.
    async fn volumes(
        &self,
        user: &str,
        wanted: &HashMap<String, String>,
    ) -> Result<HashMap<String, String>, RunError> {
        let mut volumes = HashMap::new();
        for (name, wanted) in wanted {
            let param = format!("volumes.{name}");
            let volume = self.store.get_storage_by_name(Kind::Volume, user, name).await?;
            let volume = volume.ok_or_else(|| RunError::not_found("volume", name).at(&param))?;
            let resolved = if wanted == LATEST {
                let none =
                    || RunError::invalid_state(format!("Volume '{name}' has no version yet"));
                volume.current_version_id.ok_or_else(|| none().at(&param))?
            } else {
                let version = self.store.get_version(&volume.id, wanted).await?;
                version.ok_or_else(|| RunError::not_found("volume version", wanted).at(&param))?.id
            };
            volumes.insert(name.clone(), resolved);
        }
        Ok(volumes)
    }

    /// The artifact the run writes. One that does not exist yet is made with the run, in
    /// its transaction, so that a run that is refused leaves no artifact behind.
    async fn artifact(&self, user: &str, request: &RunRequest) -> Result<ArtifactPlan, RunError> {
        let wanted = request.artifact_version.as_deref();
        let version_gone =
            |id: &str| RunError::not_found("artifact version", id).at("artifactVersion");
        let Some(name) = &request.artifact_name else {
            return match wanted {
                Some(_) => Err(RunError::InvalidParameter {
                    param: "artifactVersion".into(),
                    message: "artifactVersion needs artifactName".into(),
                }),
                None => Ok(ArtifactPlan::default()),
            };
        };
        let artifact = self.store.get_storage_by_name(Kind::Artifact, user, name).await?;
        match (artifact, wanted) {
            (Some(artifact), Some(wanted)) => {
                let version = self.store.get_version(&artifact.id, wanted).await?;
                let base = version.ok_or_else(|| version_gone(wanted))?.id;
                Ok(ArtifactPlan { base: Some(base), new: None })
            }
            (Some(artifact), None) => {
                Ok(ArtifactPlan { base: artifact.current_version_id, new: None })
            }
            // A version of an artifact that does not exist.
            (None, Some(wanted)) => Err(version_gone(wanted)),
            (None, None) => {
                let now = ids::now();
                let new = StorageRow {
                    id: ids::new(Prefix::Artifact),
                    name: name.clone(),
                    current_version_id: None,
                    size: 0,
                    file_count: 0,
                    created_at: now,
                    updated_at: now,
                };
                Ok(ArtifactPlan { base: None, new: Some(new) })
            }
        }
    }
}

/// Environment names a run's variables and secrets may use: the server sets `VM0_*`,
/// `PATH` and `HOME` itself.
fn check_names(map: &HashMap<String, String>, param: &str) -> Result<(), RunError> {
    for name in map.keys() {
        let mut chars = name.chars();
        let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        let message = if !valid {
            format!("{param} names must be environment variable names (letters, digits, _)")
        } else if name.starts_with("VM0_") || name == "PATH" || name == "HOME" {
            format!("{name} is set by the server")
        } else {
            continue;
        };
        return Err(RunError::InvalidParameter { param: format!("{param}.{name}"), message });
    }
    Ok(())
}

/// What a new run records first, stored with it (`RunStore::create_run`): its pending
/// status and a log entry.
fn first_records(run: &RunRow) -> Batch {
    let event = event_row(&status_event(RunStatus::Pending).numbered(1));
    let metadata = meta([
        ("status", &RunStatus::Pending.to_string()),
        ("agentVersionId", &run.agent_version_id),
    ]);
    let log = LogRow {
        seq: 1,
        timestamp: run.created_at,
        kind: LogType::System,
        level: LogLevel::Info,
        message: "Run created".into(),
        metadata: Json(metadata),
    };
    Batch {
        events: vec![(run.id.clone(), event)],
        logs: vec![(run.id.clone(), log)],
        ..Batch::default()
    }
}
