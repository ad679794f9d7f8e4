//! The pool of supervisors, on the host's side: the one place there that knows about
//! prestarted supervisors. A start [`acquire`]s a [`Lease`] on a supervisor: an idle spare
//! of its kind (started ahead, or taken back after a task: `release`), else one
//! launched now, which loads while the host prepares the task (clone+exec, see
//! [`crate::sys::spawn_with`]). Through the lease the start hands it the spec and the go
//! over the channel ([`crate::proto::chan`]) and reads its start report. Spares are made
//! by a fork server (one idle shim that clones itself) and kept per kind (namespace
//! flags); a supervisor launched for a start owns the cgroups the host makes for it.

use crate::config::PluginConfig;
use crate::error::{Code, Error, Result};
use crate::proto::chan::{Channel, Incoming};
use crate::proto::{self, ToHost, ToSupervisor};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

/// The start of the names of the placeholder cgroups a prestarted exec supervisor makes
/// for its next task (no task id has it: the sweep at `driver_configure` may remove old
/// empty ones, [`crate::host::sweep`]).
pub const PLACEHOLDER_PREFIX: &str = "spare-";

pub struct Started {
    /// What it takes to keep the supervisor after its task (`release`).
    pub reusable: Option<Reusable>,
    pub pid: i32,
    /// The supervisor's start time as it read it itself (`/proc/<pid>/stat` field 22).
    pub start_time: Option<u64>,
    pub pidfd: OwnedFd,
    pub started_at: String,
    /// The channel, kept for the exit report.
    pub chan: Channel,
    /// The task's cgroups when the supervisor made them (see [`Lease::cgroups`]).
    pub cgroup: Option<crate::cgroup::TaskCgroup>,
}

/// What it takes to make a supervisor a spare again after its task
/// ([`crate::proto::spec::LaunchSpec::again_ms`], `release`).
pub struct Reusable {
    /// The configuration it was started for: after a `driver_configure` it is not reused.
    cfg: std::sync::Arc<PluginConfig>,
    shim: std::path::PathBuf,
    ns_flags: libc::c_int,
    staging: Option<crate::proto::spec::Staging>,
}

/// A supervisor started ahead of its launch spec: it loads while the host prepares the
/// task (directories, cgroup, artifacts). Dropped without [`Lease::go`], it closes
/// the channel, the supervisor sees EOF and exits having done nothing, and is reaped.
pub struct Lease {
    pid: i32,
    pidfd: Option<OwnedFd>,
    chan: Option<OwnedFd>,
    shim: std::path::PathBuf,
    /// A spare exec supervisor, preparing what [`crate::proto::spec::Staging`] says.
    staging: Option<crate::proto::spec::Staging>,
    ns_flags: libc::c_int,
    /// Taken from the spares: if it is found dead without a word when handed the spec
    /// (killed while idle, just after the liveness check), a new one is launched.
    spare: bool,
    /// What [`Lease::send_spec`] sent (the line), for such a new one.
    spec: Option<Vec<u8>>,
    /// The cgroups of the start (`<parent>/<task id>`): a spare makes them from the spec,
    /// and one killed before its report leaves them, which are removed then.
    task_cgroups: Option<crate::proto::spec::Owned>,
}

/// Starts the supervisor in new namespaces `ns_flags`; it waits for its launch spec
/// (preparing what `staging` says meanwhile).
pub fn launch_supervisor(
    cfg: &PluginConfig,
    ns_flags: libc::c_int,
    staging: Option<crate::proto::spec::Staging>,
    owns: Option<&crate::proto::spec::Owned>,
) -> Result<Lease> {
    let shim = crate::host::plugin::shim_path(cfg)?;
    let c = |s: &str, what: &str| {
        crate::sys::cstring(s, what).map_err(|e| Error::new(Code::Spawn, e.to_string()))
    };
    let path = c(&shim.to_string_lossy(), "shim_path")?;
    let mut args = vec![c("execdriver-shim", "argv")?];
    if let Some(w) = &staging {
        args.push(c("--staged", "argv")?);
        args.push(c(&serde_json::to_string(w).unwrap_or_default(), "argv")?);
    } else if let Some(o) = owns {
        args.push(c("--owns", "argv")?);
        args.push(c(&serde_json::to_string(o).unwrap_or_default(), "argv")?);
    }
    let env = crate::host::plugin::shim_env(&[])?;
    let spawn_err = |e: std::io::Error| {
        let code = if e.raw_os_error() == Some(libc::EPERM) {
            Code::Isolation
        } else {
            Code::Spawn
        };
        Error::new(
            code,
            format!("starting the supervisor {}: {e}", shim.display()),
        )
    };
    let (mine, theirs) = crate::proto::chan::socketpair().map_err(spawn_err)?;
    let (pid, pidfd) =
        crate::sys::spawn_with(&path, &args, &env, ns_flags, theirs).map_err(spawn_err)?;
    Ok(Lease {
        pid,
        pidfd: Some(pidfd),
        chan: Some(mine),
        shim,
        staging,
        ns_flags,
        spare: false,
        spec: None,
        task_cgroups: owns.cloned(),
    })
}

impl Lease {
    /// The task's cgroups as `req` asks: a spare makes them itself from the spec while the
    /// host makes the directories (returns the request for the spec); one launched for
    /// this start is still loading, so the host makes them now (returns them: the spec
    /// names them, and this supervisor owns them, see [`crate::proto::spec::Owned`]).
    pub fn cgroups(
        &self,
        req: Option<crate::proto::spec::CgroupRequest>,
        id: &str,
    ) -> Result<(
        Option<crate::proto::spec::CgroupRequest>,
        Option<crate::cgroup::TaskCgroup>,
    )> {
        match req {
            Some(r) if !self.spare => Ok((None, r.make(id)?)),
            r => Ok((r, None)),
        }
    }

    /// How long the supervisor waits, after its task, to be taken back for another
    /// ([`crate::proto::spec::LaunchSpec::again_ms`]); 0 when it is not to be.
    pub fn again_ms(&self, cfg: &std::sync::Arc<PluginConfig>) -> u64 {
        if self.reusable(cfg).is_some() {
            crate::proto::spec::idle_unclaimed_ms()
        } else {
            0
        }
    }

    /// Whether this supervisor can be a spare again after its task (see [`release`]):
    /// with `prestart_supervisor`, for raw_exec, or for exec when it is a spare that
    /// prepares its tasks' command processes (one started for a single start does not).
    fn reusable(&self, cfg: &std::sync::Arc<PluginConfig>) -> Option<Reusable> {
        (cfg.prestart_supervisor && (self.ns_flags == 0 || self.staging.is_some())).then(|| Reusable {
            cfg: cfg.clone(),
            shim: self.shim.clone(),
            ns_flags: self.ns_flags,
            staging: self.staging.clone(),
        })
    }

    /// Whether the supervisor is still there, waiting for its spec.
    fn alive(&self) -> bool {
        self.pidfd
            .as_ref()
            .is_some_and(|fd| matches!(crate::sys::poll_readable(fd.as_raw_fd(), 0), Ok(false)))
    }

    /// Hands the supervisor its launch spec ([`ToSupervisor::Spec`]): it parses it and
    /// makes the cgroups while the host goes on making the task's directories. A
    /// supervisor that went away meanwhile is seen at [`Lease::go`].
    pub fn send_spec(&mut self, spec: &crate::proto::spec::LaunchSpec) {
        if self.staging.is_some() {
            // An exec spare prepares at idle priority: out of it before the spec arrives
            // (it moves its command process out of it in turn).
            crate::sys::set_idle_priority_of(self.pid, false);
        }
        // One send: the message and the newline that ends it.
        let line = proto::line(&ToSupervisor::Spec(Box::new(spec.clone())));
        if let Some(c) = &self.chan {
            let _ = crate::proto::chan::send_all(c, &line);
        }
        self.spec = Some(line);
    }

    /// Tells the supervisor that the task's directories are ready ([`ToSupervisor::Go`])
    /// and returns once the command has exec'd (or failed to). Needs [`Lease::send_spec`]
    /// first.
    pub fn go(
        mut self,
        go: &crate::proto::spec::Go,
        wait_pipe: Option<&std::os::fd::OwnedFd>,
    ) -> Result<Started> {
        let chan = self.chan.take().expect("channel");
        let pidfd = self.pidfd.take().expect("pidfd");
        let spec = self.spec.take().unwrap_or_default();
        let mut host = Channel::new(chan);
        // A supervisor that failed has said why before it exited: read it all the same.
        let msg = ToSupervisor::Go(go.clone());
        let _ = match wait_pipe {
            Some(w) => proto::send_to_supervisor_with_fd(&host.fd, &msg, w),
            None => proto::send_to_supervisor(&host.fd, &msg),
        };
        let report = host.next(true);
        if let Ok(Incoming::Message(ToHost::Started(s))) = report {
            return Ok(Started {
                reusable: self.reusable(&crate::host::plugin::current()),
                pid: self.pid,
                start_time: s.start_time,
                pidfd,
                started_at: s.started_at,
                chan: host,
                cgroup: s.cgroup,
            });
        }
        // Failed: the supervisor exits by itself; reap it so it leaves nothing behind.
        drop(host);
        let status = crate::sys::pidfd_reap_within(&pidfd, 5000);
        self.remove_placeholder();
        if self.spare
            && let Some(c) = &self.task_cgroups
        {
            // The task's cgroups, made by a spare from the spec: none outlives a failed
            // start. A spare that reported its failure removed what it made, and one
            // killed before its report takes its command process along (it dies with its
            // supervisor): only empty cgroups are removed here. A busy `<parent>/<id>` is
            // not this start's but another host's task of that id under the same parent
            // (which is why the spare failed), and is not to be killed.
            c.remove_empty_within(std::time::Duration::from_secs(2));
        }
        let said_nothing = match report {
            Ok(Incoming::Message(ToHost::Failed(f))) => return Err(f.into()),
            Ok(Incoming::Message(_)) => false,
            // Gone without a word (EOF, or the connection reset by its death).
            _ => true,
        };
        if self.spare && said_nothing {
            // A spare that died while idle: a new supervisor takes the start.
            let cfg = crate::host::plugin::current();
            let mut fresh = launch_supervisor(&cfg, self.ns_flags, None, None)?;
            if let Some(c) = &fresh.chan {
                let _ = crate::proto::chan::send_all(c, &spec);
            }
            fresh.spec = Some(spec);
            return fresh.go(go, wait_pipe);
        }
        Err(Error::new(
            Code::Spawn,
            format!(
                "the supervisor {} exited without a report (status {status:?})",
                self.shim.display()
            ),
        ))
    }
}

impl Lease {
    /// Removes the placeholder cgroups of an exec spare that ended without a task: it
    /// removes them itself when it exits on EOF, but not when it was killed.
    fn remove_placeholder(&self) {
        if let Some(w) = &self.staging
            && let Ok(c) =
                crate::cgroup::TaskCgroup::named(&w.layout.for_exec(), &w.parent, &w.name)
        {
            let _ = c.remove();
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // Closing our end is the supervisor's cue to exit without doing anything.
        drop(self.chan.take());
        if let Some(fd) = self.pidfd.take() {
            crate::sys::pidfd_reap_within(&fd, 5000);
            self.remove_placeholder();
        }
    }
}

/// A supervisor started ahead of any task ("prestarted"), idle until the next start of
/// its kind takes it: one per kind (raw_exec, and exec per combination of pid and ipc
/// namespaces). An exec spare also prepares its command process ([`crate::proto::spec::Staging`]):
/// cgroups, mount namespace, the root's shared mounts.
struct Spare {
    shim: std::path::PathBuf,
    ns_flags: libc::c_int,
    pending: Lease,
}

static SPARES: std::sync::Mutex<Vec<Spare>> = std::sync::Mutex::new(Vec::new());

fn spares() -> std::sync::MutexGuard<'static, Vec<Spare>> {
    SPARES.lock().unwrap_or_else(|p| p.into_inner())
}

/// A lease on the supervisor for a start: the spare of this kind when there is a live
/// one of this shim (`prestart_supervisor`), else a new one.
/// `owns`: the cgroups the host will make for the start if it gets no spare (one
/// launched now owns them, see [`crate::proto::spec::Owned`]; a spare makes its own).
pub fn acquire(
    cfg: &PluginConfig,
    ns_flags: libc::c_int,
    owns: Option<&crate::proto::spec::Owned>,
) -> Result<Lease> {
    drop_dead_spares();
    if cfg.prestart_supervisor {
        let shim = crate::host::plugin::shim_path(cfg)?;
        // Taken out either way: a spare of another shim, or one killed while idle, is
        // dropped (ends on EOF, reaped) and a new supervisor is launched.
        let taken = {
            let mut g = spares();
            // raw_exec: the newest, a supervisor taken back after a task, with its pages
            // warm. exec: the oldest, whose command process has had the longest to get
            // ready (one taken back just now may still be preparing it).
            let kind = |s: &Spare| s.ns_flags == ns_flags;
            let i = if ns_flags == 0 {
                g.iter().rposition(kind)
            } else {
                g.iter().position(kind)
            };
            i.map(|i| g.remove(i))
        };
        if let Some(mut s) = taken
            && s.shim == shim
            && s.pending.alive()
        {
            s.pending.spare = true;
            s.pending.task_cgroups = owns.cloned();
            return Ok(s.pending);
        }
    }
    launch_supervisor(cfg, ns_flags, None, owns)
}

/// Drops the spares that died while idle (killed): each is reaped and its placeholder
/// cgroups go, whatever kind of start comes next.
fn drop_dead_spares() {
    let dead: Vec<Spare> = {
        let mut g = spares();
        let (dead, live) = std::mem::take(&mut *g)
            .into_iter()
            .partition(|s| !s.pending.alive());
        *g = live;
        dead
    };
    drop(dead);
}

/// What an exec spare prepares, for the configuration `cfg`: its cgroups under a
/// placeholder name (`spare-<random>`, renamed to the task's id at the start).
fn staging_for(cfg: &PluginConfig, ns_flags: libc::c_int) -> Option<crate::proto::spec::Staging> {
    Some(crate::proto::spec::Staging {
        layout: crate::cgroup::detect_cached().ok()?,
        parent: cfg.cgroup_parent.clone(),
        name: format!("{PLACEHOLDER_PREFIX}{}", crate::sys::random_hex(12)),
        mounts: crate::proto::mounts::ahead(&crate::host::prepare::root_plan(cfg)),
        freezer: ns_flags & libc::CLONE_NEWPID == 0,
        caps: crate::caps::ceiling(&cfg.allow_caps),
    })
}

/// The supervisors' fork server (`execdriver-shim`, `EXECDRIVER_SHIM_MODE=fork-server`,
/// [`crate::supervisor::launcher::fork_server`]):
/// started once, it makes each spare by cloning itself (`CLONE_PARENT`: the spare is our
/// child all the same) instead of us executing the shim again, which costs ~0.45 ms of
/// CPU per spare on these machines. Ends on EOF when dropped (`driver_configure`, host
/// exit); if it is gone or fails, spares are executed directly.
struct Mother {
    shim: std::path::PathBuf,
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    pid: i32,
    pidfd: OwnedFd,
    ctl: Option<OwnedFd>,
}

impl Drop for Mother {
    fn drop(&mut self) {
        drop(self.ctl.take());
        crate::sys::pidfd_reap_within(&self.pidfd, 5000);
    }
}

static MOTHER: std::sync::Mutex<Option<Mother>> = std::sync::Mutex::new(None);

fn mother() -> std::sync::MutexGuard<'static, Option<Mother>> {
    MOTHER.lock().unwrap_or_else(|p| p.into_inner())
}

fn start_mother(shim: &Path) -> Result<Mother> {
    let c = |s: &str| {
        crate::sys::cstring(s, "argument").map_err(|e| Error::new(Code::Spawn, e.to_string()))
    };
    let path = c(&shim.to_string_lossy())?;
    // The mode in the environment, not the arguments: the supervisors cloned from it
    // keep its command line, which is then a supervisor's.
    let args = [c("execdriver-shim")?];
    let env = crate::host::plugin::shim_env(&["EXECDRIVER_SHIM_MODE=fork-server"])?;
    let err = |e: std::io::Error| Error::new(Code::Spawn, format!("fork server: {e}"));
    let (mine, theirs) = crate::proto::chan::socketpair_of(libc::SOCK_SEQPACKET).map_err(err)?;
    let (pid, pidfd) = crate::sys::spawn_with(&path, &args, &env, 0, theirs).map_err(err)?;
    Ok(Mother {
        shim: shim.to_path_buf(),
        pid,
        pidfd,
        ctl: Some(mine),
    })
}

/// A supervisor made by the fork server, waiting for its spec like one from
/// [`launch_supervisor`]. `None` when the fork server cannot make it (the caller then
/// launches one directly).
fn launch_via_mother(
    shim: &Path,
    ns_flags: libc::c_int,
    staging: Option<crate::proto::spec::Staging>,
) -> Option<Lease> {
    let mut g = mother();
    let usable = |m: &Mother| {
        m.shim == shim && matches!(crate::sys::poll_readable(m.pidfd.as_raw_fd(), 0), Ok(false))
    };
    if !g.as_ref().is_some_and(usable) {
        *g = None;
        *g = start_mother(shim).ok();
    }
    let m = g.as_ref()?;
    let ctl = m.ctl.as_ref()?;
    let (mine, theirs) = crate::proto::chan::socketpair().ok()?;
    let msg = proto::ForkRequest {
        ns_flags,
        staging: staging.clone(),
    }
    .encode();
    let mut reply = [0u8; 8];
    // It answers at once (a clone); one that does not within 2 s is ended (stopped,
    // say), and spares are executed directly until a new one is started.
    let answered = crate::proto::chan::send_with_fd(ctl, &msg, &theirs).and_then(|()| {
        match crate::sys::poll_readable(ctl.as_raw_fd(), 2000)? {
            true => crate::proto::chan::recv_with_fd(ctl, &mut reply),
            false => Err(std::io::Error::from(std::io::ErrorKind::TimedOut)),
        }
    });
    drop(theirs);
    let pid = match answered.ok().and_then(|(n, fd)| {
        fd.is_none()
            .then(|| proto::parse_fork_reply(&reply[..n]))
            .flatten()
    }) {
        Some(pid) => pid,
        None => {
            // Gone, confused or stuck: killed and reaped now (not after the 5 s a clean
            // exit is given), and the next spare starts a new one.
            if let Some(m) = g.as_ref() {
                let _ = crate::sys::pidfd_send_signal(&m.pidfd, libc::SIGKILL);
            }
            *g = None;
            return None;
        }
    };
    if pid <= 0 {
        return None;
    }
    drop(g);
    // Our child (CLONE_PARENT): nobody else reaps it, so its pid is its own until we do.
    let pidfd = match crate::sys::pidfd_open(pid) {
        Ok(fd) => fd,
        Err(_) => {
            crate::sys::process::kill(pid, libc::SIGKILL);
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
            return None;
        }
    };
    Some(Lease {
        pid,
        pidfd: Some(pidfd),
        chan: Some(mine),
        shim: shim.to_path_buf(),
        staging,
        ns_flags,
        spare: false,
        spec: None,
        task_cgroups: None,
    })
}

/// The fork server's pid, if one runs (for tests).
#[cfg(feature = "testing")]
pub fn fork_server_pid() -> Option<i32> {
    mother().as_ref().map(|m| m.pid)
}

/// Starts the spare of this kind for the configuration in force now, unless there is
/// one already or `prestart_supervisor` is off. Failure only means the next start
/// launches its own.
fn prestart(ns_flags: libc::c_int) {
    let cfg = crate::host::plugin::current();
    if !cfg.prestart_supervisor || spares().iter().any(|s| s.ns_flags == ns_flags) {
        return;
    }
    let Ok(shim) = crate::host::plugin::shim_path(&cfg) else {
        return;
    };
    let staging = if ns_flags != 0 {
        match staging_for(&cfg, ns_flags) {
            Some(w) => Some(w),
            None => return,
        }
    } else {
        None
    };
    let pending = match launch_via_mother(&shim, ns_flags, staging.clone()) {
        Some(p) => p,
        None => match launch_supervisor(&cfg, ns_flags, staging, None) {
            Ok(p) => p,
            Err(e) => {
                crate::host::diag::diag!(
                    Warn,
                    "a supervisor could not be started ahead ({}): {}; the next start launches its own",
                    kind_name(ns_flags),
                    e.message
                );
                return;
            }
        },
    };
    // Others may have been added meanwhile (by another thread, or taken back after a
    // task).
    add_spare(&shim, ns_flags, pending);
}

fn kind_name(ns_flags: libc::c_int) -> &'static str {
    if ns_flags == 0 { "raw_exec" } else { "exec" }
}

/// Takes back a supervisor that has run a task and is idle again
/// ([`crate::proto::spec::LaunchSpec::again_ms`]): it becomes a spare of its kind (an exec one
/// prepares its next command process meanwhile), unless there are two already, or the
/// configuration changed since its task started (it then exits on EOF and is reaped).
/// Back to back, a start then finds a spare made by an earlier task and starts none: no
/// process is made or ended for the supervisor.
fn release(r: Reusable, pid: i32, pidfd: OwnedFd, chan: OwnedFd) {
    let pending = Lease {
        pid,
        pidfd: Some(pidfd),
        chan: Some(chan),
        shim: r.shim.clone(),
        staging: r.staging,
        ns_flags: r.ns_flags,
        spare: false,
        spec: None,
        task_cgroups: None,
    };
    if !std::sync::Arc::ptr_eq(&r.cfg, &crate::host::plugin::current()) {
        return;
    }
    // Told to stay (else it exits after a while, as when a task is never destroyed).
    if let Some(c) = &pending.chan
        && crate::proto::send_to_supervisor(c, &crate::proto::ToSupervisor::Keep).is_ok()
    {
        add_spare(&r.shim, r.ns_flags, pending);
    }
}

/// After a task's exit, a supervisor that may run another ([`Reusable`]): once it says
/// it has tidied up ([`ToHost::Idle`], within 5 s) and `take_pidfd` hands over its pid
/// and pidfd (the task's only hold on it), it is taken back (`release`). False when
/// not: the caller reaps it (the channel, dropped here, is its cue to exit).
pub fn release_after_exit(
    r: Reusable,
    mut chan: Channel,
    take_pidfd: impl FnOnce() -> Option<(i32, OwnedFd)>,
) -> bool {
    if chan.next_within(5000) != Some(ToHost::Idle) {
        return false;
    }
    let Some(chan) = chan.into_fd() else {
        return false;
    };
    let Some((pid, pidfd)) = take_pidfd() else {
        return false;
    };
    release(r, pid, pidfd, chan);
    true
}

/// Adds a spare unless there are two of its kind already: one started ahead plus one
/// taken back after a task are enough for back-to-back starts to need no new one. An
/// extra one ends (EOF) and is reaped.
fn add_spare(shim: &Path, ns_flags: libc::c_int, pending: Lease) {
    let max = 2;
    let _extra = {
        let mut g = spares();
        if g.iter().filter(|s| s.ns_flags == ns_flags).count() >= max {
            Some(pending)
        } else {
            g.push(Spare {
                shim: shim.to_path_buf(),
                ns_flags,
                pending,
            });
            None
        }
    };
}

/// Spares being started on background threads (see [`replenish`]).
static IN_FLIGHT: (std::sync::Mutex<usize>, std::sync::Condvar) =
    (std::sync::Mutex::new(0), std::sync::Condvar::new());

fn in_flight() -> std::sync::MutexGuard<'static, usize> {
    IN_FLIGHT.0.lock().unwrap_or_else(|p| p.into_inner())
}

/// After a start of this kind: `prestart` on a short-lived background thread, so that
/// the caller does not wait for the new supervisor's exec. A thread per start rather
/// than a persistent worker woken per start: the worker launches the spare later, which
/// back-to-back raw_exec starts pay for (docs/performance.md, what was tried).
pub fn replenish(cfg: &PluginConfig, ns_flags: libc::c_int) {
    // Most often there is one already (taken back after a task): no thread then.
    if !cfg.prestart_supervisor || spares().iter().any(|s| s.ns_flags == ns_flags) {
        return;
    }
    *in_flight() += 1;
    let done = || {
        *in_flight() -= 1;
        IN_FLIGHT.1.notify_all();
    };
    if !crate::sys::background("execdriver-spare", move || {
        prestart(ns_flags);
        done();
    }) {
        done();
    }
}

/// Returns once no spare is being started in the background (`driver_configure`, tests).
pub fn settle() {
    let mut n = in_flight();
    while *n > 0 {
        n = IN_FLIGHT.1.wait(n).unwrap_or_else(|p| p.into_inner());
    }
}

/// Ends the spare supervisors (they exit on EOF and are reaped): `driver_configure`
/// calls it, since they were started for the previous configuration.
pub fn drop_idle() {
    let all = std::mem::take(&mut *spares());
    drop(all);
    let m = mother().take();
    drop(m);
}

/// The idle spare supervisors as (namespace flags, pid) (for tests).
#[cfg(feature = "testing")]
pub fn spare_pids() -> Vec<(libc::c_int, i32)> {
    spares()
        .iter()
        .map(|s| (s.ns_flags, s.pending.pid))
        .collect()
}
