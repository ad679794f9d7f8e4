//! The driver's operations as a safe Rust API: each takes the request JSON text and
//! returns the response JSON or an [`Error`]. `ffi.rs` is a thin door onto these.

use crate::config::{self, DriverKind, NsMode, TaskRequest};
use crate::error::{Code, Error, Result};
use crate::host::prepare;
use crate::host::task::{self, State, Task};
use crate::proto::spec::{Isolation, LaunchSpec};
use serde::Deserialize;
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Parses a request that has no required fields (NULL or "{}" allowed).
fn request<T: for<'de> Deserialize<'de> + Default>(text: Option<&str>) -> Result<T> {
    match text {
        None => Ok(T::default()),
        Some(t) => config::parse(t, Code::InvalidRequest, ""),
    }
}

fn required(text: Option<&str>) -> Result<&str> {
    text.ok_or_else(|| {
        Error::new(
            Code::InvalidRequest,
            "request_json is NULL; this operation needs a JSON object",
        )
    })
}

/// `driver_configure`.
pub fn configure(req: Option<&str>) -> Result<Value> {
    match req {
        None => crate::host::plugin::effective_json(&crate::host::plugin::current()),
        Some(t) => {
            let v = crate::host::plugin::configure(t)?;
            // Spare supervisors were started for the previous configuration.
            crate::host::pool::settle();
            crate::host::pool::drop_spares();
            Ok(v)
        }
    }
}

/// `driver_fingerprint`.
pub fn fingerprint(req: Option<&str>) -> Result<Value> {
    let _: Empty = request(req)?;
    let mut attrs = serde_json::Map::new();
    attrs.insert("driver.raw_exec".into(), json!("1"));
    attrs.insert("driver.exec.version".into(), json!(VERSION));
    let (health, desc) = match exec_support() {
        Ok(cg) => {
            attrs.insert("driver.exec".into(), json!("1"));
            attrs.insert("driver.exec.cgroup".into(), json!(cg));
            if let Ok(l) = crate::cgroup::detect() {
                attrs.insert(
                    "driver.exec.cgroup.controllers".into(),
                    json!(l.controllers().join(",")),
                );
            }
            attrs.insert(
                "driver.exec.namespaces".into(),
                json!("ipc,mnt,net,pid,uts"),
            );
            ("healthy", "Healthy".to_string())
        }
        Err((h, why)) => (h, why),
    };
    Ok(json!({"health": health, "health_description": desc, "attributes": attrs}))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Empty {}

/// Whether `exec` tasks can run here: Ok(cgroup layout name) or (health, reason).
fn exec_support() -> std::result::Result<String, (&'static str, String)> {
    // The lifecycle is held by pidfds (Linux 5.3+): no pid is ever signalled bare.
    if let Err(e) = crate::sys::pidfd_open(std::process::id() as i32) {
        return Err((
            "undetected",
            format!("exec needs pidfds (Linux 5.3 or later): pidfd_open: {e}"),
        ));
    }
    if crate::sys::euid() != 0 {
        return Err((
            "undetected",
            "exec needs root; this process is not root (raw_exec is available)".into(),
        ));
    }
    for ns in ["mnt", "pid", "ipc", "uts", "net"] {
        if !Path::new(&format!("/proc/self/ns/{ns}")).exists() {
            return Err(("undetected", format!("the kernel has no {ns} namespaces")));
        }
    }
    let layout = crate::cgroup::detect()
        .map_err(|e| ("undetected", format!("no usable cgroups: {}", e.message)))?;
    layout
        .usable_under(&crate::host::plugin::current().cgroup_parent)
        .map_err(|why| ("unhealthy", format!("cgroups present but unusable: {why}")))?;
    crate::host::plugin::shim_path(&crate::host::plugin::current())
        .map_err(|e| ("unhealthy", e.message))?;
    Ok(layout.name().to_string())
}

/// [`exec_support`] remembered for a minute: starts must not probe the cgroup hierarchy
/// (mkdir/rmdir in every controller) each time; `driver_fingerprint` always re-checks.
fn exec_support_cached() -> std::result::Result<String, (&'static str, String)> {
    type Cached = Option<(
        std::time::Instant,
        std::result::Result<String, (&'static str, String)>,
    )>;
    static CACHE: std::sync::Mutex<Cached> = std::sync::Mutex::new(None);
    let mut g = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((at, r)) = g.as_ref()
        && at.elapsed() < std::time::Duration::from_secs(60)
    {
        return r.clone();
    }
    let r = exec_support();
    *g = Some((std::time::Instant::now(), r.clone()));
    r
}

/// Parses a signal given as "SIGHUP", "HUP", "hup" or a number.
pub fn parse_signal(s: &str, field: &str) -> Result<i32> {
    let t = s.trim();
    if let Ok(n) = t.parse::<i32>() {
        if (1..=64).contains(&n) {
            return Ok(n);
        }
    } else {
        let up = t.to_ascii_uppercase();
        let name = if up.starts_with("SIG") {
            up
        } else {
            format!("SIG{up}")
        };
        if let Ok(sig) = name.parse::<nix::sys::signal::Signal>() {
            return Ok(sig as i32);
        }
        if let Some(rest) = name.strip_prefix("SIGRTMIN") {
            let off: i32 = if rest.is_empty() {
                0
            } else {
                rest.trim_start_matches('+').parse().unwrap_or(-1)
            };
            let n = libc::SIGRTMIN() + off;
            if off >= 0 && n <= libc::SIGRTMAX() {
                return Ok(n);
            }
        }
    }
    Err(Error::field(
        Code::InvalidRequest,
        field,
        format!("{s:?} is not a signal name (e.g. SIGTERM, HUP) or number 1-64"),
    ))
}

/// `driver_start`.
pub fn start(req: Option<&str>) -> Result<Value> {
    let mut t = TaskRequest::parse(required(req)?)?;
    let cfg = crate::host::plugin::current();
    if t.driver == DriverKind::Exec
        && let Err((_, why)) = exec_support_cached()
    {
        return Err(Error::field(
            Code::Unsupported,
            "driver",
            format!("driver \"exec\" is not available here: {why}"),
        ));
    }
    let kill_signal = parse_signal(&t.kill_signal, "kill_signal")?;
    crate::host::env::validate_env(&t)?;
    let id =
        t.id.clone()
            .unwrap_or_else(|| config::generated_id(&t.name, &crate::sys::random_hex(8)));

    // Reserve the id before touching the disk, so a duplicate leaves nothing behind.
    let dirs = prepare::paths(&t, &id, &cfg);
    let task = Task::new(
        id.clone(),
        t.name.clone(),
        t.driver,
        dirs.task_dir.clone(),
        dirs.alloc_dir.clone(),
        dirs.state_dir.clone(),
        kill_signal,
        t.kill_timeout_ms.min(cfg.max_kill_timeout_ms),
    );
    task::insert(task.clone())?;
    let mut created = prepare::Created::default();
    match start_inner(&mut t, &id, &cfg, &task, &dirs, &mut created) {
        Ok(v) => Ok(v),
        Err(e) => {
            created.undo();
            task.set_failed();
            task::remove(&task);
            Err(e)
        }
    }
}

fn start_inner(
    t: &mut TaskRequest,
    id: &str,
    cfg: &Arc<config::PluginConfig>,
    task: &Arc<Task>,
    dirs: &prepare::Dirs,
    created: &mut prepare::Created,
) -> Result<Value> {
    let exec = t.driver == DriverKind::Exec;
    // The host's pid and ipc namespaces only where the operator allows them: there a task
    // reaches the host's processes (and other tasks') and IPC objects.
    for (asked, default, allowed, field) in [
        (
            t.config.pid_mode,
            cfg.default_pid_mode,
            cfg.allow_host_pid_mode,
            "config.pid_mode",
        ),
        (
            t.config.ipc_mode,
            cfg.default_ipc_mode,
            cfg.allow_host_ipc_mode,
            "config.ipc_mode",
        ),
    ] {
        if exec && asked == Some(NsMode::Host) && default != NsMode::Host && !allowed {
            return Err(Error::field(
                Code::InvalidConfig,
                field,
                format!(
                    "{field} \"host\" needs the plugin's allow_host_{}_mode (the task would share the host's namespace with every process of the host)",
                    if field.ends_with("pid_mode") {
                        "pid"
                    } else {
                        "ipc"
                    }
                ),
            ));
        }
    }
    let pid_ns = exec && t.config.pid_mode.unwrap_or(cfg.default_pid_mode) == NsMode::Private;
    let ipc_ns = exec && t.config.ipc_mode.unwrap_or(cfg.default_ipc_mode) == NsMode::Private;
    let mut flags = 0;
    if exec {
        flags |= libc::CLONE_NEWUTS;
        if pid_ns {
            flags |= libc::CLONE_NEWPID;
        }
        if ipc_ns {
            flags |= libc::CLONE_NEWIPC;
        }
    }
    // The seccomp filter: exec only (raw_exec has no isolation to add it to).
    let seccomp_on = match t.config.seccomp.unwrap_or_default() {
        _ if !exec => false,
        config::Seccomp::Default => true,
        // Without pivot_root, a new user namespace's CAP_SYS_CHROOT would climb out of
        // the task's root: the filter (which refuses new user namespaces) stays.
        config::Seccomp::Unconfined if cfg.no_pivot_root => {
            return Err(Error::field(
                Code::InvalidConfig,
                "config.seccomp",
                "config.seccomp \"unconfined\" is refused while the plugin's no_pivot_root is set",
            ));
        }
        config::Seccomp::Unconfined if cfg.allow_unconfined_seccomp => false,
        config::Seccomp::Unconfined => {
            return Err(Error::field(
                Code::InvalidConfig,
                "config.seccomp",
                "config.seccomp \"unconfined\" needs the plugin's allow_unconfined_seccomp",
            ));
        }
    };
    // The network: a namespace of the task's own is the supervisor's (made with it, or
    // ahead for a spare); a group's is joined by the command process.
    let mut netns = None;
    match &t.network_isolation {
        Some(n) if exec && n.mode == config::NetworkMode::None => flags |= libc::CLONE_NEWNET,
        Some(n) if exec && n.mode == config::NetworkMode::Group => {
            let path = n.path.clone().unwrap_or_default();
            crate::supervisor::net::check_netns_path(Path::new(&path), &cfg.netns_dirs).map_err(
                |e| Error::field(Code::InvalidConfig, "network_isolation.path", e.to_string()),
            )?;
            netns = Some(std::path::PathBuf::from(path));
        }
        _ => {}
    }
    // The handle's key before anything is started: the handle of a started task is
    // always signed.
    let key = crate::host::handle::Key::of(&crate::host::plugin::data_dir(cfg))?;
    // The task's cgroups (as root): for exec all of them, with the task's limits; for
    // raw_exec one to track its processes, when the host has cgroup2.
    let cgroup_request = if crate::sys::euid() != 0 {
        None
    } else if exec {
        Some(crate::proto::spec::CgroupRequest {
            layout: crate::cgroup::detect_cached()?,
            parent: cfg.cgroup_parent.clone(),
            limits: task_limits(t, pid_ns),
            tracking: false,
        })
    } else {
        crate::cgroup::detect_cached()
            .ok()
            .map(|layout| crate::proto::spec::CgroupRequest {
                layout,
                parent: cfg.cgroup_parent.clone(),
                limits: Default::default(),
                tracking: true,
            })
    };
    // A supervisor started ahead (prestarted, idle), or one that loads while we prepare
    // the task. It gets its spec at the end, or EOF when the start fails, and then exits
    // having done nothing (one launched now also removes the cgroups we make for it, should
    // we go away before the go line).
    let owns = cgroup_request.as_ref().map(|r| crate::proto::spec::Owned {
        layout: r.layout.clone(),
        parent: r.parent.clone(),
        name: id.to_string(),
    });
    let pending = crate::host::pool::supervisor_for(cfg, flags, owns.as_ref())?;
    let reusable = pending.reusable(cfg);
    let user = if exec {
        prepare::resolve_user(t.user.as_deref().unwrap_or("nobody"), cfg)?
    } else {
        prepare::current_user()
    };
    let caps = if exec {
        crate::caps::resolve(&cfg.allow_caps, &t.config.cap_drop, &t.config.cap_add)?
            & crate::caps::supported_mask()
    } else {
        0
    };
    // Without pivot_root the host's tree stays below the task's root in its mount
    // namespace, and a chroot climbs out of a chroot: the task never holds CAP_SYS_CHROOT
    // then (and may not leave the seccomp filter, see above).
    let caps = if exec && cfg.no_pivot_root {
        caps & !(1u64 << crate::caps::parse_cap("SYS_CHROOT").unwrap_or(18))
    } else {
        caps
    };
    let raised = crate::caps::raised(caps, &t.config.cap_add, user.uid)?;
    let owner = exec.then_some((user.uid, user.gid));
    // A spare supervisor makes them while we make the directories (an exec spare renames
    // those it made ahead). One launched for this start is still loading: we make them
    // now, meanwhile, and the spec names them.
    let (cgroup_request, cgroup) = match cgroup_request {
        Some(req) if !pending.is_spare() => (None, req.make(id)?),
        req => (req, None),
    };
    let mut cg_guard = CgroupGuard(cgroup.clone());

    // Environment, then interpolation of everything the task names.
    let (task_dir_v, alloc_dir_v, secrets_v) = if exec {
        (
            "/local".to_string(),
            "/alloc".to_string(),
            "/secrets".to_string(),
        )
    } else {
        let s = |p: &Path| p.to_string_lossy().into_owned();
        (
            s(&dirs.task_dir.join("local")),
            s(&dirs.alloc_dir.join("alloc")),
            s(&dirs.task_dir.join("secrets")),
        )
    };
    let passthrough = cfg
        .env_passthrough
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.clone(), v)))
        .collect();
    let env = crate::host::env::build_env(&crate::host::env::EnvInputs {
        task: t,
        task_dir: task_dir_v,
        alloc_dir: alloc_dir_v,
        secrets_dir: secrets_v,
        user: user.name.clone(),
        home: user.home.clone(),
        passthrough,
    });
    crate::host::env::check_env(&env)?;
    let env_map = env;
    let interp = |s: &str| crate::host::env::interpolate(s, &env_map, &t.node);
    let command = interp(&t.config.command);
    let args: Vec<String> = t.config.args.iter().map(|a| interp(a)).collect();
    let work_dir = interp(
        t.config
            .work_dir
            .as_deref()
            .unwrap_or(if exec { "/" } else { "" }),
    );
    let work_dir = if exec {
        if !work_dir.starts_with('/') {
            return Err(Error::field(
                Code::InvalidConfig,
                "config.work_dir",
                "work_dir must be an absolute path inside the task",
            ));
        }
        work_dir
    } else if work_dir.is_empty() {
        dirs.task_dir.to_string_lossy().into_owned()
    } else {
        work_dir
    };

    // Artifacts: every one in place before the command starts.
    let mut specs = vec![];
    if let Some(src) = &t.config.artifact_source {
        let checksum = t.config.checksum.as_deref().map(&interp);
        specs.push(crate::host::fetch::seed_spec(
            &interp(src),
            checksum.as_deref(),
        ));
    }
    for (i, a) in t.artifacts.iter().enumerate() {
        let mut a = a.clone();
        a.source = interp(&a.source);
        a.destination = a.destination.as_deref().map(&interp);
        a.options = a
            .options
            .iter()
            .map(|(k, v)| (k.clone(), interp(v)))
            .collect();
        a.headers = a
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), interp(v)))
            .collect();
        specs.push(crate::host::fetch::FetchSpec {
            artifact: a,
            executable: false,
            field: format!("artifacts[{i}]"),
        });
    }
    // The spec goes to the supervisor before the directories are made, unless artifacts
    // must be fetched into them first (the command may be one).
    let spec_first = specs.is_empty();
    let (binds, links) = if exec {
        prepare::chroot_binds(cfg)
    } else {
        (vec![], vec![])
    };
    if !spec_first {
        let root = exec.then_some((&binds[..], &links[..]));
        prepare::make_dirs(dirs, owner, root, created)?;
        let progress: Vec<_> = specs
            .iter()
            .map(crate::host::fetch::ArtifactProgress::new)
            .collect();
        task.lock().artifacts = progress.clone();
        crate::host::fetch::fetch_all(&specs, &dirs.task_dir, &cfg.artifact, &progress)?;
    }

    let (exec_path, _host) = prepare::lookup_command(
        &command,
        &dirs.task_dir,
        exec.then_some((&binds[..], &links[..])),
        &work_dir,
    )?;
    let mut argv = vec![exec_path];
    argv.extend(args);

    let isolation = exec.then(|| Isolation {
        root: dirs.task_dir.clone(),
        alloc: dirs.alloc_dir.join("alloc"),
        binds,
        symlinks: links,
        pid_ns,
        ipc_ns,
        no_pivot_root: cfg.no_pivot_root,
        uid: user.uid,
        gid: user.gid,
        groups: user.groups.clone(),
        caps,
        raised,
        seccomp: seccomp_on,
        netns: netns.clone(),
        new_net: flags & libc::CLONE_NEWNET != 0,
        secrets_size: crate::proto::spec::SECRETS_SIZE,
        // Known once the directories are: in the go line.
        root_id: None,
        alloc_id: None,
    });
    let mut spec = LaunchSpec {
        task_id: id.to_string(),
        argv,
        env: env_map.clone().into_iter().collect(),
        cwd: work_dir,
        isolation,
        cgroup_procs: cgroup
            .as_ref()
            .map(|c| c.self_join_files())
            .unwrap_or_default(),
        clone_into: cgroup.as_ref().and_then(|c| c.v2_dir()),
        cgroup: cgroup.clone(),
        cgroup_request,
        log_dir: dirs.alloc_dir.join("alloc/logs"),
        log_name: t.name.clone(),
        log_max_files: t.logs.max_files,
        log_max_bytes: t.logs.max_file_size_mb.saturating_mul(1 << 20),
        state_dir: dirs.state_dir.clone(),
        recycle: if reusable.is_some() {
            crate::proto::spec::idle_unclaimed_ms()
        } else {
            0
        },
        nonce: crate::sys::random_hex(16),
    };
    let mut pending = pending;
    pending.send_spec(&spec);
    if spec_first {
        let root = spec
            .isolation
            .as_ref()
            .map(|i| (&i.binds[..], &i.symlinks[..]));
        prepare::make_dirs(dirs, owner, root, created)?;
    }
    let go = crate::proto::spec::Go {
        root_id: exec.then(|| crate::sys::file_id(&dirs.task_dir)).flatten(),
        alloc_id: exec
            .then(|| crate::sys::file_id(&dirs.alloc_dir.join("alloc")))
            .flatten(),
    };
    go.apply(&mut spec);
    test_pause_before_go();
    // Recorded before it may start: a task that cannot be (a full or read-only disk) does
    // not run, and its exit status has its room.
    let record = serde_json::to_vec(&spec).map_err(|e| Error::internal(e.to_string()))?;
    crate::proto::spec::record_start(&dirs.state_dir, &record).map_err(|e| {
        Error::new(
            Code::Spawn,
            format!("recording the task in its state dir: {e}"),
        )
    })?;
    let started = pending.go(&go)?;
    if let Some(cg) = &started.cgroup {
        // Made by the supervisor: it reports where.
        spec.cgroup = Some(cg.clone());
        spec.cgroup_procs = cg.self_join_files();
        spec.clone_into = cg.v2_dir();
    }
    // The next start of this kind takes a supervisor started now, in the background.
    crate::host::pool::prestart_in_background(cfg, flags);
    let started_at = started.started_at.clone();
    let handle = crate::host::handle::Handle {
        version: crate::host::handle::VERSION,
        task_id: id.to_string(),
        name: t.name.clone(),
        driver: t.driver,
        pid: started.pid,
        start_time: started
            .start_time
            .or_else(|| crate::sys::proc_start_time(started.pid)),
        state_dir: dirs.state_dir.clone(),
        task_dir: dirs.task_dir.clone(),
        alloc_dir: dirs.alloc_dir.clone(),
        cgroup: spec.cgroup.clone(),
        kill_signal: task.kill_signal,
        kill_timeout_ms: task.kill_timeout_ms,
        started_at: started_at.clone(),
        nonce: spec.nonce.clone(),
    }
    .signed(&key);
    let cgroup_json = spec.cgroup.clone();
    {
        let mut g = task.lock();
        g.reusable = reusable;
        g.spec = Some(spec);
    }
    // Started: disarm the guard (dropping its copy, not forgetting it, which leaked it).
    cg_guard.0 = None;
    task.set_running(
        started.pid,
        started.pidfd,
        started_at.clone(),
        handle.clone(),
        cgroup_json,
        Some(started.chan),
    );
    Ok(
        json!({"task_id": id, "pid": started.pid, "task_dir": dirs.task_dir, "started_at": started_at, "handle": handle}),
    )
}

/// The fault tests' hook: with `EXECDRIVER_TEST_PAUSE_BEFORE_GO=<file>` in the host's
/// environment, every start stops for good just before its go line (the spec sent, the
/// cgroups and directories made), after creating `<file>`, so that a test can kill the
/// host there.
fn test_pause_before_go() {
    static AT: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();
    if let Some(marker) =
        AT.get_or_init(|| std::env::var_os("EXECDRIVER_TEST_PAUSE_BEFORE_GO").map(Into::into))
    {
        let _ = std::fs::write(marker, b"");
        loop {
            std::thread::park();
        }
    }
}

/// Removes the cgroups of a start that failed, when the host made them.
struct CgroupGuard(Option<crate::cgroup::TaskCgroup>);
impl Drop for CgroupGuard {
    fn drop(&mut self) {
        if let Some(c) = &self.0 {
            let _ = c.remove();
        }
    }
}

/// The task's resources as cgroup limits: the hard memory limit is `memory_max_mb`, else
/// `memory_mb`. A task without a pid namespace of its own gets a v1 freezer cgroup.
fn task_limits(t: &TaskRequest, pid_ns: bool) -> crate::cgroup::Limits {
    let r = &t.resources;
    let mem = if r.memory_max_mb > 0 {
        r.memory_max_mb
    } else {
        r.memory_mb
    };
    crate::cgroup::Limits {
        cpu_mhz: r.cpu_mhz,
        cores: r.cores,
        memory_bytes: mem.saturating_mul(1 << 20),
        pids_max: r.pids_max,
        freezer: !pid_ns,
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct WaitReq {
    task_id: String,
    #[serde(default)]
    timeout_ms: Option<i64>,
}

/// `driver_wait`.
pub fn wait(req: Option<&str>) -> Result<Value> {
    let r: WaitReq = config::parse(required(req)?, Code::InvalidRequest, "")?;
    task::get(&r.task_id)?.wait(r.timeout_ms.unwrap_or(-1))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct StopReq {
    task_id: String,
    #[serde(default, deserialize_with = "config::de_signal_opt")]
    signal: Option<String>,
    #[serde(default)]
    timeout_ms: Option<i64>,
}

/// `driver_stop`: the signal, the grace period, then SIGKILL of every process.
pub fn stop(req: Option<&str>) -> Result<Value> {
    let r: StopReq = config::parse(required(req)?, Code::InvalidRequest, "")?;
    let t = task::get(&r.task_id)?;
    let sig = match &r.signal {
        Some(s) => parse_signal(s, "signal")?,
        None => t.kill_signal,
    };
    let grace = r
        .timeout_ms
        .map(|m| m.max(0) as u64)
        .unwrap_or(t.kill_timeout_ms)
        .min(crate::host::plugin::current().max_kill_timeout_ms);
    stop_task(&t, sig, grace)
}

fn stop_task(t: &Arc<Task>, sig: i32, grace_ms: u64) -> Result<Value> {
    if t.state() == State::Starting {
        return Err(Error::field(
            Code::TaskRunning,
            "task_id",
            format!("task {:?} is still starting (fetching artifacts)", t.id),
        ));
    }
    let pidfd = t.lock().pidfd.clone();
    let Some(pidfd) = pidfd.filter(|_| !t.supervisor_exited()) else {
        // Its supervisor may be gone without having ended the task (killed, say, by a task
        // that shares the host's pid namespace): what is left of it goes through its
        // cgroup. (After a normal exit the cgroup is already gone: nothing to do.)
        if let Some(cg) = t.lock().cgroup.clone() {
            let _ = cg.kill_all();
        }
        return Ok(t.finalize());
    };
    let _ = crate::proto::Control::Forward(sig).send(&pidfd);
    if let Ok(v) = t.wait(i64::try_from(grace_ms).unwrap_or(i64::MAX)) {
        return Ok(v);
    }
    let _ = crate::proto::Control::KillAll.send(&pidfd);
    if let Ok(v) = t.wait(10_000) {
        return Ok(v);
    }
    // The supervisor does not answer: kill it and everything of the task ourselves.
    let _ = crate::sys::pidfd_send_signal(&pidfd, libc::SIGKILL);
    if let Some(cg) = t.lock().cgroup.clone() {
        let _ = cg.kill_all();
    }
    let _ = crate::sys::poll_readable(std::os::fd::AsRawFd::as_raw_fd(&*pidfd), -1);
    Ok(t.finalize_with(Some(())))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DestroyReq {
    task_id: String,
    #[serde(default)]
    force: bool,
    #[serde(default)]
    purge: bool,
}

/// `driver_destroy`.
pub fn destroy(req: Option<&str>) -> Result<Value> {
    let r: DestroyReq = config::parse(required(req)?, Code::InvalidRequest, "")?;
    let t = task::get(&r.task_id)?;
    match t.state() {
        State::Starting => {
            return Err(Error::field(
                Code::TaskRunning,
                "task_id",
                format!("task {:?} is still starting", t.id),
            ));
        }
        State::Running if !t.supervisor_exited() => {
            if !r.force {
                return Err(Error::field(
                    Code::TaskRunning,
                    "force",
                    format!(
                        "task {:?} is running; stop it first or pass \"force\": true",
                        t.id
                    ),
                ));
            }
            stop_task(&t, libc::SIGKILL, 0)?;
        }
        _ => {
            t.finalize();
        }
    }
    // The supervisor may still be tidying up after its exit report; then it is reaped,
    // or goes back to the spares.
    t.release_supervisor();
    if t.owns_its_paths() {
        if let Some(cg) = t.lock().cgroup.clone() {
            let _ = cg.remove();
        }
        let _ = std::fs::remove_dir_all(&t.state_dir);
        let data = crate::host::plugin::data_dir(&crate::host::plugin::current());
        prepare::release_task_dir(&prepare::claim_path(&data, &t.task_dir), &t.id);
        if r.purge {
            let _ = std::fs::remove_dir_all(&t.task_dir);
        }
    }
    task::remove(&t);
    Ok(json!({"task_id": t.id, "destroyed": true}))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct IdReq {
    task_id: String,
}

/// `driver_inspect`.
pub fn inspect(req: Option<&str>) -> Result<Value> {
    let r: IdReq = config::parse(required(req)?, Code::InvalidRequest, "")?;
    let t = task::get(&r.task_id)?;
    if t.state() == State::Running && t.supervisor_exited() {
        t.finalize();
    }
    let g = t.lock();
    Ok(json!({
        "task_id": t.id, "name": t.name, "driver": t.driver.as_str(),
        "state": g.state.unwrap_or(State::Starting).as_str(), "pid": g.pid, "started_at": g.started_at,
        "exit": g.exit, "task_dir": t.task_dir, "handle": g.handle,
        "artifacts": g.artifacts.iter().map(|a| a.to_json()).collect::<Vec<_>>(),
    }))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SignalReq {
    task_id: String,
    #[serde(deserialize_with = "config::de_signal")]
    signal: String,
}

/// `driver_signal`: delivered to the task's command through its supervisor.
pub fn signal(req: Option<&str>) -> Result<Value> {
    let r: SignalReq = config::parse(required(req)?, Code::InvalidRequest, "")?;
    let sig = parse_signal(&r.signal, "signal")?;
    let t = task::get(&r.task_id)?;
    let pidfd = t.lock().pidfd.clone();
    match pidfd {
        Some(fd) if !t.supervisor_exited() => {
            crate::proto::Control::Forward(sig).send(&fd).map_err(|e| {
                Error::new(
                    Code::Internal,
                    format!("signalling the task's supervisor: {e}"),
                )
            })?;
            Ok(json!({"task_id": t.id, "signal": sig}))
        }
        _ => Err(Error::field(
            Code::TaskNotFound,
            "task_id",
            format!("task {:?} is not running", t.id),
        )),
    }
}

/// Operations whose issue has not landed yet.
pub fn not_yet(op: &str) -> Result<Value> {
    Err(Error::new(
        Code::Unsupported,
        format!("{op} is not implemented in this version of execdriver yet"),
    ))
}

/// `driver_stats`: the task's usage from its cgroups (or /proc for a raw_exec task
/// without cgroups).
pub fn stats(req: Option<&str>) -> Result<Value> {
    let r: IdReq = config::parse(required(req)?, Code::InvalidRequest, "")?;
    let t = task::get(&r.task_id)?;
    let (cgroup, pid) = {
        let g = t.lock();
        (g.cgroup.clone(), g.pid)
    };
    Ok(crate::host::stats::collect(cgroup.as_ref(), pid))
}

/// `driver_recover`.
pub fn recover(req: Option<&str>) -> Result<Value> {
    crate::host::recover::recover(required(req)?)
}

/// `driver_exec`: one command inside a running task's isolation, output captured.
pub fn exec(req: Option<&str>) -> Result<Value> {
    crate::host::exec_into::exec(required(req)?)
}
