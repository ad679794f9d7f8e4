//! User, groups, capabilities and the command's stdio and signal state.

use crate::error::{Code, Error, Result};
use crate::proto::spec::Isolation;
use std::os::fd::RawFd;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAP_V3: u32 = 0x2008_0522;

fn prctl(op: libc::c_int, a: libc::c_ulong, b: libc::c_ulong) -> std::io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    let r = unsafe { libc::prctl(op, a, b, 0 as libc::c_ulong, 0 as libc::c_ulong) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn capset(mask: u64) -> std::io::Result<()> {
    let hdr = CapHeader {
        version: CAP_V3,
        pid: 0,
    };
    let lo = mask as u32;
    let hi = (mask >> 32) as u32;
    let data = [
        CapData {
            effective: lo,
            permitted: lo,
            inheritable: lo,
        },
        CapData {
            effective: hi,
            permitted: hi,
            inheritable: hi,
        },
    ];
    // SAFETY: header and a two-element data array as capset(2) v3 requires, both alive
    // across the call.
    let r = unsafe { libc::syscall(libc::SYS_capset, &hdr as *const CapHeader, data.as_ptr()) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The highest capability number this kernel has, read once per process: the supervisor
/// reads it while it waits for its spec ([`prime`]), so that the command process, after
/// entering its root, does not read it from its fresh /proc (~35 µs there).
fn last_cap() -> u32 {
    crate::caps::last_cap()
}

/// Prepares ahead what the command process needs at the start: the capability count
/// (see [`last_cap`]) and the seccomp filter, compiled.
pub fn prime() {
    last_cap();
    super::seccomp::prime();
}

fn err(step: &str, e: impl std::fmt::Display) -> Error {
    Error::new(Code::Isolation, format!("{step}: {e}"))
}

/// Drops to the task's user: `iso.caps` is the bounding set, `iso.raised` the
/// permitted, effective, inheritable and ambient sets (see [`Isolation::raised`]); then
/// no_new_privs, so that no setuid or file-capability binary gives back more.
///
/// `bounding`: the bounding set as it is (a standby limited it ahead, see
/// [`limit_bounding`]); only those outside the task's set are dropped here.
pub fn drop_to(iso: &Isolation, bounding: u64) -> Result<()> {
    let last = last_cap();
    let raised = iso.raised & iso.caps;
    for c in 0..=last {
        if iso.caps & (1u64 << c) == 0 && bounding & (1u64 << c) != 0 {
            prctl(libc::PR_CAPBSET_DROP, c as libc::c_ulong, 0)
                .map_err(|e| err("dropping bounding capability", e))?;
        }
    }
    let groups: Vec<nix::unistd::Gid> = iso
        .groups
        .iter()
        .map(|g| nix::unistd::Gid::from_raw(*g))
        .collect();
    nix::unistd::setgroups(&groups).map_err(|e| err("setgroups", e))?;
    let gid = nix::unistd::Gid::from_raw(iso.gid);
    nix::unistd::setresgid(gid, gid, gid).map_err(|e| err("setresgid", e))?;
    // Keep the permitted set across the uid change, so that `raised` can be set from it.
    prctl(libc::PR_SET_KEEPCAPS, 1, 0).map_err(|e| err("PR_SET_KEEPCAPS", e))?;
    let uid = nix::unistd::Uid::from_raw(iso.uid);
    nix::unistd::setresuid(uid, uid, uid).map_err(|e| err("setresuid", e))?;
    prctl(libc::PR_SET_KEEPCAPS, 0, 0).map_err(|e| err("PR_SET_KEEPCAPS", e))?;
    capset(raised).map_err(|e| err("capset", e))?;
    prctl(
        libc::PR_CAP_AMBIENT,
        libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
        0,
    )
    .map_err(|e| err("clearing ambient capabilities", e))?;
    for c in 0..=last {
        if raised & (1u64 << c) != 0 {
            prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                c as libc::c_ulong,
            )
            .map_err(|e| err("raising ambient capability", e))?;
        }
    }
    prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0).map_err(|e| err("no_new_privs", e))?;
    Ok(())
}

/// Drops from the bounding set every capability outside `keep`, ahead of a task (a
/// standby: `keep` is the plugin's `allow_caps`, which holds every task's set). Our
/// effective and permitted sets stay as they are.
pub fn limit_bounding(keep: u64) -> Result<()> {
    for c in 0..=last_cap() {
        if keep & (1u64 << c) == 0 {
            prctl(libc::PR_CAPBSET_DROP, c as libc::c_ulong, 0)
                .map_err(|e| err("dropping bounding capability", e))?;
        }
    }
    Ok(())
}

/// stdin from /dev/null, stdout/stderr onto the log pipes; every other fd is marked
/// close-on-exec so only 0-2 reach the command.
pub fn redirect_stdio(stdout: RawFd, stderr: RawFd) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let null = std::fs::OpenOptions::new().read(true).open("/dev/null")?;
    for (from, to) in [(null.as_raw_fd(), 0), (stdout, 1), (stderr, 2)] {
        // SAFETY: dup2 on fds we own; the targets 0-2 are replaced.
        if unsafe { libc::dup2(from, to) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags on our own fds.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// An empty signal mask, as a freshly started program expects. (Dispositions are already
/// the defaults: the supervisor reset the ignored ones it inherited, has no handlers, and
/// exec resets handled ones.)
pub fn reset_signals() {
    // SAFETY: an empty set, then set as the mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}
