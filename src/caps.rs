//! Linux capability names and the task's capability set (docs/task.md "Isolation").
//!
//! The set an `exec` task runs with is `(DEFAULT_CAPS ∩ allow_caps) − cap_drop + cap_add`,
//! as Nomad's exec driver computes it; a `cap_add` outside `allow_caps` fails the start.
//! Names are case-insensitive, the `CAP_` prefix is optional, and `all` stands for every
//! capability in every list.

use crate::error::{Code, Error, Result};

/// The capabilities an `exec` task gets by default (Nomad's set), before `allow_caps`,
/// `cap_drop` and `cap_add` apply.
pub const DEFAULT_CAPS: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// Every Linux capability this crate knows, indexed by its number
/// (`<linux/capability.h>`: `CAP_CHOWN` = 0 … `CAP_CHECKPOINT_RESTORE` = 40), without the
/// `CAP_` prefix.
pub const CAPS: [&str; 41] = [
    "CHOWN",              // 0
    "DAC_OVERRIDE",       // 1
    "DAC_READ_SEARCH",    // 2
    "FOWNER",             // 3
    "FSETID",             // 4
    "KILL",               // 5
    "SETGID",             // 6
    "SETUID",             // 7
    "SETPCAP",            // 8
    "LINUX_IMMUTABLE",    // 9
    "NET_BIND_SERVICE",   // 10
    "NET_BROADCAST",      // 11
    "NET_ADMIN",          // 12
    "NET_RAW",            // 13
    "IPC_LOCK",           // 14
    "IPC_OWNER",          // 15
    "SYS_MODULE",         // 16
    "SYS_RAWIO",          // 17
    "SYS_CHROOT",         // 18
    "SYS_PTRACE",         // 19
    "SYS_PACCT",          // 20
    "SYS_ADMIN",          // 21
    "SYS_BOOT",           // 22
    "SYS_NICE",           // 23
    "SYS_RESOURCE",       // 24
    "SYS_TIME",           // 25
    "SYS_TTY_CONFIG",     // 26
    "MKNOD",              // 27
    "LEASE",              // 28
    "AUDIT_WRITE",        // 29
    "AUDIT_CONTROL",      // 30
    "SETFCAP",            // 31
    "MAC_OVERRIDE",       // 32
    "MAC_ADMIN",          // 33
    "SYSLOG",             // 34
    "WAKE_ALARM",         // 35
    "BLOCK_SUSPEND",      // 36
    "AUDIT_READ",         // 37
    "PERFMON",            // 38
    "BPF",                // 39
    "CHECKPOINT_RESTORE", // 40
];

/// The highest capability number in [`CAPS`].
pub const MAX_KNOWN_CAP: u32 = (CAPS.len() - 1) as u32;

/// The mask of every capability in [`CAPS`] (what `all` means).
pub const ALL_MASK: u64 = (1u64 << CAPS.len()) - 1;

/// The number of a capability name: case-insensitive, `CAP_` prefix optional
/// (`"chown"`, `"CAP_CHOWN"`, `"cap_Chown"` → 0). `None` for an unknown name and for `all`
/// (which only [`resolve`] understands).
pub fn parse_cap(name: &str) -> Option<u32> {
    let upper = name.to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    CAPS.iter().position(|c| *c == bare).map(|i| i as u32)
}

/// The mask of one list of names, `all` included; unknown names are an `invalid_config`
/// error on `field` naming them all.
fn mask_of(list: &[String], field: &str) -> Result<u64> {
    let mut mask = 0u64;
    let mut unknown = Vec::new();
    for name in list {
        if name.eq_ignore_ascii_case("all") {
            mask |= ALL_MASK;
        } else if let Some(n) = parse_cap(name) {
            mask |= 1 << n;
        } else {
            unknown.push(format!("{name:?}"));
        }
    }
    if unknown.is_empty() {
        Ok(mask)
    } else {
        Err(Error::field(
            Code::InvalidConfig,
            field,
            format!(
                "{field}: unknown capabilit{} {}",
                if unknown.len() == 1 { "y" } else { "ies" },
                unknown.join(", ")
            ),
        ))
    }
}

/// The mask of [`DEFAULT_CAPS`].
pub fn default_mask() -> u64 {
    DEFAULT_CAPS
        .iter()
        .filter_map(|c| parse_cap(c))
        .fold(0, |m, n| m | 1 << n)
}

/// The task's capability mask: `(DEFAULT_CAPS ∩ allow) − drop + add` (bit N = capability N).
///
/// - `allow` is the plugin's `allow_caps`; `drop`/`add` the task's `config.cap_drop` and
///   `config.cap_add`. `all` is accepted in each (`drop: ["all"]` clears the defaults).
/// - An unknown name is `invalid_config` with field `allow_caps`, `config.cap_drop` or
///   `config.cap_add`.
/// - A capability in `add` that is not in `allow` is `invalid_config` with field
///   `config.cap_add` and a message naming every such capability (the start fails).
///
/// The mask may name capabilities the running kernel lacks (above [`last_cap`]); the caller
/// applying it masks with [`supported_mask`].
pub fn resolve(allow: &[String], drop: &[String], add: &[String]) -> Result<u64> {
    let allow = mask_of(allow, "allow_caps")?;
    let drop = mask_of(drop, "config.cap_drop")?;
    let add = mask_of(add, "config.cap_add")?;
    let refused = add & !allow;
    if refused != 0 {
        let verb = if refused.count_ones() == 1 {
            "is"
        } else {
            "are"
        };
        return Err(Error::field(
            Code::InvalidConfig,
            "config.cap_add",
            format!(
                "config.cap_add: {} {verb} not in the plugin's allow_caps",
                names(refused).join(", ")
            ),
        ));
    }
    Ok((default_mask() & allow & !drop) | add)
}

/// The capabilities the command holds beyond its bounding set (permitted, effective,
/// inheritable, ambient): all of `set` for uid 0, else only those named in `add` (docs/task.md
/// "Isolation": `cap_add: ["net_bind_service"]` lets a non-root user bind port 80, and nothing
/// else). `set` is the task's set from [`resolve`].
pub fn raised(set: u64, add: &[String], uid: u32) -> Result<u64> {
    if uid == 0 {
        return Ok(set);
    }
    Ok(mask_of(add, "config.cap_add")? & set)
}

/// The capabilities any task may get under `allow` (the plugin's `allow_caps`), as far as
/// this kernel has them: every task's set is within it.
pub fn ceiling(allow: &[String]) -> u64 {
    mask_of(allow, "allow_caps").unwrap_or(u64::MAX) & supported_mask()
}

/// The names of the capabilities in `mask`, lowest number first, as `CAP_CHOWN`; bits
/// beyond the known table are named `CAP_<n>`.
pub fn names(mask: u64) -> Vec<String> {
    (0..64u32)
        .filter(|n| mask & (1u64 << n) != 0)
        .map(|n| match CAPS.get(n as usize) {
            Some(c) => format!("CAP_{c}"),
            None => format!("CAP_{n}"),
        })
        .collect()
}

/// The highest capability number of the running kernel, from
/// `/proc/sys/kernel/cap_last_cap` (read once: it is fixed for the kernel's life; a read
/// costs ~10 µs, on every start before); 40 when it cannot be read.
pub fn last_cap() -> u32 {
    static LAST: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *LAST.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .filter(|&n| n < 64)
            .unwrap_or(MAX_KNOWN_CAP)
    })
}

/// The mask of every capability the running kernel has (0..=[`last_cap`]).
pub fn supported_mask() -> u64 {
    let last = last_cap();
    if last >= 63 {
        u64::MAX
    } else {
        (1u64 << (last + 1)) - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn defaults() -> Vec<String> {
        v(DEFAULT_CAPS)
    }

    #[test]
    fn table_numbers() {
        assert_eq!(parse_cap("CHOWN"), Some(0));
        assert_eq!(parse_cap("NET_BIND_SERVICE"), Some(10));
        assert_eq!(parse_cap("SYS_ADMIN"), Some(21));
        assert_eq!(parse_cap("MKNOD"), Some(27));
        assert_eq!(parse_cap("AUDIT_WRITE"), Some(29));
        assert_eq!(parse_cap("SETFCAP"), Some(31));
        assert_eq!(parse_cap("CHECKPOINT_RESTORE"), Some(40));
        assert_eq!(ALL_MASK, (1u64 << 41) - 1);
        // Matches libc's constants where it has them.
        assert_eq!(parse_cap("SYS_CHROOT"), Some(18));
        assert_eq!(parse_cap("BPF"), Some(39));
    }

    #[test]
    fn case_and_prefix() {
        for n in [
            "chown",
            "CHOWN",
            "cap_chown",
            "CAP_CHOWN",
            "Cap_Chown",
            "cHoWn",
        ] {
            assert_eq!(parse_cap(n), Some(0), "{n}");
        }
        for n in [
            "",
            "CAP_",
            "all",
            "ALL",
            "cap_cap_chown",
            "chown ",
            "CAP_NOPE",
            "ﬁle",
        ] {
            assert_eq!(parse_cap(n), None, "{n:?}");
        }
    }

    #[test]
    fn default_set() {
        let m = resolve(&defaults(), &[], &[]).unwrap();
        assert_eq!(m, default_mask());
        assert_eq!(m.count_ones(), 13);
        let n = names(m);
        assert_eq!(n.len(), 13);
        assert!(n.contains(&"CAP_CHOWN".to_string()));
        assert!(n.contains(&"CAP_NET_BIND_SERVICE".to_string()));
        assert!(!n.contains(&"CAP_SYS_ADMIN".to_string()));
        assert!(!n.contains(&"CAP_NET_RAW".to_string()));
        // Docker's default set (CapBnd 0xa80425fb) without NET_RAW (bit 13), which Nomad
        // leaves out.
        assert_eq!(m, 0xa80425fb & !(1 << 13));
    }

    #[test]
    fn allow_limits_defaults() {
        let m = resolve(&v(&["chown", "kill"]), &[], &[]).unwrap();
        assert_eq!(names(m), vec!["CAP_CHOWN", "CAP_KILL"]);
        assert_eq!(resolve(&[], &[], &[]).unwrap(), 0);
        // allow all: the defaults, not every capability.
        assert_eq!(resolve(&v(&["all"]), &[], &[]).unwrap(), default_mask());
    }

    #[test]
    fn drop_all_add_one() {
        let m = resolve(&defaults(), &v(&["all"]), &v(&["net_bind_service"])).unwrap();
        assert_eq!(names(m), vec!["CAP_NET_BIND_SERVICE"]);
        assert_eq!(m, 1 << 10);
        let m = resolve(&defaults(), &v(&["CAP_CHOWN", "kill"]), &[]).unwrap();
        assert_eq!(m.count_ones(), 11);
        assert_eq!(m & 1, 0);
        // Drop then add of the same cap keeps it.
        let m = resolve(&defaults(), &v(&["ALL"]), &v(&["chown"])).unwrap();
        assert_eq!(m, 1);
    }

    #[test]
    fn refused_add_names_every_cap() {
        let e = resolve(&defaults(), &[], &v(&["sys_admin", "chown", "CAP_NET_RAW"])).unwrap_err();
        assert_eq!(e.code, Code::InvalidConfig);
        assert_eq!(e.field.as_deref(), Some("config.cap_add"));
        assert!(e.message.contains("CAP_SYS_ADMIN"), "{}", e.message);
        assert!(e.message.contains("CAP_NET_RAW"), "{}", e.message);
        assert!(!e.message.contains("CAP_CHOWN"), "{}", e.message);
        assert!(
            e.message.contains("are not in the plugin's allow_caps"),
            "{}",
            e.message
        );
        let e = resolve(&defaults(), &[], &v(&["sys_admin"])).unwrap_err();
        assert!(
            e.message
                .ends_with("CAP_SYS_ADMIN is not in the plugin's allow_caps"),
            "{}",
            e.message
        );
        // add all with the default allow list is refused; with allow all it is granted.
        assert!(resolve(&defaults(), &[], &v(&["all"])).is_err());
        assert_eq!(resolve(&v(&["all"]), &[], &v(&["all"])).unwrap(), ALL_MASK);
        // allowed adds outside the defaults work.
        let m = resolve(&v(&["all"]), &[], &v(&["sys_admin"])).unwrap();
        assert_eq!(m, default_mask() | 1 << 21);
    }

    #[test]
    fn unknown_names_are_invalid_config_naming_them() {
        let e = resolve(&defaults(), &v(&["chown", "bogus"]), &[]).unwrap_err();
        assert_eq!(e.code, Code::InvalidConfig);
        assert_eq!(e.field.as_deref(), Some("config.cap_drop"));
        assert!(e.message.contains("\"bogus\""), "{}", e.message);
        let e = resolve(&defaults(), &[], &v(&["nope", "cap_x"])).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("config.cap_add"));
        assert!(
            e.message.contains("\"nope\"") && e.message.contains("\"cap_x\""),
            "{}",
            e.message
        );
        let e = resolve(&v(&["chown", ""]), &[], &[]).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("allow_caps"));
    }

    #[test]
    fn only_added_capabilities_are_raised_for_a_non_root_user() {
        let set = resolve(&defaults(), &[], &v(&["net_bind_service"])).unwrap();
        assert_eq!(
            raised(set, &v(&["net_bind_service"]), 65534).unwrap(),
            1 << 10
        );
        assert_eq!(raised(set, &[], 65534).unwrap(), 0);
        assert_eq!(raised(set, &[], 0).unwrap(), set);
        // An add that a drop of the same name follows is still raised (adds win).
        let set = resolve(&defaults(), &v(&["all"]), &v(&["chown"])).unwrap();
        assert_eq!(raised(set, &v(&["CAP_CHOWN"]), 1000).unwrap(), 1);
    }

    #[test]
    fn names_and_last_cap() {
        assert_eq!(names(0), Vec::<String>::new());
        assert_eq!(
            names(1 | 1 << 40),
            vec!["CAP_CHOWN", "CAP_CHECKPOINT_RESTORE"]
        );
        assert_eq!(names(1 << 50), vec!["CAP_50"]);
        let last = last_cap();
        assert!((30..64).contains(&last), "{last}");
        assert_eq!(supported_mask().count_ones(), last + 1);
    }
}
