//! A start's plan: everything decided about a task before anything of it is made, from
//! its request, the plugin's configuration and what was read of the host
//! ([`HostFacts`]). Pure: no file, process or cgroup is touched here, so every decision
//! (namespaces, capabilities, seccomp, the environment and interpolation, limits, paths,
//! the root's binds) is tested without root. [`super::start`] carries it out.

use crate::config::{self, DriverKind, NsMode, PluginConfig, TaskRequest};
use crate::error::{Code, Error, Result};
use crate::host::fetch::FetchSpec;
use crate::host::prepare::Dirs;
use crate::host::user::User;
use crate::proto::mounts::Step;
use crate::proto::spec::{CgroupRequest, Isolation, LaunchSpec};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// What a plan needs of the host, read before it is made.
pub struct HostFacts {
    /// The task's id (given, or generated).
    pub id: String,
    pub dirs: Dirs,
    /// The task's user (exec), or the host process's (raw_exec).
    pub user: User,
    /// The exec task's mount plan, from the `chroot_env` entries as the host has them
    /// (empty for raw_exec).
    pub mounts: Vec<Step>,
    /// The cgroup layout, when this process may make cgroups (root).
    pub layout: Option<crate::cgroup::Layout>,
    /// The host variables of `env_passthrough` that are set.
    pub passthrough: Vec<(String, String)>,
    /// The kernel's capabilities (bits 0..=cap_last_cap).
    pub supported_caps: u64,
    /// The signal number of `kill_signal`.
    pub kill_signal: i32,
}

/// What a start makes and runs.
pub struct Plan {
    pub id: String,
    pub name: String,
    pub driver: DriverKind,
    pub dirs: Dirs,
    /// The namespaces the supervisor is started in (`CLONE_NEW*`).
    pub ns_flags: libc::c_int,
    /// The owner of the task's `local` and `secrets` (exec).
    pub owner: Option<(u32, u32)>,
    pub kill_signal: i32,
    pub kill_timeout_ms: u64,
    /// The start returns a wait fd ([`crate::config::TaskRequest::wait_fd`]).
    pub wait_fd: bool,
    /// The task's cgroups to make, when any.
    pub cgroups: Option<CgroupRequest>,
    /// The command as the task names it (interpolated), looked up once its artifacts
    /// are in place.
    pub command: String,
    pub artifacts: Vec<FetchSpec>,
    /// The launch spec, but for what the start fills in (the cgroups it makes, the
    /// command's path, the root's identity).
    pub spec: LaunchSpec,
}

fn invalid(field: &str, message: impl Into<String>) -> Error {
    Error::field(Code::InvalidConfig, field, message)
}

impl Plan {
    /// The plan of `t` under `cfg`.
    pub fn new(t: &TaskRequest, cfg: &PluginConfig, facts: HostFacts) -> Result<Plan> {
        let exec = t.driver == DriverKind::Exec;
        let (pid_ns, ipc_ns) = namespaces(t, cfg)?;
        let seccomp = seccomp(t, cfg)?;
        let (ns_flags, netns) = ns_flags(t, pid_ns, ipc_ns);
        let user = &facts.user;
        let caps = caps(t, cfg, facts.supported_caps)?;
        let raised = crate::caps::raised(caps, &t.config.cap_add, user.uid)?;
        let cgroups = cgroup_request(t, cfg, facts.layout.clone(), pid_ns);
        let env = environment(t, &facts, exec);
        crate::host::env::check_env(&env)?;
        let interp = |s: &str| crate::host::env::interpolate(s, &env, &t.node);
        let command = interp(&t.config.command);
        let work_dir = work_dir(t, &facts.dirs, exec, &interp)?;
        let artifacts = artifacts(t, &interp);
        let mut argv = vec![command.clone()];
        argv.extend(t.config.args.iter().map(|a| interp(a)));
        let dirs = &facts.dirs;
        let isolation = exec.then(|| Isolation {
            root: dirs.task_dir.clone(),
            alloc: dirs.alloc_dir.join("alloc"),
            mounts: facts.mounts.clone(),
            pid_ns,
            ipc_ns,
            no_pivot_root: cfg.no_pivot_root,
            uid: user.uid,
            gid: user.gid,
            groups: user.groups.clone(),
            caps,
            raised,
            seccomp,
            netns,
            new_net: ns_flags & libc::CLONE_NEWNET != 0,
            root_id: None,
            alloc_id: None,
        });
        let spec = launch_spec(t, &facts, argv, env, work_dir, isolation);
        Ok(Plan {
            id: facts.id,
            name: t.name.clone(),
            driver: t.driver,
            ns_flags,
            owner: exec.then_some((user.uid, user.gid)),
            kill_signal: facts.kill_signal,
            kill_timeout_ms: t.kill_timeout_ms.min(cfg.max_kill_timeout_ms),
            wait_fd: t.wait_fd,
            cgroups,
            command,
            artifacts,
            spec,
            dirs: facts.dirs,
        })
    }

    /// Whether the task is isolated (`exec`).
    pub fn exec(&self) -> bool {
        self.driver == DriverKind::Exec
    }
}

/// The namespaces the supervisor is started in (`CLONE_NEW*`: exec tasks only) and the
/// network namespace of `network_isolation` mode `group` to join.
fn ns_flags(t: &TaskRequest, pid_ns: bool, ipc_ns: bool) -> (libc::c_int, Option<PathBuf>) {
    let exec = t.driver == DriverKind::Exec;
    let mut ns_flags = 0;
    if exec {
        ns_flags |= libc::CLONE_NEWUTS;
        if pid_ns {
            ns_flags |= libc::CLONE_NEWPID;
        }
        if ipc_ns {
            ns_flags |= libc::CLONE_NEWIPC;
        }
    }
    let mut netns = None;
    match &t.network_isolation {
        Some(n) if exec && n.mode == config::NetworkMode::None => ns_flags |= libc::CLONE_NEWNET,
        Some(n) if exec && n.mode == config::NetworkMode::Group => {
            netns = n.path.as_ref().map(PathBuf::from);
        }
        _ => {}
    }
    (ns_flags, netns)
}

/// The task's capabilities (exec; none for raw_exec), of those the kernel has
/// (`supported`).
fn caps(t: &TaskRequest, cfg: &PluginConfig, supported: u64) -> Result<u64> {
    let exec = t.driver == DriverKind::Exec;
    let caps = if exec {
        crate::caps::resolve(&cfg.allow_caps, &t.config.cap_drop, &t.config.cap_add)? & supported
    } else {
        0
    };
    // Without pivot_root the host's tree stays below the task's root in its mount
    // namespace, and a chroot climbs out of a chroot: the task never holds
    // CAP_SYS_CHROOT then (and may not leave the seccomp filter, see `seccomp`).
    Ok(if exec && cfg.no_pivot_root {
        caps & !(1u64 << crate::caps::parse_cap("SYS_CHROOT").unwrap_or(18))
    } else {
        caps
    })
}

/// The task's cgroups to make, where the host may (`layout`): for exec with its limits.
fn cgroup_request(
    t: &TaskRequest,
    cfg: &PluginConfig,
    layout: Option<crate::cgroup::Layout>,
    pid_ns: bool,
) -> Option<CgroupRequest> {
    let exec = t.driver == DriverKind::Exec;
    layout.map(|layout| CgroupRequest {
        layout,
        parent: cfg.cgroup_parent.clone(),
        limits: if exec {
            limits(t, pid_ns)
        } else {
            Default::default()
        },
        // raw_exec: one cgroup2 dir to track and kill its processes.
        tracking: !exec,
    })
}

/// The launch spec of the task, but for what the start fills in.
fn launch_spec(
    t: &TaskRequest,
    facts: &HostFacts,
    argv: Vec<String>,
    env: BTreeMap<String, String>,
    cwd: String,
    isolation: Option<Isolation>,
) -> LaunchSpec {
    let dirs = &facts.dirs;
    LaunchSpec {
        task_id: facts.id.clone(),
        argv,
        env: env.into_iter().collect(),
        cwd,
        isolation,
        cgroup_procs: vec![],
        clone_into: None,
        cgroup: None,
        cgroup_request: None,
        log_dir: dirs.alloc_dir.join("alloc/logs"),
        log_name: t.name.clone(),
        log_max_files: t.logs.max_files,
        log_max_bytes: t.logs.max_file_size_mb.saturating_mul(1 << 20),
        state_dir: dirs.state_dir.clone(),
        again_ms: 0,
        nonce: String::new(),
        claim: Some(dirs.claim.clone()),
    }
}

/// Whether the task gets pid and ipc namespaces of its own. The host's only where the
/// operator allows them: there a task reaches the host's processes (and other tasks')
/// and IPC objects.
fn namespaces(t: &TaskRequest, cfg: &PluginConfig) -> Result<(bool, bool)> {
    let exec = t.driver == DriverKind::Exec;
    let modes = [
        (
            t.config.pid_mode,
            cfg.default_pid_mode,
            cfg.allow_host_pid_mode,
            "pid",
        ),
        (
            t.config.ipc_mode,
            cfg.default_ipc_mode,
            cfg.allow_host_ipc_mode,
            "ipc",
        ),
    ];
    for (asked, default, allowed, which) in modes {
        if exec && asked == Some(NsMode::Host) && default != NsMode::Host && !allowed {
            let field = format!("config.{which}_mode");
            return Err(invalid(
                &field,
                format!(
                    "{field} \"host\" needs the plugin's allow_host_{which}_mode (the task would share the host's namespace with every process of the host)"
                ),
            ));
        }
    }
    let private = |asked: Option<NsMode>, default: NsMode| {
        exec && asked.unwrap_or(default) == NsMode::Private
    };
    Ok((
        private(t.config.pid_mode, cfg.default_pid_mode),
        private(t.config.ipc_mode, cfg.default_ipc_mode),
    ))
}

/// Whether the default seccomp filter is installed: exec only (raw_exec has no isolation
/// to add it to), and left out only where the operator allows it.
fn seccomp(t: &TaskRequest, cfg: &PluginConfig) -> Result<bool> {
    Ok(match t.config.seccomp.unwrap_or_default() {
        _ if t.driver != DriverKind::Exec => false,
        config::Seccomp::Default => true,
        // Without pivot_root, a new user namespace's CAP_SYS_CHROOT would climb out of
        // the task's root: the filter (which refuses new user namespaces) stays.
        config::Seccomp::Unconfined if cfg.no_pivot_root => {
            return Err(invalid(
                "config.seccomp",
                "config.seccomp \"unconfined\" is refused while the plugin's no_pivot_root is set",
            ));
        }
        config::Seccomp::Unconfined if cfg.allow_unconfined_seccomp => false,
        config::Seccomp::Unconfined => {
            return Err(invalid(
                "config.seccomp",
                "config.seccomp \"unconfined\" needs the plugin's allow_unconfined_seccomp",
            ));
        }
    })
}

/// The task's resources as cgroup limits: the hard memory limit is `memory_max_mb`, else
/// `memory_mb`. A task without a pid namespace of its own gets a v1 freezer cgroup.
fn limits(t: &TaskRequest, pid_ns: bool) -> crate::cgroup::Limits {
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

/// The task's environment: exec tasks see their dirs as `/local`, `/alloc`, `/secrets`;
/// raw_exec tasks the host paths.
fn environment(t: &TaskRequest, facts: &HostFacts, exec: bool) -> BTreeMap<String, String> {
    let dirs = &facts.dirs;
    let s = |p: PathBuf| p.to_string_lossy().into_owned();
    let (task_dir, alloc_dir, secrets_dir) = if exec {
        ("/local".into(), "/alloc".into(), "/secrets".into())
    } else {
        (
            s(dirs.task_dir.join("local")),
            s(dirs.alloc_dir.join("alloc")),
            s(dirs.task_dir.join("secrets")),
        )
    };
    crate::host::env::build_env(&crate::host::env::EnvInputs {
        task: t,
        task_dir,
        alloc_dir,
        secrets_dir,
        user: facts.user.name.clone(),
        home: facts.user.home.clone(),
        passthrough: facts.passthrough.clone(),
    })
}

/// The command's working directory: absolute inside an exec task's root (default `/`);
/// for raw_exec as given, default the task dir.
fn work_dir(
    t: &TaskRequest,
    dirs: &Dirs,
    exec: bool,
    interp: &dyn Fn(&str) -> String,
) -> Result<String> {
    let default = if exec { "/" } else { "" };
    let w = interp(t.config.work_dir.as_deref().unwrap_or(default));
    if exec && !w.starts_with('/') {
        return Err(invalid(
            "config.work_dir",
            "work_dir must be an absolute path inside the task",
        ));
    }
    Ok(if w.is_empty() {
        dirs.task_dir.to_string_lossy().into_owned()
    } else {
        w
    })
}

/// The artifacts to fetch, every field interpolated: the seed's `artifact_source`, then
/// `artifacts`.
fn artifacts(t: &TaskRequest, interp: &dyn Fn(&str) -> String) -> Vec<FetchSpec> {
    let mut specs = vec![];
    if let Some(src) = &t.config.artifact_source {
        let checksum = t.config.checksum.as_deref().map(interp);
        specs.push(crate::host::fetch::seed_spec(
            &interp(src),
            checksum.as_deref(),
        ));
    }
    for (i, a) in t.artifacts.iter().enumerate() {
        let mut a = a.clone();
        a.source = interp(&a.source);
        a.destination = a.destination.as_deref().map(interp);
        let each =
            |m: &BTreeMap<String, String>| m.iter().map(|(k, v)| (k.clone(), interp(v))).collect();
        a.options = each(&a.options);
        a.headers = each(&a.headers);
        specs.push(FetchSpec {
            artifact: a,
            executable: false,
            field: format!("artifacts[{i}]"),
        });
    }
    specs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(id: &str, uid: u32) -> HostFacts {
        HostFacts {
            id: id.into(),
            dirs: Dirs {
                alloc_dir: "/a".into(),
                task_dir: "/a/web".into(),
                state_dir: "/d/tasks/t".into(),
                claim: "/d/claims/x".into(),
                allocs: None,
            },
            user: User {
                name: "nobody".into(),
                uid,
                gid: 65534,
                groups: vec![65534],
                home: "/nonexistent".into(),
            },
            mounts: vec![],
            layout: None,
            passthrough: vec![],
            supported_caps: crate::caps::ALL_MASK,
            kill_signal: 2,
        }
    }

    fn task(extra: &str) -> TaskRequest {
        TaskRequest::parse(&format!(
            r#"{{"name":"web","driver":"exec","config":{{"command":"$NOMAD_TASK_DIR/run","args":["${{NOMAD_TASK_NAME}}"]{extra}}}}}"#
        ))
        .unwrap()
    }

    #[test]
    fn an_exec_plan_has_its_namespaces_capabilities_and_interpolations() {
        let cfg = PluginConfig::default();
        let p = Plan::new(&task(""), &cfg, facts("t", 65534)).unwrap();
        assert_eq!(
            p.ns_flags,
            libc::CLONE_NEWUTS | libc::CLONE_NEWPID | libc::CLONE_NEWIPC
        );
        assert_eq!(p.command, "/local/run");
        assert_eq!(p.spec.argv, vec!["/local/run", "web"]);
        assert_eq!(p.spec.cwd, "/");
        let iso = p.spec.isolation.as_ref().unwrap();
        assert_eq!((iso.raised, iso.seccomp), (0, true));
        assert_eq!(iso.caps, crate::caps::default_mask());
        assert_eq!(p.owner, Some((65534, 65534)));
        // Root gets the set in every set.
        let p = Plan::new(&task(""), &cfg, facts("t", 0)).unwrap();
        assert_eq!(
            p.spec.isolation.unwrap().raised,
            crate::caps::default_mask()
        );
    }

    #[test]
    fn what_the_operator_has_not_allowed_is_refused_on_the_field() {
        let cfg = PluginConfig::default();
        for (extra, field) in [
            (r#","pid_mode":"host""#, "config.pid_mode"),
            (r#","ipc_mode":"host""#, "config.ipc_mode"),
            (r#","seccomp":"unconfined""#, "config.seccomp"),
            (r#","work_dir":"local""#, "config.work_dir"),
        ] {
            let e = Plan::new(&task(extra), &cfg, facts("t", 65534))
                .err()
                .unwrap_or_else(|| panic!("{extra} accepted"));
            assert_eq!(e.field.as_deref(), Some(field), "{extra}: {e}");
        }
        let cfg = PluginConfig {
            no_pivot_root: true,
            allow_unconfined_seccomp: true,
            ..Default::default()
        };
        let e = Plan::new(&task(r#","seccomp":"unconfined""#), &cfg, facts("t", 0))
            .err()
            .unwrap();
        assert_eq!(e.field.as_deref(), Some("config.seccomp"));
        let p = Plan::new(&task(""), &cfg, facts("t", 0)).unwrap();
        let chroot = 1u64 << crate::caps::parse_cap("SYS_CHROOT").unwrap();
        assert_eq!(p.spec.isolation.unwrap().caps & chroot, 0);
    }
}
