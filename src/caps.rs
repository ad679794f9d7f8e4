//! Linux capability names and the task's capability set (SPEC §3).

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
