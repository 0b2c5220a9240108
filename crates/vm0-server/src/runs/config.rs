//! The agent configuration of the local executor: a Rust type, whose schemars-derived
//! JSON Schema is what createAgent and updateAgent check configurations against, and what
//! the server publishes at `/executors/local/config.schema.json`.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value};
use vm0_api::ApiError;

/// How the local executor runs an agent. A run executes in a sandbox of its own: its own
/// mount, PID, IPC, UTS and user namespaces, where it sees a read-only system root
/// (`/bin`, `/etc`, `/lib`, `/sbin`, `/usr`), its working directory at `/work`, a private
/// `/tmp` and `/dev/shm` in memory, a read-only `/dev`, and nothing of the server, its
/// data or other runs. It runs as an unprivileged user, and every process it starts ends
/// with it.
///
/// The `max*` limits hold for the run as a whole: the server checks them at every sample
/// of the run's processes and working directory (once a second by default) and, past
/// one, stops the run, which fails with a message naming the limit; it checks the working
/// directory again when the run ends. Each process is also held by the kernel to twice
/// the memory, task and CPU limits (so a burst between samples cannot run away), and to
/// `maxFileSizeMib` for any one file; `/tmp` and `/dev/shm` are each held to half the
/// memory limit. A run cannot make user namespaces of its own.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "Local executor agent configuration")]
pub(crate) struct LocalConfig {
    /// The program and its arguments, such as `["sh", "-c", "echo \"$VM0_PROMPT\""]`. It
    /// runs in the session's working directory with a clean environment: `PATH`, `HOME`,
    /// `VM0_PROMPT` (also on standard input), `VM0_RUN_ID`, `VM0_SESSION_ID`, and the run's
    /// variables and secrets.
    #[schemars(length(min = 1))]
    pub command: Vec<String>,
    /// Seconds before the run is stopped and ends as `timeout` (default 3600).
    #[schemars(range(min = 1, max = 86400))]
    pub timeout_seconds: Option<u64>,
    /// The most bytes of output, standard output and error together, that a run may
    /// print (default 64 MiB); past it the run is stopped and fails, naming the limit.
    /// Each line counts 256 bytes more than it holds, what storing it takes, so that a
    /// flood of short lines is bounded as one long line is. Lines longer than 64 KiB are
    /// cut there, the cut marked.
    #[schemars(range(min = 1024, max = 1073741824))]
    pub max_output_bytes: Option<u64>,
    /// Whether the run may use the network (default false): a sandboxed run has only a
    /// loopback interface of its own, so it can neither reach the server, the host's
    /// services and the private network, nor send what it reads (its secrets) anywhere.
    /// An agent that calls a model's API over the internet needs `true`, which shares the
    /// host's network.
    #[serde(default)]
    pub network: bool,
    /// The most memory, in MiB, that the run's processes may hold resident together,
    /// with the files in its `/tmp` and `/dev/shm`, which are memory (default 2048).
    #[schemars(range(min = 16, max = 1048576))]
    pub max_memory_mib: Option<u64>,
    /// The most processes and threads the run may have at once (default 512).
    #[schemars(range(min = 1, max = 65536))]
    pub max_processes: Option<u64>,
    /// The most CPU time, in seconds, that the run's processes may use together (default
    /// 3600).
    #[schemars(range(min = 1, max = 604800))]
    pub max_cpu_seconds: Option<u64>,
    /// The largest file, in MiB, that the run may write (default 1024); a process writing
    /// past it is stopped.
    #[schemars(range(min = 1, max = 1048576))]
    pub max_file_size_mib: Option<u64>,
    /// The most disk space, in MiB, that the files of the working directory (its volumes,
    /// artifact and whatever the run writes) may take together (default 8192).
    #[schemars(range(min = 1, max = 1048576))]
    pub max_disk_mib: Option<u64>,
    /// The most files and folders the working directory may hold (default 100000): each
    /// file of a checkpoint or an artifact is a stored record.
    #[schemars(range(min = 1, max = 10000000))]
    pub max_files: Option<u64>,
    /// Files written into the working directory before each run, by relative path.
    #[serde(default)]
    pub files: BTreeMap<String, String>,
}

/// The most an agent configuration may ask of each limit of a run on this server, set by
/// its operator: a configuration past one is refused (400 naming the field), and a
/// limit it leaves out takes its default or the cap, whichever is lower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunCaps {
    pub timeout_seconds: u64,
    pub max_output_bytes: u64,
    pub max_memory_mib: u64,
    pub max_processes: u64,
    pub max_cpu_seconds: u64,
    pub max_file_size_mib: u64,
    pub max_disk_mib: u64,
    pub max_files: u64,
}

impl Default for RunCaps {
    /// What a host can give one run: `defaults.rs`.
    fn default() -> RunCaps {
        use crate::defaults as d;
        RunCaps {
            timeout_seconds: d::MAX_RUN_TIMEOUT_SECONDS,
            max_output_bytes: d::MAX_RUN_OUTPUT_BYTES,
            max_memory_mib: d::MAX_RUN_MEMORY_MIB,
            max_processes: d::MAX_RUN_PROCESSES,
            max_cpu_seconds: d::MAX_RUN_CPU_SECONDS,
            max_file_size_mib: d::MAX_RUN_FILE_SIZE_MIB,
            max_disk_mib: d::MAX_RUN_DISK_MIB,
            max_files: d::MAX_RUN_FILES,
        }
    }
}

/// A run's limits, as the caps give them: what its agent's configuration asks, or the
/// default, within the caps.
pub(crate) type RunLimits = RunCaps;

/// One limit: `asked`, or `default` within `cap`; past the cap, an error naming the field
/// and the server option that sets the cap.
fn limit(
    asked: Option<u64>,
    default: u64,
    cap: u64,
    field: &str,
    option: &str,
) -> Result<u64, ConfigError> {
    match asked {
        Some(value) if value > cap => Err(ConfigError::invalid(
            format!("config.{field}"),
            format!(
                "config.{field} is {value}, more than this server allows a run: at most {cap} \
                 (its --{option})"
            ),
        )),
        Some(value) => Ok(value),
        None => Ok(default.min(cap)),
    }
}

impl LocalConfig {
    /// The run's limits under `caps`.
    pub(crate) fn limits(&self, caps: &RunCaps) -> Result<RunLimits, ConfigError> {
        Ok(RunLimits {
            timeout_seconds: limit(
                self.timeout_seconds,
                3600,
                caps.timeout_seconds,
                "timeoutSeconds",
                "max-run-timeout-seconds",
            )?,
            max_output_bytes: limit(
                self.max_output_bytes,
                64 << 20,
                caps.max_output_bytes,
                "maxOutputBytes",
                "max-run-output-bytes",
            )?,
            max_memory_mib: limit(
                self.max_memory_mib,
                2048,
                caps.max_memory_mib,
                "maxMemoryMib",
                "max-run-memory-mib",
            )?,
            max_processes: limit(
                self.max_processes,
                512,
                caps.max_processes,
                "maxProcesses",
                "max-run-processes",
            )?,
            max_cpu_seconds: limit(
                self.max_cpu_seconds,
                3600,
                caps.max_cpu_seconds,
                "maxCpuSeconds",
                "max-run-cpu-seconds",
            )?,
            max_file_size_mib: limit(
                self.max_file_size_mib,
                1024,
                caps.max_file_size_mib,
                "maxFileSizeMib",
                "max-run-file-size-mib",
            )?,
            max_disk_mib: limit(
                self.max_disk_mib,
                8192,
                caps.max_disk_mib,
                "maxDiskMib",
                "max-run-disk-mib",
            )?,
            max_files: limit(self.max_files, 100_000, caps.max_files, "maxFiles", "max-run-files")?,
        })
    }
}

/// The configuration's JSON Schema.
pub(crate) fn schema() -> &'static Value {
    static SCHEMA: LazyLock<Value> = LazyLock::new(|| {
        serde_json::to_value(schemars::schema_for!(LocalConfig)).expect("the schema serializes")
    });
    &SCHEMA
}

/// Checks an agent's configuration; a violation is a 400 naming `config.<field>`.
/// Why an agent configuration is not one the local executor can run.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    /// The configuration breaks its JSON Schema: the checker's answer, which names the
    /// field and says whether it is missing or invalid.
    #[error("{}", .0.message)]
    Schema(ApiError),
    /// A field the schema allows but the executor cannot use.
    #[error("{message}")]
    Invalid { param: String, message: String },
}

impl ConfigError {
    fn invalid(param: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid { param: param.into(), message: message.into() }
    }

    /// The field at fault, when one is.
    #[cfg(test)]
    fn param(&self) -> Option<&str> {
        match self {
            ConfigError::Schema(answer) => answer.param.as_deref(),
            ConfigError::Invalid { param, .. } => Some(param),
        }
    }
}

pub(crate) fn check(
    config: &Map<String, Value>,
    caps: &RunCaps,
) -> Result<LocalConfig, ConfigError> {
    static VALIDATOR: LazyLock<jsonschema::Validator> =
        LazyLock::new(|| jsonschema::validator_for(schema()).expect("the derived schema compiles"));
    let config = Value::Object(config.clone());
    vm0_api::check_json(&VALIDATOR, &config, "config").map_err(ConfigError::Schema)?;
    let parsed: LocalConfig = LocalConfig::deserialize(config)
        .map_err(|e| ConfigError::invalid("config", e.to_string()))?;
    if parsed.command[0].is_empty() {
        return Err(ConfigError::invalid(
            "config.command[0]",
            "config.command[0] must name a program",
        ));
    }
    for path in parsed.files.keys() {
        let safe = !path.is_empty()
            && !path.starts_with('/')
            && path.split('/').all(|s| !s.is_empty() && s != "." && s != "..");
        if !safe || path.contains('\0') {
            return Err(ConfigError::invalid(
                format!("config.files.{path}"),
                "file paths must be relative, without . or .. segments",
            ));
        }
    }
    parsed.limits(caps)?;
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn config(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    fn check_default(config: &Map<String, Value>) -> Result<LocalConfig, ConfigError> {
        check(config, &RunCaps::default())
    }

    #[test]
    fn a_limit_past_the_servers_cap_is_refused_naming_it() {
        let error = check_default(&config(json!({"command": ["true"], "maxProcesses": 65536})))
            .unwrap_err();
        assert_eq!(error.param(), Some("config.maxProcesses"));
        assert!(error.to_string().contains("at most 1024 (its --max-run-processes)"), "{error}");
        // A limit left out takes its default, or the cap when that is lower.
        let caps = RunCaps { max_memory_mib: 1024, ..RunCaps::default() };
        let parsed = check(&config(json!({"command": ["true"]})), &caps).unwrap();
        let limits = parsed.limits(&caps).unwrap();
        assert_eq!((limits.max_memory_mib, limits.max_processes), (1024, 512));
    }

    #[test]
    fn file_paths_stay_inside_the_working_directory() {
        for path in ["/etc/passwd", "../up", "a/../../b", "a//b", "./a", "", "a/./b"] {
            let error = check_default(&config(json!({"command": ["true"], "files": {path: "x"}})))
                .unwrap_err();
            assert_eq!(
                error.param(),
                Some(format!("config.files.{path}").as_str()),
                "{path:?} was accepted"
            );
        }
        for path in ["a", "a/b/c.txt", ".hidden", "a..b"] {
            assert!(
                check_default(&config(json!({"command": ["true"], "files": {path: "x"}}))).is_ok(),
                "{path:?} was refused"
            );
        }
    }

    #[test]
    fn a_command_names_a_program() {
        assert_eq!(
            check_default(&config(json!({"command": [""]}))).unwrap_err().param(),
            Some("config.command[0]")
        );
        assert!(check_default(&config(json!({"command": []}))).is_err());
        assert!(check_default(&config(json!({"command": ["sh"], "unknown": 1}))).is_err());
    }
}
