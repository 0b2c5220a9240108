//! Rows into the generated types of the API, field by field: a field the spec adds or
//! renames is a compile error here, never a malformed response.

use vm0_types as types;

use super::storage::StorageDetail;
use crate::store::{
    positive, AgentRow, AgentVersionRow, LogRow, MetricRow, RunRow, StorageRow, TokenRow,
    VersionRow,
};

impl From<AgentRow> for types::Agent {
    fn from(r: AgentRow) -> Self {
        types::Agent {
            id: r.id,
            name: r.name,
            current_version_id: r.current_version_id,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

impl From<AgentVersionRow> for types::AgentVersion {
    fn from(r: AgentVersionRow) -> Self {
        types::AgentVersion {
            id: r.id,
            agent_id: r.agent_id,
            version_number: positive(r.version_number),
            created_at: r.created_at,
        }
    }
}

impl From<AgentVersionRow> for types::AgentVersionDetail {
    fn from(r: AgentVersionRow) -> Self {
        types::AgentVersionDetail {
            id: r.id,
            agent_id: r.agent_id,
            version_number: positive(r.version_number),
            config: types::AgentConfig(r.config.0),
            created_at: r.created_at,
        }
    }
}

impl From<TokenRow> for types::Token {
    fn from(r: TokenRow) -> Self {
        types::Token {
            id: r.id,
            name: r.name,
            token_prefix: r.token_prefix,
            last_used_at: r.last_used_at,
            expires_at: r.expires_at,
            created_at: r.created_at,
        }
    }
}

/// A new token with its value, shown this once.
pub(super) fn created_token(r: TokenRow, value: String) -> types::CreatedToken {
    types::CreatedToken {
        id: r.id,
        name: r.name,
        token_prefix: r.token_prefix,
        last_used_at: r.last_used_at,
        expires_at: r.expires_at,
        created_at: r.created_at,
        token: value.parse().expect("new tokens have the spec's form"),
    }
}

/// Volumes and artifacts have one row and one shape under two names.
macro_rules! storage_types {
    ($storage:ident, $detail:ident, $version:ident, $parent:ident) => {
        impl From<StorageRow> for types::$storage {
            fn from(r: StorageRow) -> Self {
                types::$storage {
                    id: r.id,
                    name: r.name,
                    current_version_id: r.current_version_id,
                    size: r.size,
                    file_count: r.file_count,
                    created_at: r.created_at,
                    updated_at: r.updated_at,
                }
            }
        }

        impl From<VersionRow> for types::$version {
            fn from(r: VersionRow) -> Self {
                types::$version {
                    id: r.id,
                    $parent: r.storage_id,
                    size: r.size,
                    file_count: r.file_count,
                    message: r.message,
                    created_by: r.created_by,
                    created_at: r.created_at,
                }
            }
        }

        impl From<StorageDetail> for types::$detail {
            fn from(StorageDetail(r, current): StorageDetail) -> Self {
                types::$detail {
                    id: r.id,
                    name: r.name,
                    current_version_id: r.current_version_id,
                    current_version: current.map(Into::into),
                    size: r.size,
                    file_count: r.file_count,
                    created_at: r.created_at,
                    updated_at: r.updated_at,
                }
            }
        }
    };
}

storage_types!(Volume, VolumeDetail, VolumeVersion, volume_id);
storage_types!(Artifact, ArtifactDetail, ArtifactVersion, artifact_id);

impl From<&RunRow> for types::Run {
    fn from(r: &RunRow) -> Self {
        types::Run {
            id: r.id.clone(),
            agent_id: r.agent_id.clone(),
            agent_name: r.agent_name.clone(),
            status: r.status,
            prompt: r.prompt.clone(),
            created_at: r.created_at,
            started_at: r.started_at,
            completed_at: r.completed_at,
        }
    }
}

impl From<RunRow> for types::Run {
    fn from(r: RunRow) -> Self {
        (&r).into()
    }
}

impl From<&RunRow> for types::RunDetail {
    fn from(r: &RunRow) -> Self {
        types::RunDetail {
            id: r.id.clone(),
            agent_id: r.agent_id.clone(),
            agent_name: r.agent_name.clone(),
            status: r.status,
            prompt: r.prompt.clone(),
            created_at: r.created_at,
            started_at: r.started_at,
            completed_at: r.completed_at,
            error: r.error.clone(),
            execution_time_ms: r.execution_time_ms,
            checkpoint_id: r.checkpoint_id.clone(),
            session_id: r.session_id.clone(),
            artifact_name: r.artifact_name.clone(),
            artifact_version: r.artifact_version.clone(),
            volumes: r.volumes.0.clone(),
            logs_expired_at: r.logs_expired_at,
        }
    }
}

impl From<LogRow> for types::LogEntry {
    fn from(r: LogRow) -> Self {
        let stream = r.stream();
        types::LogEntry {
            sequence: positive(r.seq),
            timestamp: r.timestamp,
            type_: r.kind,
            level: r.level,
            message: r.message,
            metadata: r.metadata.0,
            stream,
        }
    }
}

impl From<MetricRow> for types::MetricSample {
    fn from(m: MetricRow) -> Self {
        types::MetricSample {
            timestamp: m.timestamp,
            cpu_percent: m.cpu_percent,
            memory_used_mb: m.memory_used_mb,
            memory_total_mb: m.memory_total_mb,
            disk_used_mb: m.disk_used_mb,
            disk_total_mb: m.disk_total_mb,
        }
    }
}
