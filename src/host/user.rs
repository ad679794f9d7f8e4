//! The task's user, resolved on the host through NSS (the task's `user`, or the host's own
//! user for raw_exec run by a non-root host), with a short cache: a start must not pay an
//! NSS lookup each time while the files it reads are unchanged.

use crate::config::PluginConfig;
use crate::error::{Code, Error, Result};

/// The task's user, resolved on the host.
#[derive(Clone)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub home: String,
}

/// Resolves `name`: unknown → `user_not_found`; a uid or gid the plugin denies is a
/// policy refusal of the task's `user` → `invalid_config` naming `user`.
pub fn resolve_user(name: &str, cfg: &PluginConfig) -> Result<User> {
    let user = lookup_user(name)?;
    let uid = user.uid;
    let denied = |set: &str, field: &str, id: u32| -> Result<bool> {
        Ok(crate::host::plugin::parse_id_set(set, field)?
            .iter()
            .any(|(a, b)| (*a..=*b).contains(&id)))
    };
    if denied(&cfg.denied_host_uids, "denied_host_uids", uid)? {
        return Err(Error::field(
            Code::InvalidConfig,
            "user",
            format!(
                "user {name:?} has uid {uid}, which the plugin's denied_host_uids refuses; run the task as another user"
            ),
        ));
    }
    for g in &user.groups {
        if denied(&cfg.denied_host_gids, "denied_host_gids", *g)? {
            return Err(Error::field(
                Code::InvalidConfig,
                "user",
                format!(
                    "user {name:?} is in group {g}, which the plugin's denied_host_gids refuses"
                ),
            ));
        }
    }
    Ok(user)
}

/// How long a user looked up through NSS is reused while `/etc/passwd`, `/etc/group` and
/// `/etc/nsswitch.conf` are unchanged. A lookup costs ~0.1 ms of every exec start here
/// (`getgrouplist` asks every NSS source, e.g. systemd's over a socket); changes in the
/// files are seen at once, changes in other sources (systemd, sssd, LDAP) within this
/// time, far below what those sources cache themselves (sssd: 90 minutes by default).
const USER_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(5);

/// The files the NSS `files` source reads, and its configuration.
const NSS_FILES: [&str; 3] = ["/etc/passwd", "/etc/group", "/etc/nsswitch.conf"];

/// Identity of `files`: (inode, size, mtime in ns) each.
fn files_stamp(files: &[&str]) -> Vec<Option<(u64, u64, i128)>> {
    use std::os::unix::fs::MetadataExt;
    files
        .iter()
        .map(|f| {
            std::fs::metadata(f).ok().map(|m| {
                (
                    m.ino(),
                    m.size(),
                    m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
                )
            })
        })
        .collect()
}

/// The user `name` with its groups, from NSS (`getpwnam`, `getgrouplist`), reused for
/// [`USER_CACHE_TTL`] while the NSS files are unchanged. Unknown users are never cached.
fn lookup_user(name: &str) -> Result<User> {
    lookup_user_stamped(name, &NSS_FILES)
}

/// Names looked up through NSS (not served from the cache), for tests.
#[cfg(test)]
static NSS_LOOKUPS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// [`lookup_user`], the cache keyed on the stamp of `files`.
fn lookup_user_stamped(name: &str, files: &[&str]) -> Result<User> {
    type Cache = std::collections::HashMap<
        String,
        (std::time::Instant, Vec<Option<(u64, u64, i128)>>, User),
    >;
    static CACHE: std::sync::Mutex<Option<Cache>> = std::sync::Mutex::new(None);
    let stamp = files_stamp(files);
    {
        let g = CACHE.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, st, u)) = g.as_ref().and_then(|c| c.get(name))
            && at.elapsed() < USER_CACHE_TTL
            && *st == stamp
        {
            return Ok(u.clone());
        }
    }
    #[cfg(test)]
    NSS_LOOKUPS.lock().unwrap().push(name.to_string());
    let u = nix::unistd::User::from_name(name)
        .map_err(|e| {
            Error::field(
                Code::UserNotFound,
                "user",
                format!("looking up user {name:?}: {e}"),
            )
        })?
        .ok_or_else(|| {
            Error::field(
                Code::UserNotFound,
                "user",
                format!("user {name:?} does not exist on this host"),
            )
        })?;
    let (uid, gid) = (u.uid.as_raw(), u.gid.as_raw());
    let cname = crate::sys::cstring(name, "user")
        .map_err(|e| Error::field(Code::InvalidConfig, "user", e.to_string()))?;
    let groups: Vec<u32> = nix::unistd::getgrouplist(&cname, u.gid)
        .map(|g| g.iter().map(|g| g.as_raw()).collect())
        .unwrap_or_else(|_| vec![gid]);
    let user = User {
        name: name.to_string(),
        uid,
        gid,
        groups,
        home: u.dir.to_string_lossy().into_owned(),
    };
    let mut g = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    let c = g.get_or_insert_with(Default::default);
    if c.len() >= 64 {
        c.clear();
    }
    c.insert(
        name.to_string(),
        (std::time::Instant::now(), stamp, user.clone()),
    );
    Ok(user)
}

/// The user this process runs as (raw_exec).
pub fn current_user() -> User {
    // Looked up once per (euid, egid, /etc/passwd mtime): raw_exec asks on every start.
    type Key = (u32, u32, Option<std::time::SystemTime>);
    static CACHE: std::sync::Mutex<Option<(Key, User)>> = std::sync::Mutex::new(None);
    let key: Key = (
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
        std::fs::metadata("/etc/passwd")
            .and_then(|m| m.modified())
            .ok(),
    );
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((k, u)) = cache.as_ref()
        && *k == key
    {
        return u.clone();
    }
    let u = lookup_current_user();
    *cache = Some((key, u.clone()));
    u
}

fn lookup_current_user() -> User {
    let uid = nix::unistd::geteuid();
    let gid = nix::unistd::getegid();
    match nix::unistd::User::from_uid(uid).ok().flatten() {
        Some(u) => User {
            name: u.name,
            uid: uid.as_raw(),
            gid: gid.as_raw(),
            groups: vec![],
            home: u.dir.to_string_lossy().into_owned(),
        },
        None => User {
            name: uid.to_string(),
            uid: uid.as_raw(),
            gid: gid.as_raw(),
            groups: vec![],
            home: "/".into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookups(name: &str) -> usize {
        NSS_LOOKUPS
            .lock()
            .unwrap()
            .iter()
            .filter(|n| *n == name)
            .count()
    }

    /// A user is looked up through NSS once, then served from the cache while the
    /// stamped files are unchanged; touching one of them makes the next start look again.
    /// (The TTL is not waited for here.) Unknown users are not cached.
    #[test]
    fn user_lookups_are_cached_while_the_nss_files_are_unchanged() {
        // A system user no other test looks up (the cache is process-wide).
        let name = "daemon";
        if nix::unistd::User::from_name(name).ok().flatten().is_none() {
            eprintln!("SKIP: no user {name} here");
            return;
        }
        let dir = std::env::temp_dir().join(format!("ed-usercache-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("passwd");
        std::fs::write(&f, "a").unwrap();
        let files = [f.to_str().unwrap()];
        let before = lookups(name);
        let a = lookup_user_stamped(name, &files).unwrap();
        let b = lookup_user_stamped(name, &files).unwrap();
        assert_eq!(
            lookups(name) - before,
            1,
            "the second lookup came from the cache"
        );
        assert_eq!(
            (a.uid, a.gid, &a.groups, &a.home),
            (b.uid, b.gid, &b.groups, &b.home)
        );
        let fresh = nix::unistd::User::from_name(name).unwrap().unwrap();
        assert_eq!(a.uid, fresh.uid.as_raw());
        // Changed (size and mtime): looked up again.
        std::fs::write(&f, "changed").unwrap();
        lookup_user_stamped(name, &files).unwrap();
        assert_eq!(lookups(name) - before, 2);
        // Unknown users fail every time, never cached.
        let nobody = "no-such-user-cache-test";
        assert!(lookup_user_stamped(nobody, &files).is_err());
        assert!(lookup_user_stamped(nobody, &files).is_err());
        assert_eq!(lookups(nobody), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
