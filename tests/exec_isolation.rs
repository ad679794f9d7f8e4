//! exec isolation end to end (root and cgroups needed; skipped with a printed reason
//! otherwise, a failure in CI): the task's view of the filesystem, user, pid namespace, limits.

mod common;
use common::*;
use serde_json::{Value, json};

/// Whether exec can run here; prints why not. (The host's pid and ipc namespaces are
/// allowed in this test process: some tests ask for them.)
fn exec_ok() -> bool {
    init();
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        op(
            execdriver::driver::configure,
            json!({"allow_host_pid_mode": true, "allow_host_ipc_mode": true}),
        )
        .unwrap();
    });
    exec_available()
}

fn exec_task(name: &str, alloc: &std::path::Path, script: &str) -> Value {
    json!({"name": name, "driver": "exec", "alloc_dir": alloc, "config": {"command": "/bin/sh", "args": ["-c", script]}})
}

#[test]
fn root_view_user_and_pid() {
    if !exec_ok() {
        return;
    }
    let d = TempDir::new("view");
    let (w, out) = run(exec_task(
        "v",
        d.path(),
        "id -u; echo pid=$$$$; ls / | tr '\\n' ' '; echo; ls /proc | grep -c '^[0-9]'; test -e /root/.bashrc && echo root-visible; touch /usr/x 2>/dev/null && echo usr-writable; echo hi > /local/f; echo a > /alloc/data/f; pwd",
    ));
    assert_eq!(w["exit_code"], 0, "{w} {out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "65534", "{out}");
    assert_ne!(lines[1], "pid=1", "{out}");
    let top: std::collections::BTreeSet<&str> = lines[2].split_whitespace().collect();
    // Exactly the task's own dirs plus the chroot_env entries that exist on this host.
    let mut expected: std::collections::BTreeSet<&str> =
        ["alloc", "dev", "local", "proc", "secrets", "tmp"].into();
    for p in ["bin", "etc", "lib", "lib32", "lib64", "sbin", "usr"] {
        if std::path::Path::new("/").join(p).exists() {
            expected.insert(p);
        }
    }
    if std::path::Path::new("/run/resolvconf").exists() {
        expected.insert("run");
    }
    assert_eq!(top, expected, "top-level entries of the task's /");
    for never in ["root", "home", "var", "boot", "work"] {
        assert!(!top.contains(never), "host /{never} visible: {top:?}");
    }
    assert!(
        lines[3].parse::<u32>().unwrap() <= 4,
        "processes visible: {out}"
    );
    assert!(
        !out.contains("root-visible") && !out.contains("usr-writable"),
        "{out}"
    );
    assert_eq!(lines.last().copied(), Some("/"));
    assert_eq!(
        std::fs::read_to_string(d.path().join("v/local/f")).unwrap(),
        "hi\n"
    );
    assert_eq!(
        std::fs::read_to_string(d.path().join("alloc/data/f")).unwrap(),
        "a\n"
    );
}

#[test]
fn dev_nodes_and_mount_flags() {
    if !exec_ok() {
        return;
    }
    let d = TempDir::new("devs");
    // As nobody: the device nodes work, /usr and its submounts are ro,nosuid,nodev, the
    // logs are read-only and noexec, /dev has no block devices.
    let (w, out) = run(exec_task(
        "d",
        d.path(),
        "echo x > /dev/null && echo null-ok; head -c 4 /dev/urandom | wc -c; head -c 3 /dev/zero | wc -c; \
         stat -c '%F %a' /dev/null /dev/tty; ls /dev | tr '\\n' ' '; echo; \
         awk '$5 == \"/usr\" || $5 == \"/alloc/logs\" {print $5, $6}' /proc/self/mountinfo",
    ));
    assert_eq!(w["exit_code"], 0, "{w} {out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "null-ok", "{out}");
    assert_eq!(lines[1].trim(), "4", "{out}");
    assert_eq!(lines[2].trim(), "3", "{out}");
    assert_eq!(lines[3], "character special file 666", "{out}");
    assert_eq!(lines[4], "character special file 666", "{out}");
    let devs: std::collections::BTreeSet<&str> = lines[5].split_whitespace().collect();
    let expected: std::collections::BTreeSet<&str> = [
        "fd", "full", "null", "ptmx", "pts", "random", "shm", "stderr", "stdin", "stdout", "tty",
        "urandom", "zero",
    ]
    .into();
    assert_eq!(devs, expected, "{out}");
    let opts = |mp: &str| {
        lines
            .iter()
            .find_map(|l| l.strip_prefix(&format!("{mp} ")))
            .unwrap_or_else(|| panic!("{mp} not mounted: {out}"))
            .split(',')
            .collect::<std::collections::BTreeSet<_>>()
    };
    for f in ["ro", "nosuid", "nodev"] {
        assert!(opts("/usr").contains(f), "/usr lacks {f}: {out}");
        assert!(
            opts("/alloc/logs").contains(f),
            "/alloc/logs lacks {f}: {out}"
        );
    }
    assert!(opts("/alloc/logs").contains("noexec"), "{out}");
}

fn start_exec(req: Value) -> String {
    start(req).unwrap_or_else(|e| panic!("start: {e}"))["task_id"]
        .as_str()
        .unwrap()
        .to_string()
}

fn handle_cgroup(id: &str) -> Value {
    let i = op(execdriver::driver::inspect, json!({"task_id": id})).unwrap();
    i["handle"]["cgroup"].clone()
}

/// The task's directory holding `controller` (its v1 one, or its cgroup2 directory)
/// joined with `file`.
fn cg_file(cg: &Value, controller: &str, file: &str) -> std::path::PathBuf {
    let dir = cg["v1"][controller]
        .as_str()
        .or_else(|| cg["v2"].as_str().filter(|_| cg["v2_controllers"] == true))
        .unwrap_or_else(|| panic!("no {controller} directory in {cg}"));
    std::path::PathBuf::from(dir).join(file)
}

/// Whether the task's cgroup is a cgroup2 one with its controllers (a pure v2 host).
fn is_v2(cg: &Value) -> bool {
    cg["v2_controllers"] == true
}

#[test]
fn stop_reaches_handlerless_sleep_and_term_ignorer_is_killed() {
    if !exec_ok() {
        return;
    }
    let d = TempDir::new("estop");
    let id = start_exec(
        json!({"name": "s", "driver": "exec", "alloc_dir": d.path(), "config": {"command": "sleep", "args": ["600"]}}),
    );
    let t0 = std::time::Instant::now();
    let w = op(
        execdriver::driver::stop,
        json!({"task_id": id, "signal": "TERM", "timeout_ms": 10000}),
    )
    .unwrap();
    assert!(t0.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(
        (w["signal"].as_i64(), w["exit_code"].as_i64()),
        (Some(15), Some(143)),
        "{w}"
    );
    destroy(&id);

    let marker = format!("sleep {}", 800_000 + std::process::id() % 1000);
    let id = start_exec(exec_task(
        "i",
        d.path(),
        &format!("trap '' TERM; {marker} & echo ready; wait"),
    ));
    wait_for_output(d.path(), "i", "ready");
    let w = op(
        execdriver::driver::stop,
        json!({"task_id": id, "signal": "SIGTERM", "timeout_ms": 300}),
    )
    .unwrap();
    assert_eq!(w["signal"], 9, "{w}");
    assert!(
        pids_matching(&marker).is_empty(),
        "a process of the task survived"
    );
    destroy(&id);
}

#[test]
fn background_children_die_when_command_exits() {
    if !exec_ok() {
        return;
    }
    let d = TempDir::new("ebg");
    let marker = format!("sleep {}", 810_000 + std::process::id() % 1000);
    let (w, _) = run(exec_task("bg", d.path(), &format!("{marker} & exit 0")));
    assert_eq!(w["exit_code"], 0);
    assert!(pids_matching(&marker).is_empty());
}

#[test]
fn oom_is_reported() {
    if !exec_ok() {
        return;
    }
    let d = TempDir::new("oom");
    let mut req = json!({"name": "oom", "driver": "exec", "alloc_dir": d.path(), "config": {"command": "tail", "args": ["/dev/zero"]}});
    req["resources"] = json!({"memory_mb": 32});
    let (w, _) = run(req);
    assert_eq!(w["oom_killed"], true, "{w}");
    assert_eq!(w["signal"], 9, "{w}");
}

#[test]
fn limits_visible_pids_capped_cgroup_removed() {
    if !exec_ok() {
        return;
    }
    let d = TempDir::new("limits");
    let mut req = exec_task(
        "lim",
        d.path(),
        "sh -c 'for i in $(seq 60); do sleep 30 & done' 2>/dev/null; echo ready; exec sleep 30",
    );
    req["resources"] = json!({"memory_mb": 48, "cpu_mhz": 500, "pids_max": 16});
    let id = start_exec(req);
    wait_for_output(d.path(), "lim", "ready");
    let cg = handle_cgroup(&id);
    let read = |c: &str, f: &str| {
        std::fs::read_to_string(cg_file(&cg, c, f))
            .unwrap()
            .trim()
            .to_string()
    };
    if is_v2(&cg) {
        assert_eq!(read("memory", "memory.max"), (48u64 << 20).to_string());
        // runc's conversion of 500 shares.
        assert_eq!(read("cpu", "cpu.weight"), "19");
    } else {
        assert_eq!(
            read("memory", "memory.limit_in_bytes"),
            (48u64 << 20).to_string()
        );
        assert_eq!(read("cpu", "cpu.shares"), "500");
    }
    assert_eq!(read("pids", "pids.max"), "16");
    let current: u32 = read("pids", "pids.current").parse().unwrap();
    assert!(current <= 16, "pids.current {current}");
    op(
        execdriver::driver::stop,
        json!({"task_id": id, "timeout_ms": 100}),
    )
    .unwrap();
    destroy(&id);
    assert!(
        !cg_file(&cg, "memory", "").exists(),
        "memory cgroup left after destroy"
    );
    assert!(
        !cg_file(&cg, "pids", "").exists(),
        "pids cgroup left after destroy"
    );
}

/// `cores`: the task may run on one CPU only, the first of its cgroup parent's, and its
/// cgroup's cpuset says so (v1 a cpuset dir of its own, v2 `cpuset.cpus`).
#[test]
fn cores_pin_the_task_to_the_first_cpus_of_its_parent() {
    if !exec_ok() {
        return;
    }
    let d = TempDir::new("cores");
    let mut req = exec_task(
        "c",
        d.path(),
        "grep Cpus_allowed_list /proc/self/status; echo ready; exec sleep 30",
    );
    req["resources"] = json!({"cores": 1});
    let id = start_exec(req);
    wait_for_output(d.path(), "c", "ready");
    let out = stdout_of(d.path(), "c");
    let allowed = out
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap_or_else(|| panic!("{out}"))
        .trim()
        .to_string();
    let cg = handle_cgroup(&id);
    let cpus = cg_file(&cg, "cpuset", "cpuset.cpus");
    let set = std::fs::read_to_string(&cpus).unwrap();
    let parent = cpus.parent().unwrap().parent().unwrap();
    let effective = ["cpuset.cpus.effective", "cpuset.effective_cpus"]
        .iter()
        .find_map(|f| std::fs::read_to_string(parent.join(f)).ok())
        .unwrap_or_else(|| panic!("no effective cpus in {}", parent.display()));
    let first = effective.split([',', '-']).next().unwrap().trim();
    assert_eq!(set.trim(), first, "{} of {effective}", cpus.display());
    assert_eq!(allowed, first, "the task's CPUs");
    op(
        execdriver::driver::stop,
        json!({"task_id": id, "timeout_ms": 100}),
    )
    .unwrap();
    destroy(&id);
}

/// The task's (CapEff, CapBnd, CapAmb) as its /proc/self/status shows them.
fn caps_of(req_extra: Value) -> Result<(u64, u64, u64), execdriver::Error> {
    let d = TempDir::new("caps");
    let mut req = exec_task(
        "c",
        d.path(),
        "grep -E '^Cap(Eff|Bnd|Amb)' /proc/self/status",
    );
    for (k, v) in req_extra.as_object().unwrap() {
        req["config"][k] = v.clone();
    }
    let id = start(req)?["task_id"].as_str().unwrap().to_string();
    wait(&id, 30_000).unwrap();
    destroy(&id);
    let out = stdout_of(d.path(), "c");
    let get = |k: &str| {
        let l = out.lines().find(|l| l.starts_with(k)).unwrap();
        u64::from_str_radix(l.split_whitespace().nth(1).unwrap(), 16).unwrap()
    };
    Ok((get("CapEff"), get("CapBnd"), get("CapAmb")))
}

#[test]
fn capabilities() {
    if !exec_ok() {
        return;
    }
    let defaults = execdriver::caps::default_mask() & execdriver::caps::supported_mask();
    // A non-root user: the set bounds it, and it holds none of it.
    assert_eq!(caps_of(json!({})).unwrap(), (0, defaults, 0));
    assert_eq!(
        caps_of(json!({"cap_drop": ["all"], "cap_add": ["net_bind_service"]})).unwrap(),
        (1 << 10, 1 << 10, 1 << 10)
    );
    assert_eq!(
        caps_of(json!({"cap_add": ["net_bind_service"]})).unwrap(),
        (1 << 10, defaults, 1 << 10)
    );
    let e = caps_of(json!({"cap_add": ["SYS_ADMIN"]})).unwrap_err();
    assert_eq!(
        (e.code, e.field.as_deref()),
        (execdriver::Code::InvalidConfig, Some("config.cap_add")),
        "{e}"
    );
    assert!(e.message.contains("SYS_ADMIN"));
}

/// Lists this test's cgroup dirs (v1 memory) under the default parent.
fn cgroups_named(prefix: &str) -> Vec<String> {
    let v1 = std::path::Path::new("/sys/fs/cgroup/memory");
    let parent = if v1.is_dir() {
        v1.join("execdriver")
    } else {
        std::path::PathBuf::from("/sys/fs/cgroup/execdriver")
    };
    std::fs::read_dir(parent)
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn failed_starts_leave_nothing() {
    if !exec_ok() {
        return;
    }
    let d = TempDir::new("fail");
    let cases = [
        (
            json!({"user": "no-such-user-xyz"}),
            "sh",
            execdriver::Code::UserNotFound,
        ),
        (
            json!({"user": "root"}),
            "sh",
            execdriver::Code::InvalidConfig,
        ),
        (
            json!({}),
            "/usr/bin/definitely-not-here",
            execdriver::Code::CommandNotFound,
        ),
        (
            json!({}),
            "/root/.bashrc",
            execdriver::Code::CommandNotFound,
        ),
    ];
    for (i, (extra, cmd, code)) in cases.into_iter().enumerate() {
        let alloc = d.path().join(format!("a{i}"));
        let id = format!("fail-{}-{i}", std::process::id());
        let mut req = json!({"id": id, "name": "f", "driver": "exec", "alloc_dir": alloc, "config": {"command": cmd}});
        for (k, v) in extra.as_object().unwrap() {
            req[k] = v.clone();
        }
        let e = start(req).unwrap_err();
        assert_eq!(e.code, code, "case {i}: {e}");
        // The task's own directory is gone; the alloc dir, shared with its siblings, stays.
        assert!(!alloc.join("f").exists(), "case {i}: task dir left behind");
        assert!(
            cgroups_named(&id).is_empty(),
            "case {i}: cgroup left behind"
        );
    }
}

#[test]
fn work_dir_and_no_host_fds() {
    if !exec_ok() {
        return;
    }
    let d = TempDir::new("wd");
    // A host fd without CLOEXEC must not reach the task.
    let path = std::ffi::CString::new(d.path().join("hostfile").to_str().unwrap()).unwrap();
    // SAFETY: plain open of a new file; closed below.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_CREAT | libc::O_RDWR, 0o600) };
    assert!(fd > 2);
    let mut req = exec_task("wd", d.path(), "pwd; ls /proc/self/fd | tr '\\n' ' '");
    req["config"]["work_dir"] = json!("/local");
    let (w, out) = run(req);
    // SAFETY: our own fd.
    unsafe { libc::close(fd) };
    assert_eq!(w["exit_code"], 0);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("/local"));
    let fds: Vec<u32> = lines
        .next()
        .unwrap()
        .split_whitespace()
        .map(|s| s.parse().unwrap())
        .collect();
    // 0-2 plus the fd ls opens to read the directory.
    assert!(
        fds.iter().all(|f| *f <= 3),
        "task sees fds {fds:?} (host fd was {fd})"
    );
}

/// The supervisor holds the command's mount namespace open while the task runs, so that
/// the command's exit does not wait for the namespace to be torn down: one of its fds is
/// that namespace.
#[test]
fn supervisor_holds_the_commands_mount_namespace() {
    if !exec_ok() {
        return;
    }
    let d = TempDir::new("mntns");
    let r = start(exec_task("m", d.path(), "exec sleep 30")).unwrap();
    let id = r["task_id"].as_str().unwrap().to_string();
    let sup = r["pid"].as_i64().unwrap();
    // The command is the supervisor's only child once it has exec'd sleep.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let cmd = loop {
        let kids = std::fs::read_to_string(format!("/proc/{sup}/task/{sup}/children")).unwrap();
        let kid: Option<i64> = kids.split_whitespace().next().and_then(|k| k.parse().ok());
        if let Some(k) = kid
            && std::fs::read_link(format!("/proc/{k}/exe"))
                .is_ok_and(|e| e.to_string_lossy().contains("sleep"))
        {
            break k;
        }
        assert!(std::time::Instant::now() < deadline, "no sleep child");
        std::thread::sleep(std::time::Duration::from_millis(2));
    };
    let ns = std::fs::read_link(format!("/proc/{cmd}/ns/mnt")).unwrap();
    let ours = std::fs::read_link("/proc/self/ns/mnt").unwrap();
    assert_ne!(ns, ours, "the command has its own mount namespace");
    // It opens it just after its start report: polled, bounded.
    let held = || {
        std::fs::read_dir(format!("/proc/{sup}/fd"))
            .unwrap()
            .flatten()
            .any(|e| std::fs::read_link(e.path()).is_ok_and(|l| l == ns))
    };
    while !held() {
        assert!(
            std::time::Instant::now() < deadline,
            "the supervisor does not hold {ns:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    op(
        execdriver::driver::stop,
        json!({"task_id": id, "timeout_ms": 1000}),
    )
    .unwrap();
    destroy(&id);
}

/// `pid_mode`/`ipc_mode` `host`: the task shares the host's pid and ipc namespaces (and
/// sees the host's processes), keeps its own mount and uts namespaces, and its background
/// children still die with it (no pid namespace init: the cgroup and the subreaper take
/// them). Twice per mode: the second start takes the spare of that kind.
#[test]
fn host_pid_and_ipc_modes() {
    if !exec_ok() {
        return;
    }
    let ns = |n: &str| {
        std::fs::read_link(format!("/proc/self/ns/{n}"))
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };
    let (host_pid, host_ipc, host_mnt) = (ns("pid"), ns("ipc"), ns("mnt"));
    for (mode, round) in [("pid", 0), ("pid", 1), ("ipc", 0), ("ipc", 1)] {
        let d = TempDir::new(&format!("hostns-{mode}-{round}"));
        let marker = format!("sleep {}", 820_000 + std::process::id() % 1000 + round);
        let mut req = exec_task(
            "h",
            d.path(),
            &format!(
                "readlink /proc/self/ns/pid /proc/self/ns/ipc /proc/self/ns/mnt; \
                 ls /proc | grep -c '^[0-9]'; test -e /proc/1 && echo init-visible; {marker} & exit 0"
            ),
        );
        req["config"][format!("{mode}_mode")] = json!("host");
        let (w, out) = run(req);
        assert_eq!(w["exit_code"], 0, "{w} {out}");
        let l: Vec<&str> = out.lines().collect();
        assert_eq!(l[0] == host_pid, mode == "pid", "{mode}: {out}");
        assert_eq!(l[1] == host_ipc, mode == "ipc", "{mode}: {out}");
        assert_ne!(l[2], host_mnt, "{mode}: {out}");
        // Its /proc shows its own user's processes only (hidepid): in the host's pid
        // namespace too, where the host's init (root) is out of sight.
        let procs: usize = l[3].parse().unwrap();
        if mode != "pid" {
            assert!(procs <= 4, "{mode}: {procs} processes visible");
        }
        assert!(!out.contains("init-visible"), "{mode}: {out}");
        assert!(
            pids_matching(&marker).is_empty(),
            "{mode}: {marker} survived"
        );
    }
}

/// v1 cpuset and freezer: a dir of the task's own only when it needs one (`cores`; no pid
/// namespace of its own), else the task joins the parent's (not the host's). Each kind
/// twice, so the second start is offered that kind's spare (which a `cores` task cannot
/// use: its placeholder has no cpuset dir).
#[test]
fn cpuset_and_freezer_dirs_only_when_needed() {
    if !exec_ok() {
        return;
    }
    if !std::path::Path::new("/sys/fs/cgroup/cpuset/cgroup.procs").exists()
        || !std::path::Path::new("/sys/fs/cgroup/freezer/cgroup.procs").exists()
    {
        eprintln!("SKIP: no v1 cpuset or freezer hierarchy here");
        return;
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    for (kind, round) in [
        ("plain", 0),
        ("plain", 1),
        ("cores", 0),
        ("cores", 1),
        ("hostpid", 0),
        ("hostpid", 1),
    ] {
        let d = TempDir::new(&format!("cgdirs-{kind}-{round}"));
        let id = format!("cgdirs-{kind}-{round}-{}", std::process::id());
        let mut req = exec_task(
            "c",
            d.path(),
            "grep -E ':(memory|cpuset|freezer):' /proc/self/cgroup; grep Cpus_allowed_list /proc/self/status",
        );
        req["id"] = json!(id);
        match kind {
            "cores" => req["resources"] = json!({"cores": 1}),
            "hostpid" => req["config"]["pid_mode"] = json!("host"),
            _ => {}
        }
        let (w, out) = run(req);
        assert_eq!(w["exit_code"], 0, "{kind}: {w} {out}");
        let path = |c: &str| {
            out.lines()
                .find(|l| l.contains(&format!(":{c}:")))
                .and_then(|l| l.rsplit(':').next())
                .unwrap_or_else(|| panic!("{kind}: no {c} line: {out}"))
                .to_string()
        };
        let memory = path("memory");
        let parent = memory
            .strip_suffix(&format!("/{id}"))
            .unwrap_or_else(|| panic!("{kind}: memory cgroup {memory} is not the task's"));
        let own = |c: &str| format!("{parent}/{id}") == path(c);
        let shared = |c: &str| parent == path(c);
        assert_eq!(own("cpuset"), kind == "cores", "{kind}: {out}");
        assert_eq!(shared("cpuset"), kind != "cores", "{kind}: {out}");
        assert_eq!(own("freezer"), kind == "hostpid", "{kind}: {out}");
        assert_eq!(shared("freezer"), kind != "hostpid", "{kind}: {out}");
        let allowed = out
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap_or_else(|| panic!("{kind}: {out}"))
            .trim()
            .to_string();
        if kind == "cores" {
            assert!(
                allowed.parse::<u32>().is_ok(),
                "{kind}: one cpu, got {allowed}"
            );
        } else if cpus > 1 {
            assert!(
                allowed.parse::<u32>().is_err(),
                "{kind}: all cpus, got {allowed}"
            );
        }
    }
}

#[test]
fn links_planted_in_the_task_dir_are_refused() {
    if !exec_ok() {
        return;
    }
    // A task dir from an earlier run (or an artifact placed at its top) may hold links
    // where the root's mount points and links belong. The host makes those names with
    // calls that follow no link, and the command process refuses a link it did not
    // expect: nothing is mounted through it.
    let d = TempDir::new("planted");
    let outside = d.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let task = d.path().join("p");
    std::fs::create_dir_all(&task).unwrap();
    std::os::unix::fs::symlink(&outside, task.join("etc")).unwrap();
    let e = start(exec_task("p", d.path(), "true")).unwrap_err();
    assert_eq!(e.code, execdriver::Code::Isolation, "{e}");
    assert!(e.message.contains("symlink"), "{e}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(outside.to_str().unwrap()), "{mounts}");
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);

    // A top-level link of the root that points elsewhere than the host's.
    // (The failed start made the root's other names, as a first start does.)
    std::fs::remove_file(task.join("etc")).unwrap();
    let _ = std::fs::remove_file(task.join("bin"));
    std::os::unix::fs::symlink(&outside, task.join("bin")).unwrap();
    let e = start(exec_task("p", d.path(), "true")).unwrap_err();
    assert_eq!(e.code, execdriver::Code::Isolation, "{e}");
    assert!(e.message.contains("symlink"), "{e}");
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);

    // Gone, the root is made as usual.
    std::fs::remove_file(task.join("bin")).unwrap();
    let (w, out) = run(exec_task("p", d.path(), "ls /etc/passwd"));
    assert_eq!(w["exit_code"], 0, "{w} {out}");
}
