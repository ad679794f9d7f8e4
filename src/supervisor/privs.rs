//! User, groups, capabilities and the command's stdio and signal state.

use crate::error::{Code, Error, Result};
use crate::proto::spec::Isolation;
use std::os::fd::RawFd;

use crate::sys::privs::{capset, prctl};

/// The highest capability number this kernel has, read once per process: the supervisor
/// reads it while it waits for its spec ([`prime`]), so that the command process, after
/// entering its root, does not read it from its fresh /proc (~35 µs there).
fn last_cap() -> u32 {
    crate::caps::last_cap()
}

/// Prepares ahead what the command process needs at the start: the capability count
/// (see `last_cap`) and the seccomp filter, compiled.
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
/// `bounding`: the bounding set as it is (a staged command process limited it ahead, see
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
/// staged command process: `keep` is the plugin's `allow_caps`, which holds every task's set). Our
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
    redirect_stdio_from(null.as_raw_fd(), stdout, stderr)
}

/// [`redirect_stdio`] with stdin from `stdin` (each of the three above 2).
pub fn redirect_stdio_from(stdin: RawFd, stdout: RawFd, stderr: RawFd) -> std::io::Result<()> {
    for (from, to) in [(stdin, 0), (stdout, 1), (stderr, 2)] {
        crate::sys::process::dup2(from, to)?;
    }
    crate::sys::process::mark_fds_above_2_cloexec()?;
    Ok(())
}

/// An empty signal mask, as a freshly started program expects. (Dispositions are already
/// the defaults: the supervisor reset the ignored ones it inherited, has no handlers, and
/// exec resets handled ones.)
pub fn reset_signals() {
    crate::sys::process::clear_signal_mask();
}
