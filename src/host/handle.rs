//! The handle `driver_start` returns and `driver_recover` accepts: one typed struct both
//! ways, authenticated with HMAC-SHA256 under a key of the data dir.
//!
//! A handle names host paths (the state dir, the task and alloc dirs, the cgroups) that
//! `driver_destroy` removes and `driver_stop` kills through, so one the host stored must
//! not become a way to have the driver touch anything else. Two checks, both before
//! anything the handle names is touched:
//! - authenticity: `mac` is HMAC-SHA256 over the handle's canonical JSON (keys sorted,
//!   `mac` left out) under `<data_dir>/handle.key`, 32 random bytes made on first use
//!   (`0600`, in the root-only data dir; a task never sees it). An altered or forged
//!   handle fails.
//! - confinement: even an authentic handle must name the state dir
//!   `<data_dir>/tasks/<task_id>`, a task dir `<alloc_dir>/<name>` with identifiers that
//!   pass [`crate::config::check_identifier`], and cgroups that are the task's leaves
//!   `<mount>/<cgroup_parent>/<task_id>` (or the shared `<mount>/<cgroup_parent>`) of this
//!   host's cgroup mounts.

use crate::cgroup::TaskCgroup;
use crate::config::{DriverKind, PluginConfig};
use crate::error::{Code, Error, Result};
use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::{Component, Path, PathBuf};

/// Format version of the handle.
pub const VERSION: u64 = 2;

/// Name of the key file in the data dir.
pub const KEY_FILE: &str = "handle.key";

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// What a host needs to find a task again after it restarted.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Handle {
    pub version: u64,
    pub task_id: String,
    pub name: String,
    pub driver: DriverKind,
    /// The supervisor's pid, and its start time (`/proc/<pid>/stat` field 22): a pid is
    /// taken for ours only with the same start time.
    pub pid: i32,
    pub start_time: Option<u64>,
    pub state_dir: PathBuf,
    pub task_dir: PathBuf,
    pub alloc_dir: PathBuf,
    pub cgroup: Option<TaskCgroup>,
    pub kill_signal: i32,
    pub kill_timeout_ms: u64,
    pub started_at: String,
    /// The start's nonce ([`crate::proto::spec::LaunchSpec::nonce`]).
    pub nonce: String,
    /// For exec, [`confinement_of`] the task's isolation as it started: `driver_exec` of
    /// a recovered task runs only under a launch spec that has the same. (Absent in the
    /// handles of earlier releases: those get the other checks only.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confinement: Option<String>,
}

/// SHA-256 (hex) of what confines an exec task: its user, groups, capabilities, seccomp,
/// namespaces and root. The authenticated handle carries it, so that a launch spec read
/// back from disk is taken only as the task started (see `crate::host::exec_into`).
pub fn confinement_of(iso: &crate::proto::spec::Isolation) -> String {
    use sha2::Digest;
    let parts = serde_json::json!([
        iso.root,
        iso.alloc,
        iso.pid_ns,
        iso.ipc_ns,
        iso.no_pivot_root,
        iso.uid,
        iso.gid,
        iso.groups,
        iso.caps,
        iso.raised,
        iso.seccomp,
        iso.netns,
        iso.new_net
    ]);
    hex::encode(sha2::Sha256::digest(parts.to_string().as_bytes()))
}

fn refused(why: impl std::fmt::Display) -> Error {
    Error::field(
        Code::InvalidRequest,
        "handle",
        format!("handle refused: {why}; nothing it names was touched"),
    )
}

impl Handle {
    /// The handle as JSON with its `mac` under `key` (see [`Key::of`]).
    pub fn signed(&self, key: &Key) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        let mac = mac_of(&key.0, &v);
        v["mac"] = Value::String(hex::encode(mac));
        v
    }

    /// Checks `v` (a handle from [`Handle::signed`]) and returns it typed: it must carry a
    /// valid `mac` under the key of `cfg`'s data dir, and name only what is the task's.
    pub fn verify(v: &Value, cfg: &PluginConfig) -> Result<Handle> {
        let version = v.get("version").and_then(Value::as_u64);
        if version != Some(VERSION) {
            return Err(Error::field(
                Code::InvalidRequest,
                "handle.version",
                format!(
                    "handle format {version:?} is not supported by this library (it reads version {VERSION})"
                ),
            ));
        }
        let Some(Value::String(mac_hex)) = v.get("mac") else {
            return Err(refused("it carries no \"mac\""));
        };
        let mac = hex::decode(mac_hex).map_err(|_| refused("its \"mac\" is not hex"))?;
        let data_dir = crate::host::plugin::data_dir(cfg);
        let key = read_key(&data_dir).map_err(|e| {
            refused(format_args!(
                "no handle key {} to check it with ({e})",
                data_dir.join(KEY_FILE).display()
            ))
        })?;
        let mut body = v.clone();
        if let Some(o) = body.as_object_mut() {
            o.remove("mac");
        }
        let mut m = HmacSha256::new_from_slice(&key).map_err(|e| Error::internal(e.to_string()))?;
        m.update(canonical(&body).as_bytes());
        m.verify_slice(&mac)
            .map_err(|_| refused("it was not made by this driver or was altered"))?;
        let h: Handle = crate::config::parse_value(body, Code::InvalidRequest, "handle")?;
        h.check_confined(&data_dir, cfg)?;
        Ok(h)
    }

    /// The paths of an authentic handle are still checked to be the task's own.
    fn check_confined(&self, data_dir: &Path, cfg: &PluginConfig) -> Result<()> {
        crate::config::check_identifier("handle.task_id", &self.task_id)?;
        crate::config::check_identifier("handle.name", &self.name)?;
        if self.state_dir != data_dir.join("tasks").join(&self.task_id) {
            return Err(refused(format_args!(
                "its state_dir {} is not {}",
                self.state_dir.display(),
                data_dir.join("tasks").join(&self.task_id).display()
            )));
        }
        if !plain_absolute(&self.alloc_dir) || self.task_dir != self.alloc_dir.join(&self.name) {
            return Err(refused("its task_dir is not <alloc_dir>/<name>"));
        }
        if let Some(cg) = &self.cgroup {
            let layout = crate::cgroup::detect_cached()
                .map_err(|e| refused(format_args!("it names cgroups, and {}", e.message)))?;
            if !cg.confined_to(&layout, &cfg.cgroup_parent, &self.task_id) {
                return Err(refused(format_args!(
                    "its cgroups are not the task's own under cgroup_parent {:?}",
                    cfg.cgroup_parent
                )));
            }
        }
        Ok(())
    }
}

/// The handle key of a data dir.
pub struct Key(Vec<u8>);

impl Key {
    /// The key of `data_dir`, made when missing: a start gets it before it starts
    /// anything, so that its handle can always be signed.
    pub fn of(data_dir: &Path) -> Result<Key> {
        key(data_dir).map(Key).map_err(|e| {
            Error::new(
                Code::Spawn,
                format!(
                    "reading or making the handle key {}: {e}",
                    data_dir.join(KEY_FILE).display()
                ),
            )
        })
    }
}

/// An absolute path with only plain components (no `.` or `..`).
pub fn plain_absolute(p: &Path) -> bool {
    p.is_absolute()
        && p.components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
}

/// The JSON text the mac covers: serde_json's maps keep their keys sorted, so equal
/// values always give the same text.
fn canonical(v: &Value) -> String {
    v.to_string()
}

fn mac_of(key: &[u8], v: &Value) -> Vec<u8> {
    // HMAC takes a key of any length: this cannot fail.
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC accepts any key length");
    m.update(canonical(v).as_bytes());
    m.finalize().into_bytes().to_vec()
}

/// The key of `data_dir`, made (32 random bytes, `0600`, exclusively) when missing.
fn key(data_dir: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    match read_key(data_dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        r => return r,
    }
    crate::host::plugin::make_data_dir(data_dir)?;
    let path = data_dir.join(KEY_FILE);
    let tmp = data_dir.join(format!(".{KEY_FILE}.{}", crate::sys::random_hex(8)));
    let key = crate::sys::random_bytes(32)?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)?;
    f.write_all(&key)?;
    f.sync_all()?;
    drop(f);
    // Another process may have made one meanwhile: a hard link never replaces it, so
    // every process ends up with the same key.
    let linked = std::fs::hard_link(&tmp, &path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(key),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read_key(data_dir),
        Err(e) => Err(e),
    }
}

/// Which key file a cached key was read from: (st_dev, st_ino, st_ctime in ns). A file
/// made anew (the data dir wiped and keyed again) differs, even on an inode number used
/// again (its ctime is the new file's).
type KeyStamp = (u64, u64, i128);

fn key_stamp(m: &std::fs::Metadata) -> KeyStamp {
    use std::os::unix::fs::MetadataExt;
    (
        m.dev(),
        m.ino(),
        m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128,
    )
}

/// Reads the key of `data_dir`, cached per path while its file is the same one (one
/// `lstat` per call): a key never changes, but the file may be made anew.
fn read_key(data_dir: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    static CACHE: std::sync::Mutex<Vec<(PathBuf, KeyStamp, Vec<u8>)>> =
        std::sync::Mutex::new(Vec::new());
    let path = data_dir.join(KEY_FILE);
    let stamp = key_stamp(&std::fs::symlink_metadata(&path)?);
    let mut g = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, _, k)) = g.iter().find(|(d, st, _)| d == data_dir && *st == stamp) {
        return Ok(k.clone());
    }
    g.retain(|(d, _, _)| d != data_dir);
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)?;
    let meta = f.metadata()?;
    if !meta.is_file() || meta.mode() & 0o077 != 0 || meta.uid() != crate::sys::euid() {
        return Err(std::io::Error::other(
            "the key file must be a regular file of ours, mode 0600",
        ));
    }
    let mut key = Vec::new();
    f.read_to_end(&mut key)?;
    if key.len() != 32 {
        return Err(std::io::Error::other("the key file does not hold 32 bytes"));
    }
    g.push((data_dir.to_path_buf(), key_stamp(&meta), key.clone()));
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(data: &Path) -> Handle {
        Handle {
            version: VERSION,
            task_id: "t1".into(),
            name: "web".into(),
            driver: DriverKind::RawExec,
            pid: 42,
            start_time: Some(7),
            state_dir: data.join("tasks/t1"),
            task_dir: "/allocs/a/web".into(),
            alloc_dir: "/allocs/a".into(),
            cgroup: None,
            kill_signal: 2,
            kill_timeout_ms: 5000,
            started_at: "2026-01-01T00:00:00.000000000Z".into(),
            nonce: "n".into(),
            confinement: None,
        }
    }

    fn cfg(data: &Path) -> PluginConfig {
        PluginConfig {
            data_dir: Some(data.to_string_lossy().into_owned()),
            ..Default::default()
        }
    }

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "execdriver-handle-{tag}-{}-{}",
            std::process::id(),
            crate::sys::random_hex(4)
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_signed_handle_verifies_and_any_change_is_refused() {
        let data = tmp("sign");
        let h = sample(&data);
        let v = h.signed(&Key::of(&data).unwrap());
        assert_eq!(Handle::verify(&v, &cfg(&data)).unwrap(), h);
        let key = std::fs::metadata(data.join(KEY_FILE)).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(key.permissions().mode() & 0o777, 0o600);
        // Any field changed, added or removed: refused.
        for (k, val) in [
            ("state_dir", Value::from("/etc")),
            ("pid", Value::from(1)),
            ("kill_timeout_ms", Value::from(u64::MAX)),
            ("extra", Value::from(1)),
        ] {
            let mut bad = v.clone();
            bad[k] = val;
            let e = Handle::verify(&bad, &cfg(&data)).unwrap_err();
            assert_eq!(e.field.as_deref(), Some("handle"), "{k}: {e}");
        }
        let mut bad = v.clone();
        bad.as_object_mut().unwrap().remove("mac");
        assert!(Handle::verify(&bad, &cfg(&data)).is_err());
        // Under another data dir (another key), refused.
        let other = tmp("other");
        sample(&other).signed(&Key::of(&other).unwrap());
        assert!(Handle::verify(&v, &cfg(&other)).is_err());
        std::fs::remove_dir_all(&data).unwrap();
        std::fs::remove_dir_all(&other).unwrap();
    }

    /// The data dir wiped and keyed again while this process runs: the new key is read
    /// (a handle signed under the old one is refused), though the old one was cached.
    #[test]
    fn a_key_made_anew_is_read_anew() {
        let data = tmp("rekey");
        let h = sample(&data);
        let old = h.signed(&Key::of(&data).unwrap());
        Handle::verify(&old, &cfg(&data)).unwrap();
        std::fs::remove_dir_all(&data).unwrap();
        let key = Key::of(&data).unwrap();
        assert!(
            Handle::verify(&old, &cfg(&data)).is_err(),
            "the old key was used"
        );
        Handle::verify(&h.signed(&key), &cfg(&data)).unwrap();
        std::fs::remove_dir_all(&data).unwrap();
    }

    #[test]
    fn an_authentic_handle_must_still_name_only_the_tasks_own_paths() {
        let data = tmp("confined");
        let key = Key::of(&data).unwrap();
        let check = |h: Handle| Handle::verify(&h.signed(&key), &cfg(&data));
        let mut h = sample(&data);
        h.state_dir = data.join("tasks");
        assert!(check(h).is_err(), "state dir not the task's");
        let mut h = sample(&data);
        h.task_id = "..".into();
        h.state_dir = data.join("tasks/..");
        assert!(check(h).is_err(), "an id that is not an identifier");
        let mut h = sample(&data);
        h.task_dir = "/etc".into();
        assert!(check(h).is_err(), "task dir not <alloc_dir>/<name>");
        let mut h = sample(&data);
        h.alloc_dir = "/allocs/../etc".into();
        h.task_dir = "/allocs/../etc/web".into();
        assert!(check(h).is_err(), "'..' in the alloc dir");
        std::fs::remove_dir_all(&data).unwrap();
    }
}
