//! Typed parsing of the plugin configuration (`driver_configure`) and the task
//! (`driver_start`), as docs/configuration.md and docs/api.md describe them. Unknown keys
//! are errors naming the key; type errors name the JSON path of the field.

use crate::error::{Code, Error, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;

/// Parses `text` into `T`, mapping serde's error to `invalid_json` (not JSON at all)
/// or `invalid_config`/`invalid_request` with the JSON path of the offending field.
pub fn parse<T: DeserializeOwned>(text: &str, code: Code, prefix: &str) -> Result<T> {
    // One pass in the common case. A request that fails it goes the slow way, which
    // names the field at fault: so does one with a key twice, which a map value takes
    // as its last. Only an object may take the fast way (serde reads a struct from an
    // array too).
    if text.trim_start().starts_with('{')
        && let Ok(t) = serde_json::from_str::<T>(text)
    {
        return Ok(t);
    }
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| Error::new(Code::InvalidJson, format!("request is not valid JSON: {e}")))?;
    parse_value(value, code, prefix)
}

/// Like [`parse`] but from an already parsed value.
pub fn parse_value<T: DeserializeOwned>(
    value: serde_json::Value,
    code: Code,
    prefix: &str,
) -> Result<T> {
    if !value.is_object() {
        return Err(Error::new(
            Code::InvalidJson,
            "request must be a JSON object",
        ));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let mut path = e.path().to_string();
        let inner = e.inner().to_string();
        // For a missing key the path points at the parent; name the key itself.
        if let Some(key) = inner
            .strip_prefix("missing field `")
            .and_then(|s| s.split('`').next())
        {
            path = if path == "." {
                key.to_string()
            } else {
                format!("{path}.{key}")
            };
        }
        let path = match (prefix.is_empty(), path.as_str()) {
            (_, ".") => prefix.to_string(),
            (true, p) => p.to_string(),
            (false, p) => format!("{prefix}.{p}"),
        };
        let path = path.trim_matches('.').to_string();
        let message = if path.is_empty() {
            inner
        } else {
            format!("{path}: {inner}")
        };
        if path.is_empty() {
            Error::new(code, message)
        } else {
            Error::field(code, path, message)
        }
    })
}

/// `driver_configure` request and the effective plugin configuration.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PluginConfig {
    /// Absolute; the driver's state and the default alloc dirs. `null`:
    /// `$EXECDRIVER_DATA_DIR`, else `/var/lib/execdriver` as root, else a per-user
    /// directory. Created if missing and must be writable.
    pub data_dir: Option<String>,
    /// The `execdriver-shim` binary. `null`: `$EXECDRIVER_SHIM`, else `execdriver-shim` in
    /// the directory of the loaded library, else in `<libdir>/../libexec/execdriver/`
    /// (where `install.sh` puts it).
    pub shim_path: Option<String>,
    /// Relative path of the task cgroups' parent under each controller's mount: no `.`,
    /// `..` or empty components (`nomad`, not `/nomad`).
    pub cgroup_parent: String,
    /// Exec tasks' `pid_mode` when they set none; `host` also allows tasks to ask for it.
    pub default_pid_mode: NsMode,
    /// Exec tasks' `ipc_mode` when they set none; `host` also allows tasks to ask for it.
    pub default_ipc_mode: NsMode,
    /// Enter the task's root with `chroot` instead of `pivot_root` (a host on a ramdisk).
    pub no_pivot_root: bool,
    /// Read-only bind mounts in every exec task: absolute host path to absolute task path.
    pub chroot_env: BTreeMap<String, String>,
    /// The ceiling of every exec task's capabilities: names (case-insensitive, `CAP_`
    /// optional) or `all`.
    pub allow_caps: Vec<String>,
    /// Comma-separated uids and ranges `a-b` an exec task's user may not have.
    pub denied_host_uids: String,
    /// The same for the user's primary and supplementary groups.
    pub denied_host_gids: String,
    /// Host environment variables copied into every task (an allow-list).
    pub env_passthrough: Vec<String>,
    /// The longest grace period a task's `kill_timeout_ms` or a stop's `timeout_ms` may
    /// ask for (Nomad's client `max_kill_timeout`): longer ones are clamped to it.
    pub max_kill_timeout_ms: u64,
    /// Whether a task may run without the default seccomp filter
    /// (`config.seccomp: "unconfined"`).
    pub allow_unconfined_seccomp: bool,
    /// Whether a task may ask for the host's pid namespace (`config.pid_mode: "host"`):
    /// there it sees, and as the same user may signal and trace, every process of the
    /// host, other tasks' included. Implied by `default_pid_mode: "host"`.
    pub allow_host_pid_mode: bool,
    /// The same for the host's ipc namespace (`config.ipc_mode: "host"`).
    pub allow_host_ipc_mode: bool,
    /// Where a group's network namespaces may be (`network_isolation.path`): the
    /// directories in which the host agent keeps them, as `ip netns` does.
    pub netns_dirs: Vec<String>,
    /// How artifacts are fetched.
    pub artifact: ArtifactConfig,
    /// After a start, keep one supervisor of that kind started ahead, idle (for exec with
    /// its command process prepared), so that the next start of that kind skips most of
    /// its set-up (see docs/design.md).
    pub prestart_supervisor: bool,
    /// The most verbose level written to `log_path`: `off`, `error`, `warn`, `info`,
    /// `debug` or `trace`.
    pub log_level: LogLevel,
    /// Absolute path of a file the library appends its own log lines to (opened at
    /// `driver_configure`, made 0600 if missing; its directory must exist); `null`: none.
    /// `driver_set_log_callback` is the other way to receive them.
    pub log_path: Option<String>,
}

impl Default for PluginConfig {
    fn default() -> Self {
        let chroot_env = [
            "/bin",
            "/etc",
            "/lib",
            "/lib32",
            "/lib64",
            "/run/resolvconf",
            "/sbin",
            "/usr",
        ]
        .iter()
        .map(|p| (p.to_string(), p.to_string()))
        .collect();
        PluginConfig {
            data_dir: None,
            shim_path: None,
            cgroup_parent: "execdriver".into(),
            default_pid_mode: NsMode::Private,
            default_ipc_mode: NsMode::Private,
            no_pivot_root: false,
            chroot_env,
            allow_caps: crate::caps::DEFAULT_CAPS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            denied_host_uids: "0".into(),
            denied_host_gids: String::new(),
            env_passthrough: vec!["PATH".into()],
            max_kill_timeout_ms: 30_000,
            allow_unconfined_seccomp: false,
            allow_host_pid_mode: false,
            allow_host_ipc_mode: false,
            netns_dirs: vec!["/var/run/netns".into(), "/run/netns".into()],
            artifact: ArtifactConfig::default(),
            prestart_supervisor: true,
            log_level: LogLevel::Info,
            log_path: None,
        }
    }
}

/// `artifact` section of the plugin configuration (docs/configuration.md; artifacts in
/// docs/task.md).
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ArtifactConfig {
    /// Directories `file://` sources may come from; empty: `file://` is refused.
    pub file_roots: Vec<String>,
    /// Bound on one artifact's whole fetch, retries included; `0`: none.
    pub http_read_timeout_ms: u64,
    /// Largest download, in bytes.
    pub http_max_bytes: u64,
    /// Largest total unpacked size of an archive, in bytes.
    pub decompression_size_limit: u64,
    /// Most entries in one archive.
    pub decompression_file_count_limit: u64,
    /// Retries of a transient failure (connection error, 5xx, a short body).
    pub retries: u32,
    /// Artifacts of one task fetched at once (0 counts as 1).
    pub concurrency: u32,
    /// Where verified artifacts with a sha256/sha512 checksum are kept, by checksum, and
    /// served from to later identical requests; `null`: no cache.
    pub cache_dir: Option<String>,
}

impl Default for ArtifactConfig {
    fn default() -> Self {
        ArtifactConfig {
            file_roots: vec![],
            http_read_timeout_ms: 1_800_000,
            http_max_bytes: 107_374_182_400,
            decompression_size_limit: 107_374_182_400,
            decompression_file_count_limit: 4096,
            retries: 3,
            concurrency: 3,
            cache_dir: None,
        }
    }
}

/// A level of the library's own log, most severe first; each level includes those
/// before it. In C, `DRIVER_LOG_ERROR` (1) … `DRIVER_LOG_TRACE` (5); `off` is 0.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(
    Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Nothing.
    Off = 0,
    /// A failure the host did not ask about and cannot see otherwise (a lost
    /// supervisor, a caught panic, state that could not be written).
    Error = 1,
    /// A failed start, a grace period that ran out, a clean-up that did not complete.
    Warn = 2,
    /// Configuration, each task's start, signals, stops, exit, recovery, destruction.
    #[default]
    Info = 3,
    /// Each step of a start (artifacts, the supervisor it got), failed requests.
    Debug = 4,
    /// Every call: operation, status, time taken.
    Trace = 5,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Off => "OFF",
            LogLevel::Error => "ERROR",
            LogLevel::Warn => "WARN",
            LogLevel::Info => "INFO",
            LogLevel::Debug => "DEBUG",
            LogLevel::Trace => "TRACE",
        }
    }

    /// The level of a C `level` argument (0–5).
    pub fn from_i32(n: i32) -> Option<LogLevel> {
        [
            LogLevel::Off,
            LogLevel::Error,
            LogLevel::Warn,
            LogLevel::Info,
            LogLevel::Debug,
            LogLevel::Trace,
        ]
        .get(usize::try_from(n).ok()?)
        .copied()
    }
}

/// A namespace (pid, ipc) of an exec task.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum NsMode {
    /// A namespace of the task's own.
    #[default]
    Private,
    /// The host's namespace.
    Host,
}

/// `driver` of a task.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum DriverKind {
    /// Isolated: needs root and cgroups.
    #[default]
    Exec,
    /// Not isolated: the host's filesystem, user and network.
    RawExec,
}

impl DriverKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DriverKind::Exec => "exec",
            DriverKind::RawExec => "raw_exec",
        }
    }
}

/// The task of `driver_start` (docs/api.md; what it sees: docs/task.md).
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct TaskRequest {
    /// Identifier unique among the live tasks; absent: `<name>-<16 hex>`.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = MAX_ID_CHARS)))]
    pub id: Option<String>,
    /// Identifier, not `alloc`: the task dir's and the log files' name.
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = MAX_ID_CHARS)))]
    pub name: String,
    /// Which driver runs the task.
    #[serde(default)]
    pub driver: DriverKind,
    /// Identifier when not empty; `NOMAD_ALLOC_ID`.
    #[serde(default)]
    pub alloc_id: String,
    /// `NOMAD_ALLOC_NAME`.
    #[serde(default)]
    pub alloc_name: String,
    /// `NOMAD_ALLOC_INDEX`.
    #[serde(default)]
    pub alloc_index: i64,
    /// `NOMAD_JOB_ID`.
    #[serde(default)]
    pub job_id: String,
    /// `NOMAD_JOB_NAME`.
    #[serde(default)]
    pub job_name: String,
    /// `NOMAD_GROUP_NAME`.
    #[serde(default)]
    pub group_name: String,
    /// `NOMAD_NAMESPACE`.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// `NOMAD_DC`.
    #[serde(default)]
    pub datacenter: String,
    /// `NOMAD_REGION`.
    #[serde(default)]
    pub region: String,
    /// Absolute, without `.` or `..` components; absent: `<data_dir>/alloc/<alloc_id>`
    /// (`<data_dir>/alloc/<id>` without an `alloc_id`).
    #[serde(default)]
    pub alloc_dir: Option<String>,
    /// What to run, and how.
    pub config: TaskConfig,
    /// Fetched into the task dir before the command starts.
    #[serde(default)]
    pub artifacts: Vec<Artifact>,
    /// The task's own variables (names non-empty, without `=` or NUL), values
    /// interpolated.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// `NOMAD_META_<key>`.
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
    /// The node, for interpolation only (`${node.class}`, `${attr.<key>}`, …).
    #[serde(default)]
    pub node: Node,
    /// By label: `NOMAD_IP_<label>`, `NOMAD_PORT_<label>`, `NOMAD_ADDR_<label>`.
    #[serde(default)]
    pub ports: BTreeMap<String, Port>,
    /// exec only: the user the command runs as; absent: `nobody`.
    #[serde(default)]
    pub user: Option<String>,
    /// exec only: the task's cgroup limits.
    #[serde(default)]
    pub resources: Resources,
    /// exec only: the task's network (docs/api.md, `network_isolation`); absent means the
    /// host's.
    #[serde(default)]
    pub network_isolation: Option<NetworkIsolation>,
    /// Return a `wait_fd` with the start: a file descriptor (the read end of a pipe,
    /// close-on-exec, owned by the caller) that becomes readable (EOF) once the task's
    /// exit is known, for epoll, asyncio or Go's poller instead of a blocked thread.
    #[serde(default)]
    pub wait_fd: bool,
    /// What `driver_stop` sends the command first: a name (`SIGTERM`, `TERM`, `term`,
    /// `SIGRTMIN+3`) or a number.
    #[serde(default = "default_kill_signal", deserialize_with = "de_signal")]
    #[cfg_attr(feature = "schema", schemars(schema_with = "signal_schema"))]
    pub kill_signal: String,
    /// The grace period after `kill_signal` before SIGKILL; clamped to the plugin's
    /// `max_kill_timeout_ms`.
    #[serde(default = "default_kill_timeout")]
    pub kill_timeout_ms: u64,
    /// Rotation of the task's log files.
    #[serde(default)]
    pub logs: Logs,
}

fn default_namespace() -> String {
    "default".into()
}
fn default_kill_signal() -> String {
    "SIGINT".into()
}
fn default_kill_timeout() -> u64 {
    5000
}

/// `config` of a task.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct TaskConfig {
    /// Interpolated, then looked up: an absolute path, a path relative to `work_dir`, or
    /// a name in `/local`, `/usr/local/bin`, `/usr/bin`, `/bin`.
    #[cfg_attr(feature = "schema", schemars(length(min = 1)))]
    pub command: String,
    /// A list (numbers and booleans taken as their text), a string split on white space,
    /// or a scalar; each interpolated.
    #[serde(default, deserialize_with = "de_args")]
    #[cfg_attr(feature = "schema", schemars(schema_with = "args_schema"))]
    pub args: Vec<String>,
    /// Fetched to `local/` and, when a plain file, made executable (0755).
    #[serde(default)]
    pub artifact_source: Option<String>,
    /// `md5|sha1|sha256|sha512:<hex>` of `artifact_source`.
    #[serde(default)]
    pub checksum: Option<String>,
    /// Interpolated; exec: an absolute path in the task (default `/`); raw_exec: default
    /// the task dir.
    #[serde(default)]
    pub work_dir: Option<String>,
    /// exec only: absent means the plugin's `default_pid_mode`; `host` needs
    /// `allow_host_pid_mode` unless that is the default.
    #[serde(default)]
    pub pid_mode: Option<NsMode>,
    /// exec only: the same for `ipc_mode`.
    #[serde(default)]
    pub ipc_mode: Option<NsMode>,
    /// exec only: capabilities to add (within the plugin's `allow_caps`).
    #[serde(default)]
    pub cap_add: Vec<String>,
    /// exec only: capabilities to drop from the default set.
    #[serde(default)]
    pub cap_drop: Vec<String>,
    /// exec only: the seccomp filter; absent means `default`.
    #[serde(default)]
    pub seccomp: Option<Seccomp>,
}

/// `config.seccomp`.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Seccomp {
    /// The driver's filter (see docs/task.md).
    #[default]
    Default,
    /// No filter: only where the plugin's `allow_unconfined_seccomp` is set.
    Unconfined,
}

/// `network_isolation` of a task (Nomad's `NetworkIsolationSpec`).
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NetworkIsolation {
    /// Which network namespace.
    pub mode: NetworkMode,
    /// `group`: the network namespace to join (a bind mount of one, such as
    /// `/var/run/netns/<name>`).
    #[serde(default)]
    pub path: Option<String>,
}

/// `network_isolation.mode`.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// The host's network namespace.
    Host,
    /// A namespace the host agent made, joined by path.
    Group,
    /// A namespace of the task's own holding only loopback, up.
    None,
}

/// `args`: a list of strings (numbers and booleans taken as their text), a string split
/// on white space, or a scalar.
pub(crate) fn de_args<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Vec<String>, D::Error> {
    use serde::de::Error as _;
    use serde_json::Value;
    fn scalar(v: &Value) -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }
    match Value::deserialize(d)? {
        Value::Null => Ok(vec![]),
        Value::String(s) => Ok(s.split_whitespace().map(str::to_string).collect()),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                scalar(v).ok_or_else(|| {
                    D::Error::custom(format!("args[{i}] must be a string, number or boolean"))
                })
            })
            .collect(),
        v => scalar(&v).map(|s| vec![s]).ok_or_else(|| {
            D::Error::custom("args must be a list of strings, a string or a scalar")
        }),
    }
}

/// A signal given as a name ("SIGTERM", "HUP") or a number (15 or "15"): kept as text
/// and parsed by `driver::parse_signal`.
pub(crate) fn de_signal<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<String, D::Error> {
    use serde::de::Error as _;
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => Ok(s),
        serde_json::Value::Number(n) => Ok(n.to_string()),
        _ => Err(D::Error::custom(
            "a signal is a name such as \"SIGTERM\" or a number",
        )),
    }
}

/// [`de_signal`] for optional fields.
pub(crate) fn de_signal_opt<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<String>, D::Error> {
    de_signal(d).map(Some)
}

/// The schema of what [`de_args`] takes.
#[cfg(feature = "schema")]
fn args_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": ["array", "string", "number", "boolean", "null"],
        "items": {"type": ["string", "number", "boolean"]}
    })
}

/// The schema of what [`de_signal`] takes (a number that names no signal, such as
/// `1.5`, passes it but fails the start).
#[cfg(feature = "schema")]
fn signal_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": ["string", "integer"]
    })
}

/// One entry of `artifacts` (docs/task.md, Artifacts).
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    /// `http://`, `https://` or `file:///abs/path` (under `artifact.file_roots`); a
    /// go-getter forced prefix `http::`, `https::`, `file::` is accepted.
    pub source: String,
    /// Relative to the task dir, which it may not leave; absent: `local/`.
    #[serde(default)]
    pub destination: Option<String>,
    /// What `destination` names.
    #[serde(default)]
    pub mode: ArtifactMode,
    /// `checksum`, `archive`, `filename`; other keys join an HTTP source's query.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// HTTP request headers, not sent to another host after a redirect.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// `mode` of an artifact.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ArtifactMode {
    /// A file, or an archive unpacked, into the directory `destination`.
    #[default]
    Any,
    /// `destination` names the file.
    File,
    /// The source must be an archive, unpacked into `destination`.
    Dir,
}

/// `node` of a task: the node's fields for interpolation.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Node {
    /// `${node.unique.id}`.
    #[serde(rename = "unique.id")]
    pub unique_id: String,
    /// `${node.unique.name}`.
    #[serde(rename = "unique.name")]
    pub unique_name: String,
    /// `${node.datacenter}`.
    pub datacenter: String,
    /// `${node.class}`.
    pub class: String,
    /// `${attr.<key>}`.
    pub attr: BTreeMap<String, String>,
    /// `${meta.<key>}`.
    pub meta: BTreeMap<String, String>,
}

/// One entry of `ports`.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct Port {
    /// `NOMAD_IP_<label>`.
    #[serde(default = "default_ip")]
    pub ip: String,
    /// `NOMAD_PORT_<label>`.
    pub port: u16,
}

fn default_ip() -> String {
    "127.0.0.1".into()
}

/// `resources` of a task (exec only; raw_exec gets no limits).
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Resources {
    /// A cpu weight, not a cap (v1 `cpu.shares`, v2 `cpu.weight`).
    pub cpu_mhz: u64,
    /// Pins the first N CPUs of the parent cgroup's set; at most the host's online CPUs.
    pub cores: u64,
    /// The hard memory limit when `memory_max_mb` is 0; `NOMAD_MEMORY_LIMIT`.
    pub memory_mb: u64,
    /// The hard memory limit when > 0; at least `memory_mb`.
    pub memory_max_mb: u64,
    /// `pids.max` when > 0; at most 4194304 (the kernel's limit).
    #[cfg_attr(feature = "schema", schemars(range(max = 4194304)))]
    pub pids_max: u64,
}

impl Default for Resources {
    fn default() -> Self {
        Resources {
            cpu_mhz: 100,
            cores: 0,
            memory_mb: 300,
            memory_max_mb: 0,
            pids_max: 0,
        }
    }
}

/// `logs` of a task.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Logs {
    /// Log files of each stream kept (the newest).
    #[cfg_attr(feature = "schema", schemars(range(min = 1)))]
    pub max_files: u32,
    /// Size at which the next file is opened, in MiB.
    #[cfg_attr(feature = "schema", schemars(range(min = 1)))]
    pub max_file_size_mb: u64,
}

impl Default for Logs {
    fn default() -> Self {
        Logs {
            max_files: 10,
            max_file_size_mb: 10,
        }
    }
}

/// The longest identifier (`id`, `name`, `alloc_id`), in characters.
pub const MAX_ID_CHARS: usize = 128;
/// ... and in bytes: each becomes a file name, with room for the log suffix
/// (`<name>.stderr.<n>`) within the kernel's 255-byte limit.
pub const MAX_ID_BYTES: usize = 200;

/// Checks an identifier that becomes a part of host paths and cgroup names (docs/api.md):
/// 1–128 characters (at most 200 bytes), none of them `/`, NUL or a control character, and
/// not `.` or `..`. Anything else is `invalid_config` naming `field`: it never reaches a
/// path.
pub fn check_identifier(field: &str, v: &str) -> Result<()> {
    let why = if v.is_empty() {
        Some("must not be empty".to_string())
    } else if v.chars().count() > MAX_ID_CHARS || v.len() > MAX_ID_BYTES {
        Some(format!(
            "is too long (at most {MAX_ID_CHARS} characters and {MAX_ID_BYTES} bytes)"
        ))
    } else if v == "." || v == ".." {
        Some("must not be \".\" or \"..\"".to_string())
    } else {
        v.chars()
            .find(|c| *c == '/' || c.is_control())
            .map(|c| format!("must not contain {c:?}"))
    };
    match why {
        Some(w) => Err(Error::field(
            Code::InvalidConfig,
            field,
            format!("{field} {v:?} {w}: it names a directory and a cgroup of the task"),
        )),
        None => Ok(()),
    }
}

/// A task id made for a task that has none: `<name>-<16 hex>`, the name shortened so that
/// the id is an identifier too ([`check_identifier`]).
pub fn generated_id(name: &str, random_hex: &str) -> String {
    let room_chars = MAX_ID_CHARS - 1 - random_hex.len();
    let room_bytes = MAX_ID_BYTES - 1 - random_hex.len();
    let mut head = String::new();
    for c in name.chars().take(room_chars) {
        if head.len() + c.len_utf8() > room_bytes {
            break;
        }
        head.push(c);
    }
    format!("{head}-{random_hex}")
}

impl TaskRequest {
    /// Parses and validates a `driver_start` request.
    pub fn parse(text: &str) -> Result<TaskRequest> {
        let t: TaskRequest = parse(text, Code::InvalidConfig, "")?;
        t.validate()?;
        Ok(t)
    }

    fn validate(&self) -> Result<()> {
        let bad = |f: &str, m: &str| Err(Error::field(Code::InvalidConfig, f, m));
        check_identifier("name", &self.name)?;
        if self.name == "alloc" {
            return bad(
                "name",
                "name \"alloc\" is the alloc's shared directory; choose another task name",
            );
        }
        if self.config.command.is_empty() {
            return bad("config.command", "config.command is required");
        }
        if let Some(id) = &self.id {
            check_identifier("id", id)?;
        }
        if !self.alloc_id.is_empty() {
            check_identifier("alloc_id", &self.alloc_id)?;
        }
        if let Some(d) = &self.alloc_dir
            && (!d.starts_with('/')
                || d.contains('\0')
                || d.split('/').any(|c| c == "." || c == ".."))
        {
            return bad(
                "alloc_dir",
                "alloc_dir must be an absolute path without '.' or '..' components",
            );
        }
        validate_resources(&self.resources)?;
        if let Some(n) = &self.network_isolation {
            validate_network(n, self.driver)?;
        }
        if self.logs.max_files == 0 {
            return bad("logs.max_files", "logs.max_files must be at least 1");
        }
        if self.logs.max_file_size_mb == 0 {
            return bad(
                "logs.max_file_size_mb",
                "logs.max_file_size_mb must be at least 1",
            );
        }
        Ok(())
    }
}

/// The largest `pids.max` the kernel takes: `PID_MAX_LIMIT` of a 64-bit kernel (a
/// larger value fails with EINVAL).
pub const MAX_PIDS: u64 = 4 * 1024 * 1024;

/// `resources`: the hard memory limit at least the reservation, no more cores than the
/// host has, a `pids_max` the kernel takes.
fn validate_resources(r: &Resources) -> Result<()> {
    if r.pids_max > MAX_PIDS {
        return Err(Error::field(
            Code::InvalidConfig,
            "resources.pids_max",
            format!(
                "resources.pids_max ({}) is more than the kernel allows ({MAX_PIDS}, its most processes); 0 means no limit",
                r.pids_max
            ),
        ));
    }
    if r.memory_max_mb > 0 && r.memory_max_mb < r.memory_mb {
        return Err(Error::field(
            Code::InvalidConfig,
            "resources.memory_max_mb",
            format!(
                "resources.memory_max_mb ({}) is below resources.memory_mb ({}); it is the hard limit and must be at least the reservation",
                r.memory_max_mb, r.memory_mb
            ),
        ));
    }
    let cpus = crate::sys::online_cpus();
    if r.cores > cpus {
        return Err(Error::field(
            Code::InvalidConfig,
            "resources.cores",
            format!(
                "resources.cores ({}) is more than the {cpus} CPUs this host has",
                r.cores
            ),
        ));
    }
    Ok(())
}

/// `network_isolation`: exec only (but mode `host`); a path for mode `group`, and only
/// there.
fn validate_network(n: &NetworkIsolation, driver: DriverKind) -> Result<()> {
    let bad = |f: &str, m: &str| Err(Error::field(Code::InvalidConfig, f, m));
    if driver == DriverKind::RawExec && n.mode != NetworkMode::Host {
        return bad(
            "network_isolation.mode",
            "network_isolation applies to exec tasks only; raw_exec runs in the host's network",
        );
    }
    match (n.mode, &n.path) {
        (NetworkMode::Group, Some(p)) if p.starts_with('/') => Ok(()),
        (NetworkMode::Group, _) => bad(
            "network_isolation.path",
            "network_isolation mode \"group\" needs \"path\": the absolute path of a network namespace (e.g. /var/run/netns/<name>)",
        ),
        (_, Some(_)) => bad(
            "network_isolation.path",
            "network_isolation.path is only for mode \"group\"",
        ),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_is_named() {
        let e = TaskRequest::parse(r#"{"name":"t","config":{"comand":"x"}}"#).unwrap_err();
        assert_eq!(e.code, Code::InvalidConfig);
        assert_eq!(e.field.as_deref(), Some("config.comand"), "{e}");
    }

    #[test]
    fn wrong_type_names_path() {
        let e = TaskRequest::parse(
            r#"{"name":"t","config":{"command":"x"},"resources":{"memory_mb":"lots"}}"#,
        )
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("resources.memory_mb"), "{e}");
    }

    #[test]
    fn missing_command_is_named() {
        let e = TaskRequest::parse(r#"{"name":"t","config":{}}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("config.command"), "{e}");
        let e = TaskRequest::parse(r#"{"name":"t","config":{"command":""}}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("config.command"), "{e}");
    }

    #[test]
    fn args_forms() {
        let p = |a: &str| {
            TaskRequest::parse(&format!(
                r#"{{"name":"t","config":{{"command":"x","args":{a}}}}}"#
            ))
            .map(|t| t.config.args)
        };
        assert_eq!(p(r#"["a b", 1, true]"#).unwrap(), vec!["a b", "1", "true"]);
        assert_eq!(p(r#"" -p  80 ""#).unwrap(), vec!["-p", "80"]);
        assert_eq!(p("1").unwrap(), vec!["1"]);
        assert!(p(r#"[{"x":1}]"#).is_err());
    }

    #[test]
    fn not_json_and_not_object() {
        assert_eq!(TaskRequest::parse("{").unwrap_err().code, Code::InvalidJson);
        assert_eq!(
            TaskRequest::parse("[]").unwrap_err().code,
            Code::InvalidJson
        );
    }

    #[test]
    fn one_pass_and_two_pass_parses_agree() {
        // An array in a struct's shape is not a request (serde alone would take it).
        let arr = r#"["x", "raw_exec"]"#;
        assert_eq!(
            parse::<IdOnly>(arr, Code::InvalidRequest, "")
                .unwrap_err()
                .code,
            Code::InvalidJson
        );
        // A key given twice: the last one, as a JSON value takes it, not an error.
        let twice = r#"{"task_id": "a", "task_id": "b"}"#;
        assert_eq!(
            parse::<IdOnly>(twice, Code::InvalidRequest, "").unwrap(),
            IdOnly {
                task_id: "b".into()
            }
        );
        // Errors still name the field.
        let e = parse::<IdOnly>(r#"{"task_id": 1}"#, Code::InvalidRequest, "").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("task_id"), "{e}");
    }

    #[derive(Deserialize, Debug, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct IdOnly {
        task_id: String,
    }

    #[test]
    fn plugin_defaults() {
        let c: PluginConfig = parse("{}", Code::InvalidConfig, "").unwrap();
        assert_eq!(c.cgroup_parent, "execdriver");
        assert_eq!(c.artifact.retries, 3);
        assert_eq!(c.chroot_env.len(), 8);
        let e = parse::<PluginConfig>(r#"{"artifact":{"retry":1}}"#, Code::InvalidConfig, "")
            .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("artifact.retry"));
    }
}
