//! Process-wide plugin state: the effective configuration (`driver_configure`), where
//! data lives, and where the supervisor binary is.

use crate::config::{self, PluginConfig};
use crate::error::{Code, Error, Result};
use once_cell::sync::Lazy;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

static CONFIG: Lazy<RwLock<Arc<PluginConfig>>> =
    Lazy::new(|| RwLock::new(Arc::new(PluginConfig::default())));

/// The configuration new tasks start with.
pub fn current() -> Arc<PluginConfig> {
    CONFIG
        .read()
        .map(|c| c.clone())
        .unwrap_or_else(|p| p.into_inner().clone())
}

/// Whether `driver_configure` has checked a data dir (made it when missing): from then
/// on a start does not make one, see [`data_dir_for_start`].
static CONFIGURED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Replaces the configuration (for tasks started afterwards) and returns the effective one.
pub fn configure(request: &str) -> Result<serde_json::Value> {
    let cfg = validate(request)?;
    check_data_dir(&data_dir(&cfg))?;
    CONFIGURED.store(true, std::sync::atomic::Ordering::Relaxed);
    let log = cfg
        .log_path
        .as_deref()
        .map(crate::host::diag::open_file)
        .transpose()?;
    let cfg = Arc::new(cfg);
    *CONFIG.write().unwrap_or_else(|p| p.into_inner()) = cfg.clone();
    crate::host::diag::set_file(cfg.log_level, log);
    let v = effective_json(&cfg)?;
    crate::host::diag::diag!(
        Info,
        "configured: data_dir {}, shim {}, cgroup_parent {}, prestart_supervisor {}",
        v["data_dir"].as_str().unwrap_or("?"),
        v["shim_path"].as_str().unwrap_or("(not found)"),
        cfg.cgroup_parent,
        cfg.prestart_supervisor
    );
    Ok(v)
}

/// Parses and checks a `driver_configure` request, touching nothing (the data dir's
/// check is [`configure`]'s): the document checks alone, which the JSON Schema's
/// examples are held to (tests/schema.rs).
pub fn validate(request: &str) -> Result<PluginConfig> {
    let cfg: PluginConfig = config::parse(request, Code::InvalidConfig, "")?;
    for (i, c) in cfg.allow_caps.iter().enumerate() {
        if c != "all" && crate::caps::parse_cap(c).is_none() {
            return Err(Error::field(
                Code::InvalidConfig,
                format!("allow_caps[{i}]"),
                format!("unknown capability {c:?}"),
            ));
        }
    }
    parse_id_set(&cfg.denied_host_uids, "denied_host_uids")?;
    parse_id_set(&cfg.denied_host_gids, "denied_host_gids")?;
    for (k, v) in &cfg.chroot_env {
        if !k.starts_with('/') || !v.starts_with('/') {
            return Err(Error::field(
                Code::InvalidConfig,
                format!("chroot_env.{k}"),
                "chroot_env maps absolute host paths to absolute task paths",
            ));
        }
    }
    if let Some(p) = &cfg.data_dir
        && !p.starts_with('/')
    {
        return Err(Error::field(
            Code::InvalidConfig,
            "data_dir",
            "data_dir must be an absolute path",
        ));
    }
    crate::cgroup::validate_parent(&cfg.cgroup_parent)?;
    Ok(cfg)
}

/// The data dir must be one tasks can be recorded in: made when missing, and writable (an
/// empty file made and removed there, which needs no block of the disk: a host that
/// restarts on a full disk must configure to recover its tasks). Else `invalid_config` on
/// `data_dir`, naming the errno. A disk with no room at all (`ENOSPC`, `EDQUOT` even for
/// an empty file) is accepted with a warning: recovering needs no room, starts fail as
/// starts.
fn check_data_dir(dir: &std::path::Path) -> Result<()> {
    let bad = |e: std::io::Error| {
        Error::field(
            Code::InvalidConfig,
            "data_dir",
            format!("data_dir {} cannot hold task state: {e}", dir.display()),
        )
    };
    make_data_dir(dir).map_err(bad)?;
    let probe = dir.join(format!(".probe-{}", crate::sys::random_hex(8)));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
        }
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)) => {
            crate::host::diag::diag!(
                Warn,
                "data_dir {} is full ({e}): tasks can be recovered, not started",
                dir.display()
            );
        }
        Err(e) => return Err(bad(e)),
    }
    Ok(())
}

/// Makes the data dir when it is missing: its parents as usual, itself `0700`. It holds
/// the default alloc dirs, whose tasks' roots a task with `cap_add` such as `chown` +
/// `fowner` or `setfcap` can plant setuid or file-capability binaries in: no other host
/// user may reach them (as Docker keeps its storage root-only). Nothing needs to pass
/// through it but the driver (root): a task's root is a mount, never entered from above.
/// One that exists keeps its mode (the operator's), and the driver's own directories in
/// it are `0700` either way.
pub fn make_data_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        // 0755 whatever the umask: a missing parent made writable by others would let
        // another user swap the private dirs below it for links.
        std::fs::DirBuilder::new().recursive(true).mode(0o755).create(parent)?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// The data dir for a start: there, as `driver_configure` checked it. One that has gone
/// since fails the start (`spawn`, naming the path and the errno): a new one made in its
/// place would get a new handle key, against which no earlier task's handle verifies.
/// Without a `driver_configure` the default one is made at the first start.
pub fn data_dir_for_start(cfg: &PluginConfig) -> Result<PathBuf> {
    let dir = data_dir(cfg);
    let fail = |e: &dyn std::fmt::Display| {
        Error::new(
            Code::Spawn,
            format!("data_dir {} cannot hold task state: {e}", dir.display()),
        )
    };
    match std::fs::metadata(&dir) {
        Ok(m) if m.is_dir() => Ok(dir),
        Ok(_) => Err(fail(&"not a directory")),
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                && !CONFIGURED.load(std::sync::atomic::Ordering::Relaxed) =>
        {
            make_data_dir(&dir).map_err(|e| fail(&e))?;
            Ok(dir)
        }
        Err(e) => Err(fail(&e)),
    }
}

/// The configuration as JSON with defaults filled in (data_dir and shim_path resolved).
pub fn effective_json(cfg: &PluginConfig) -> Result<serde_json::Value> {
    let mut v = serde_json::to_value(cfg).map_err(|e| Error::internal(e.to_string()))?;
    v["data_dir"] = serde_json::json!(data_dir(cfg).to_string_lossy());
    v["shim_path"] = serde_json::json!(
        shim_path(cfg)
            .map(|p| p.to_string_lossy().into_owned())
            .ok()
    );
    Ok(v)
}

/// Parses "0,10-20" into ranges; errors name the field.
pub fn parse_id_set(s: &str, field: &str) -> Result<Vec<(u32, u32)>> {
    let mut out = vec![];
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || {
            Error::field(
                Code::InvalidConfig,
                field,
                format!("{field}: {part:?} is not a uid/gid or a range a-b"),
            )
        };
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (
                a.trim().parse().map_err(|_| bad())?,
                b.trim().parse().map_err(|_| bad())?,
            ),
            None => {
                let n = part.parse().map_err(|_| bad())?;
                (n, n)
            }
        };
        if a > b {
            return Err(bad());
        }
        out.push((a, b));
    }
    Ok(out)
}

/// `data_dir`: configured, else `$EXECDRIVER_DATA_DIR`, else `/var/lib/execdriver` as
/// root, else a per-user directory.
pub fn data_dir(cfg: &PluginConfig) -> PathBuf {
    if let Some(d) = &cfg.data_dir {
        return d.into();
    }
    if let Some(d) = std::env::var_os("EXECDRIVER_DATA_DIR").filter(|d| !d.is_empty()) {
        return d.into();
    }
    let uid = crate::sys::euid();
    if uid == 0 {
        return "/var/lib/execdriver".into();
    }
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d).join("execdriver"),
        None => std::env::temp_dir().join(format!("execdriver-{uid}")),
    }
}

/// `shim_path`: configured, else `$EXECDRIVER_SHIM`, else `execdriver-shim` next to the
/// loaded library (`cargo build`'s `target/<profile>/`, the wheel's package directory),
/// else where `install.sh` puts it (`<libdir>/../libexec/execdriver/`). The library's path
/// is its real one (symlinks resolved), so a `libexecdriver.so` link elsewhere does not
/// move the search.
pub fn shim_path(cfg: &PluginConfig) -> Result<PathBuf> {
    if let Some(p) = &cfg.shim_path {
        return Ok(p.into());
    }
    if let Some(p) = std::env::var_os("EXECDRIVER_SHIM").filter(|d| !d.is_empty()) {
        return Ok(p.into());
    }
    let mut candidates = vec![];
    if let Some(lib) = loaded_object_path()
        && let Some(dir) = lib.parent()
    {
        candidates.push(dir.join("execdriver-shim"));
        if let Some(up) = dir.parent() {
            candidates.push(up.join("libexec/execdriver/execdriver-shim"));
        }
    }
    candidates.into_iter().find(|p| p.is_file()).ok_or_else(|| {
        Error::new(
            Code::Unsupported,
            "execdriver-shim not found next to the library nor in <libdir>/../libexec/execdriver/; set shim_path or $EXECDRIVER_SHIM",
        )
    })
}

/// Path of the object (shared library or executable) this code is loaded from: it does
/// not change while we are loaded, so it is looked up once.
fn loaded_object_path() -> Option<PathBuf> {
    static PATH: once_cell::sync::OnceCell<Option<PathBuf>> = once_cell::sync::OnceCell::new();
    PATH.get_or_init(|| crate::sys::object_path_of(loaded_object_path as *const () as usize))
        .clone()
}

/// The environment of the shim: a plain `PATH` and `extra`, never the host's own; and the
/// test hook [`crate::proto::TEST_ENOSYS`] when the host has it.
pub fn shim_env(extra: &[&str]) -> Result<Vec<std::ffi::CString>> {
    let mut env =
        vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string()];
    env.extend(extra.iter().map(|e| e.to_string()));
    if let Ok(v) = std::env::var(crate::proto::TEST_ENOSYS) {
        env.push(format!("{}={v}", crate::proto::TEST_ENOSYS));
    }
    env.iter()
        .map(|e| {
            crate::sys::cstring(e, "environment")
                .map_err(|e| Error::new(Code::Spawn, e.to_string()))
        })
        .collect()
}
