//! `driver_start`: the task's [`Plan`], then one transaction in a fixed order, each step
//! owning what it made until the start commits:
//!
//! 1. the task's id in the task table (`Entry`: a start with the same id is refused);
//! 2. a lease on a supervisor ([`pool::acquire`]: dropped, the supervisor ends);
//! 3. the task's cgroups where the host makes them ([`crate::cgroup::CgroupGuard`]: removed
//!    on failure);
//! 4. the launch spec to the supervisor (it parses it, and makes the cgroups it was asked
//!    to, while the host goes on);
//! 5. the directories ([`prepare::Created`]: the task's own removed on failure; the
//!    alloc dir, shared with its siblings, stays) and the artifacts;
//! 6. the command looked up in the task's root, the task recorded in its state dir;
//! 7. the go: the supervisor starts the command and reports;
//! 8. commit: the handle, the task running, a new prestarted supervisor of its kind in the background.
//!
//! A failure at any step undoes, through those owners, everything made for this task and
//! nothing else.

use crate::config::{self, DriverKind, PluginConfig, TaskRequest};
use crate::error::{Code, Error, Result};
use crate::host::plan::{HostFacts, Plan};
use crate::host::pool;
use crate::host::prepare;
use crate::host::task::{self, Task};
use crate::proto::spec::{Go, LaunchSpec};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;

/// `driver_start` of the request `text`.
pub fn start(text: &str) -> Result<Value> {
    let t = TaskRequest::parse(text)?;
    let cfg = crate::host::plugin::current();
    if t.driver == DriverKind::Exec
        && let Err((_, why)) = crate::host::driver::exec_support_cached()
    {
        return Err(Error::field(
            Code::Unsupported,
            "driver",
            format!("driver \"exec\" is not available here: {why}"),
        ));
    }
    let plan = Plan::new(&t, &cfg, facts(&t, &cfg)?)?;
    let entry = Entry::register(&plan)?;
    // Dropped before the entry, on any way out but the commit: the directories go while
    // the id is still taken.
    let mut created = prepare::Created::default();
    let v = run(&plan, &cfg, &entry, &mut created)?;
    created.commit();
    entry.commit();
    Ok(v)
}

/// Checks a task's `network_isolation.path` (host side): under one of the plugin's
/// `netns_dirs`, without `.` or `..`, and a network namespace
/// ([`crate::sys::net::open_netns`]). One
/// message for every refusal, so that it tells nothing of the host's files.
fn check_netns_path(path: &Path, dirs: &[String]) -> std::io::Result<std::fs::File> {
    let under = crate::host::handle::plain_absolute(path)
        && dirs
            .iter()
            .any(|d| path.starts_with(d) && path != Path::new(d));
    let refused = || {
        std::io::Error::other(format!(
            "network_isolation.path {} is not a network namespace in the plugin's netns_dirs ({})",
            path.display(),
            dirs.join(", ")
        ))
    };
    if !under {
        return Err(refused());
    }
    crate::sys::net::open_netns(path).map_err(|_| refused())
}


/// What the plan needs of the host: the user (NSS), the `chroot_env` entries, the cgroup
/// layout, the environment passed through; and the task's network namespace checked.
fn facts(t: &TaskRequest, cfg: &PluginConfig) -> Result<HostFacts> {
    let exec = t.driver == DriverKind::Exec;
    crate::host::env::validate_env(t)?;
    let kill_signal = crate::host::driver::parse_signal(&t.kill_signal, "kill_signal", Code::InvalidConfig)?;
    if let Some(n) = &t.network_isolation
        && exec
        && n.mode == config::NetworkMode::Group
    {
        let path = n.path.clone().unwrap_or_default();
        check_netns_path(Path::new(&path), &cfg.netns_dirs).map_err(
            |e| Error::field(Code::InvalidConfig, "network_isolation.path", e.to_string()),
        )?;
    }
    let id =
        t.id.clone()
            .unwrap_or_else(|| config::generated_id(&t.name, &crate::sys::random_hex(8)));
    let user = if exec {
        crate::host::user::resolve_user(t.user.as_deref().unwrap_or("nobody"), cfg)?
    } else {
        crate::host::user::current_user()
    };
    let mounts = if exec {
        prepare::root_plan(cfg)
    } else {
        vec![]
    };
    // The task's cgroups (as root): for exec all of them; for raw_exec one to track its
    // processes, where the host has cgroup2.
    let layout = if crate::sys::euid() != 0 {
        None
    } else if exec {
        Some(crate::cgroup::detect_cached()?)
    } else {
        crate::cgroup::detect_cached().ok()
    };
    Ok(HostFacts {
        dirs: prepare::paths(t, &id, cfg)?,
        id,
        user,
        mounts,
        layout,
        passthrough: cfg
            .env_passthrough
            .iter()
            .filter_map(|k| std::env::var(k).ok().map(|v| (k.clone(), v)))
            .collect(),
        supported_caps: crate::caps::supported_mask(),
        kill_signal,
    })
}

/// The task's entry in the task table, from before anything is made (a duplicate id
/// leaves nothing behind) until the start commits; removed if it does not.
struct Entry {
    task: Arc<Task>,
    committed: std::cell::Cell<bool>,
}

impl Entry {
    fn register(plan: &Plan) -> Result<Entry> {
        let task = Task::new(
            plan.id.clone(),
            plan.name.clone(),
            plan.driver,
            plan.dirs.task_dir.clone(),
            plan.dirs.state_dir.clone(),
            plan.kill_signal,
            plan.kill_timeout_ms,
        );
        task::insert(task.clone())?;
        task.event(
            crate::host::events::Kind::Received,
            format!("{} task {:?}", plan.driver.as_str(), plan.name),
        );
        let entry = Entry {
            task,
            committed: std::cell::Cell::new(false),
        };
        // One this process does not know (an earlier host's, not recovered yet).
        prepare::refuse_live_state(&plan.dirs)?;
        Ok(entry)
    }

    fn commit(&self) {
        self.committed.set(true);
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        if !self.committed.get() {
            self.task.set_failed();
            task::remove(&self.task);
        }
    }
}

/// Steps 2 to 8 (see the module doc).
fn run(
    plan: &Plan,
    cfg: &Arc<PluginConfig>,
    entry: &Entry,
    created: &mut prepare::Created,
) -> Result<Value> {
    let id = &plan.id;
    // The handle's key before anything is started: the handle of a started task is
    // always signed.
    let key = crate::host::handle::Key::of(&crate::host::plugin::data_dir_for_start(cfg)?)?;
    let owns = plan.cgroups.as_ref().map(|r| crate::proto::spec::Owned {
        layout: r.layout.clone(),
        parent: r.parent.clone(),
        name: id.clone(),
    });
    let mut lease = pool::acquire(cfg, plan.ns_flags, owns.as_ref())?;
    let (request, made) = lease.cgroups(plan.cgroups.clone(), id)?;
    // The cgroups the host made for the start, removed unless it commits.
    let cgroups = crate::cgroup::CgroupGuard::new(made);
    let mut spec = plan.spec.clone();
    if let Some(cg) = cgroups.get() {
        set_cgroup(&mut spec, cg);
    }
    spec.cgroup_request = request;
    spec.again_ms = lease.again_ms(cfg);
    spec.nonce = crate::sys::random_hex(16);
    lease.send_spec(&spec);

    // The wait fd's pipe: its write end goes to the supervisor with the go.
    let wait_pipe = match plan.wait_fd {
        true => Some(
            // Non-blocking, for a host's poller (Go's takes only such fds).
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
                .map_err(|e| Error::new(Code::Spawn, format!("pipe: {e}")))?,
        ),
        false => None,
    };
    let go = match prepare_command(plan, cfg, entry, created, &mut spec) {
        Ok(go) => go,
        Err(e) => {
            // Before the lease goes (the supervisor sees EOF): it removes the start's
            // record as it would had we died, and we undo the rest once it has exited.
            created.let_go_of_state();
            return Err(e);
        }
    };
    let started = lease.go(&go, wait_pipe.as_ref().map(|(_, w)| w))?;
    let wait_fd = wait_pipe.map(|(r, _)| r);

    // Committed from here: nothing fails any more.
    if let Some(cg) = &started.cgroup {
        // Made by the supervisor: it reports where.
        set_cgroup(&mut spec, cg);
    }
    cgroups.disarm();
    pool::replenish(cfg, plan.ns_flags);
    let mut v = commit(plan, entry, &key, spec, started);
    if let Some(r) = wait_fd {
        // Handed over: the caller closes it.
        v["wait_fd"] = json!(std::os::fd::IntoRawFd::into_raw_fd(r));
    }
    Ok(v)
}

/// Points `spec` at the task's cgroups `cg`.
fn set_cgroup(spec: &mut LaunchSpec, cg: &crate::cgroup::TaskCgroup) {
    spec.cgroup_procs = cg.self_join_files();
    spec.clone_into = cg.v2_dir();
    spec.cgroup = Some(cg.clone());
}

/// Steps 5 and 6 (see the module doc): the directories and artifacts, then the command
/// looked up; returns the go, applied to `spec` and recorded in the state dir.
/// Refuses an exec task whose command's interpreter or libraries its root lacks, naming
/// what is missing ([`crate::host::loadable`]).
fn loadable_in_root(
    command: &str,
    task_dir: &Path,
    steps: &[crate::proto::mounts::Step],
    spec: &LaunchSpec,
) -> Result<()> {
    let view = |p: &Path| prepare::host_view(p, task_dir, steps, 0);
    let ld_path = spec
        .env
        .iter()
        .find(|(k, _)| k == "LD_LIBRARY_PATH")
        .map(|(_, v)| v.as_str());
    let root = crate::host::loadable::Root::new(&view, ld_path, task_dir, steps);
    match crate::host::loadable::check(command, &root) {
        Some(m) => Err(Error::field(
            Code::CommandNotFound,
            "config.command",
            m.message(command),
        )),
        None => Ok(()),
    }
}

fn prepare_command(
    plan: &Plan,
    cfg: &PluginConfig,
    entry: &Entry,
    created: &mut prepare::Created,
    spec: &mut LaunchSpec,
) -> Result<Go> {
    let exec = plan.exec();
    let root = spec.isolation.as_ref().map(|i| &i.mounts[..]);
    prepare::make_dirs(&plan.dirs, plan.owner, root, created)?;
    if !plan.artifacts.is_empty() {
        let progress: Vec<_> = plan
            .artifacts
            .iter()
            .map(crate::host::fetch::ArtifactProgress::new)
            .collect();
        entry.task.lock().artifacts = progress.clone();
        let n = plan.artifacts.len();
        entry.task.event(
            crate::host::events::Kind::DownloadingArtifacts,
            format!("{n} artifact(s)"),
        );
        crate::host::fetch::fetch_all(
            &plan.artifacts,
            &plan.dirs.task_dir,
            &cfg.artifact,
            &progress,
        )?;
        entry.task.event(crate::host::events::Kind::ArtifactsDownloaded, "");
    }
    let (command, _) =
        prepare::lookup_command(&plan.command, &plan.dirs.task_dir, root, &spec.cwd)?;
    if let Some(steps) = root {
        loadable_in_root(&command, &plan.dirs.task_dir, steps, spec)?;
    }
    let go = Go {
        command: Some(command),
        root_id: exec
            .then(|| crate::sys::file_id(&plan.dirs.task_dir))
            .flatten(),
        alloc_id: exec
            .then(|| crate::sys::file_id(&plan.dirs.alloc_dir.join("alloc")))
            .flatten(),
        wait_pipe: plan.wait_fd,
    };
    go.apply(spec);
    test_pause("EXECDRIVER_TEST_PAUSE_BEFORE_GO");
    // Recorded before it may start: a task that cannot be (a full or read-only disk) does
    // not run, and its exit status has its room.
    let record = serde_json::to_vec(&*spec).map_err(|e| Error::internal(e.to_string()))?;
    crate::proto::spec::record_start(&plan.dirs.state_dir, &record).map_err(|e| {
        Error::new(
            Code::Spawn,
            format!("recording the task in its state dir: {e}"),
        )
    })?;
    test_pause("EXECDRIVER_TEST_PAUSE_AFTER_RECORD");
    Ok(go)
}

/// Step 8 (see the module doc), but for the new supervisor: the task's signed handle made and the
/// task marked running in the table. Returns `driver_start`'s answer.
fn commit(
    plan: &Plan,
    entry: &Entry,
    key: &crate::host::handle::Key,
    spec: LaunchSpec,
    started: pool::Started,
) -> Value {
    let id = &plan.id;
    let task = &entry.task;
    let started_at = started.started_at.clone();
    let handle = crate::host::handle::Handle {
        version: crate::host::handle::VERSION,
        task_id: id.clone(),
        name: plan.name.clone(),
        driver: plan.driver,
        pid: started.pid,
        start_time: started
            .start_time
            .or_else(|| crate::sys::proc_start_time(started.pid)),
        state_dir: plan.dirs.state_dir.clone(),
        task_dir: plan.dirs.task_dir.clone(),
        alloc_dir: plan.dirs.alloc_dir.clone(),
        cgroup: spec.cgroup.clone(),
        kill_signal: task.kill_signal,
        kill_timeout_ms: task.kill_timeout_ms,
        started_at: started_at.clone(),
        nonce: spec.nonce.clone(),
        confinement: spec
            .isolation
            .as_ref()
            .map(crate::host::handle::confinement_of),
    }
    .signed(key);
    let cgroup = spec.cgroup.clone();
    {
        let mut g = task.lock();
        g.reusable = started.reusable;
        g.spec = Some(spec);
        g.cpu_sample = Some(crate::host::stats::Sample::at_start());
        let pid = started.pid;
        let events = &mut g.events;
        events.push(&plan.dirs.state_dir, &task.id, crate::host::events::Kind::Started, format!("supervisor pid {pid}"));
        // One write for the whole start, off nothing but this return.
        events.persist(&plan.dirs.state_dir);
    }
    task.set_running(
        started.pid,
        started.pidfd,
        started_at.clone(),
        handle.clone(),
        cgroup,
        Some(started.chan),
    );
    json!({"task_id": id, "pid": started.pid, "task_dir": plan.dirs.task_dir,
          "started_at": started_at, "handle": handle})
}

/// The fault tests' hooks (with the `testing` feature only): with `<var>=<file>` in the
/// host's environment when a start reaches that point, it stops there for good, after
/// creating `<file>`, so that a test can kill the host there.
/// `EXECDRIVER_TEST_PAUSE_BEFORE_GO`: the spec sent, the cgroups and directories made,
/// the task not recorded yet; `EXECDRIVER_TEST_PAUSE_AFTER_RECORD`: recorded in its state
/// dir, the go not sent. Read at each start, so that a test host may set it after a
/// start it lets through.
#[cfg(feature = "testing")]
fn test_pause(var: &str) {
    if let Some(marker) = std::env::var_os(var) {
        let _ = std::fs::write(marker, b"");
        loop {
            std::thread::park();
        }
    }
}

#[cfg(not(feature = "testing"))]
fn test_pause(_: &str) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netns_paths_outside_netns_dirs_or_not_namespaces_are_refused() {
        assert!(
            crate::sys::net::open_netns(Path::new("/proc/self/ns/net")).is_err(),
            "a magic link is not followed"
        );
        let me = format!("/proc/{}/ns", std::process::id());
        let dirs = vec![me.clone()];
        let netns = format!("{me}/net");
        // Under /proc the ns entries are magic links: refused as such by open_netns, and a
        // path outside netns_dirs is refused before anything is opened.
        assert!(check_netns_path(Path::new(&netns), &dirs).is_err());
        for bad in ["/etc/hostname", "/nonexistent", "relative/x"] {
            let e = check_netns_path(Path::new(bad), &dirs).unwrap_err();
            assert!(
                e.to_string().contains("is not a network namespace in"),
                "{e}"
            );
        }
        let e = check_netns_path(Path::new(&format!("{me}/../ns/net")), &dirs).unwrap_err();
        assert!(e.to_string().contains("netns_dirs"), "{e}");
    }
}
