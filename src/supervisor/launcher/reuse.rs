//! Between two tasks of one supervisor ([`crate::proto::spec::LaunchSpec::again_ms`]): waiting
//! to be taken back as a spare, and, for an exec supervisor, leaving the last task's
//! namespaces.

use crate::proto::chan::Channel;
use crate::proto::{self, ToHost, ToSupervisor};

/// After a task, when the host may give us another ([`crate::proto::spec::LaunchSpec::again_ms`]):
/// says it is idle, then waits for the host to take us back as a spare
/// ([`ToSupervisor::Keep`], sent when it destroys the task). False when it does not
/// within `unclaimed_ms` (a host that does not destroy its tasks), or closes the channel:
/// we then exit.
pub(in crate::supervisor) fn claimed(chan: &mut Channel, unclaimed_ms: u64) -> bool {
    if proto::send_to_host(&chan.fd, &ToHost::Idle).is_err()
        || !chan.readable_within(unclaimed_ms as i64)
    {
        return false;
    }
    matches!(proto::read_from_host(chan), Ok(Some(ToSupervisor::Keep)))
}

/// Before an exec supervisor runs another task: new uts and (unless the task shared the
/// host's) ipc and network namespaces, for us and so for the next task's processes. The
/// task's IPC objects, host name and network set-up go with the old ones; nothing of one
/// task reaches the next.
/// (As its init we stay in the pid namespace, which after the task holds only us: its
/// processes are gone, and the next task mounts a /proc of its own.)
pub(in crate::supervisor) fn renew_namespaces(
    iso: &crate::proto::spec::Isolation,
) -> nix::Result<()> {
    let mut flags = nix::sched::CloneFlags::CLONE_NEWUTS;
    if iso.ipc_ns {
        flags |= nix::sched::CloneFlags::CLONE_NEWIPC;
    }
    if iso.new_net {
        flags |= nix::sched::CloneFlags::CLONE_NEWNET;
    }
    nix::sched::unshare(flags)?;
    // A new uts namespace starts with the old one's names, which a task with
    // CAP_SYS_ADMIN may have changed: the host's again, as we had them at our start.
    let (host, domain) = HOST_NAMES.get().ok_or(nix::errno::Errno::EINVAL)?;
    let now = nix::sys::utsname::uname()?;
    if now.nodename() != host.as_os_str() {
        nix::unistd::sethostname(host)?;
    }
    if now.domainname() != domain.as_os_str() {
        let d = domain.as_encoded_bytes();
        crate::sys::process::set_domainname(d)
            .map_err(|e| nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EINVAL)))?;
    }
    Ok(())
}

/// The host and domain names of our uts namespace at our start (the host's: a new one
/// starts with its parent's names).
static HOST_NAMES: std::sync::OnceLock<(std::ffi::OsString, std::ffi::OsString)> =
    std::sync::OnceLock::new();

/// Notes our host and domain names (at our start, the host's) for
/// [`renew_namespaces`].
pub(in crate::supervisor) fn note_host_names() {
    if let Ok(u) = nix::sys::utsname::uname() {
        let _ = HOST_NAMES.set((u.nodename().to_owned(), u.domainname().to_owned()));
    }
}
