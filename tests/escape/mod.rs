//! The red-team suite's shared part: the probe (`probe.c`, built with the system's C
//! compiler), the two start paths it runs on, and the attacks themselves as functions
//! that `tests/escape_cold.rs` and `tests/escape_prestart.rs` call, each path in a test
//! process of its own (the plugin configuration is process-wide).
#![allow(dead_code)]

use crate::common::*;
use serde_json::{Value, json};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

/// How the task's supervisor and command process come to be.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Route {
    /// `prestart_supervisor: false`: a supervisor started for the task, the command
    /// process forked and set up at the start.
    Cold,
    /// A spare supervisor whose standby command process prepared ahead takes the task
    /// (checked: the command is the standby it had).
    Prestarted,
}

/// The configuration of a red-team test process: root tasks, the host's pid and ipc
/// namespaces and unconfined seccomp allowed (so that what such a task cannot do is tried
/// too), network namespaces under the temp dir (the tests make theirs there), a short
/// maximum kill timeout, `file://` artifacts from the temp dir (where the probe is built).
pub fn configure(path: Route) {
    init();
    op(
        execdriver::driver::configure,
        json!({"prestart_supervisor": path == Route::Prestarted,
               "denied_host_uids": "", "max_kill_timeout_ms": 2000,
               "allow_host_pid_mode": true, "allow_host_ipc_mode": true,
               "allow_unconfined_seccomp": true,
               "netns_dirs": [std::env::temp_dir()],
               "artifact": {"file_roots": [std::env::temp_dir()]}}),
    )
    .unwrap();
}

/// The probe, built once per test process.
pub fn probe() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/escape/probe.c");
            let out = std::env::temp_dir().join(format!(
                "execdriver-probe-{}-{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos()
            ));
            let st = std::process::Command::new("cc")
                .args(["-O1", "-Wall", "-o"])
                .arg(&out)
                .arg(&src)
                .status()
                .expect("a C compiler (cc) builds the probe");
            assert!(st.success(), "building {}", src.display());
            out
        })
        .clone()
}

/// Serialises the starts of one test process: a spare taken by one test is not there for
/// the next, and the prestarted path is checked against the spare it had.
static STARTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The children of `pid` (host pids).
fn children(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// The namespace flags a spare for `task` is kept under (as `driver_start` computes them).
fn flags_of(task: &Value) -> i32 {
    let mut f = libc::CLONE_NEWUTS;
    if task["config"]["pid_mode"] != "host" {
        f |= libc::CLONE_NEWPID;
    }
    if task["config"]["ipc_mode"] != "host" {
        f |= libc::CLONE_NEWIPC;
    }
    if task["network_isolation"]["mode"] == "none" {
        f |= libc::CLONE_NEWNET;
    }
    f
}

/// Runs `change`, which changes the host's mount table, with no start under way, and
/// returns once the spares have ended the standbys they had (copies of the old mounts):
/// a start after it finds a standby that takes its task.
pub fn changing_mounts<T>(change: impl FnOnce() -> T) -> T {
    let _one = STARTS.lock().unwrap_or_else(|p| p.into_inner());
    settle_after(change)
}

/// [`changing_mounts`] for a caller that holds [`STARTS`].
fn settle_after<T>(change: impl FnOnce() -> T) -> T {
    execdriver::host::pool::settle();
    let before: Vec<i32> = execdriver::host::pool::spare_pids()
        .iter()
        .flat_map(|(_, p)| children(*p))
        .collect();
    let r = change();
    let t0 = std::time::Instant::now();
    while before
        .iter()
        .any(|p| Path::new(&format!("/proc/{p}")).exists())
    {
        assert!(
            t0.elapsed().as_secs() < 10,
            "the spares kept their standbys after a mount change"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    r
}

/// (spare supervisor, its standby) of the kind `flags`, once one is ready (a standby
/// made): a warm-up task of that kind leaves one.
fn ready_spares(flags: i32) -> Vec<(i32, i32)> {
    let t0 = std::time::Instant::now();
    loop {
        execdriver::host::pool::settle();
        // Every spare of the kind (the start takes the oldest, which may be one taken
        // back after a task, still making its standby).
        let spares: Vec<i32> = execdriver::host::pool::spare_pids()
            .into_iter()
            .filter(|(f, _)| *f == flags)
            .map(|(_, p)| p)
            .collect();
        let ready: Vec<(i32, i32)> = spares
            .iter()
            .filter_map(|p| children(*p).first().map(|c| (*p, *c)))
            .collect();
        if !ready.is_empty() && ready.len() == spares.len() {
            return ready;
        }
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(20),
            "no spare with a standby of kind {flags:#x}"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// A running probe task.
pub struct Probe {
    pub id: String,
    pub alloc: TempDir,
    pub name: String,
    pub start: Value,
}

impl Probe {
    /// Everything the probe printed so far.
    pub fn out(&self) -> String {
        stdout_of(self.alloc.path(), &self.name)
    }

    /// Waits for the probe to finish its tries (it then sleeps until stopped).
    pub fn done(&self) -> String {
        wait_for_output(self.alloc.path(), &self.name, "probe-done");
        self.out()
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        destroy(&self.id);
    }
}

/// The data dir of this test process.
pub fn data_dir() -> PathBuf {
    execdriver::host::plugin::data_dir(&execdriver::host::plugin::current())
}

/// Starts the probe with `args` then `sleep` as an exec task on `path`, with `extra`
/// merged into the task (top level; `config` merged into its config). On the prestarted
/// path it first makes sure a spare of the task's kind is ready, and checks the task's
/// command is that spare's standby. With an `alloc_id` in `extra` the task gets the
/// default alloc dir (`<data_dir>/alloc/<alloc_id>`, which the driver makes; the probe
/// comes as a `file://` artifact), else one of this test's. Returns once the probe has
/// run its tries, or (with an `await=` try) waits.
pub fn start_probe(path: Route, name: &str, extra: Value, args: &[&str]) -> Probe {
    let default_alloc = extra.get("alloc_id").and_then(Value::as_str);
    let alloc = match default_alloc {
        // Removed with the test's task, as a dir of its own.
        Some(a) => TempDir(data_dir().join("alloc").join(a)),
        None => TempDir::new(&format!("escape-{name}")),
    };
    let marker = format!("host-marker={}", probe().display());
    let mut argv: Vec<&str> = vec![&marker];
    argv.extend_from_slice(args);
    argv.push("sleep");
    let mut task = json!({"name": name, "driver": "exec",
                          "config": {"command": "/local/probe", "args": argv},
                          "kill_signal": "SIGKILL"});
    if default_alloc.is_some() {
        task["artifacts"] = json!([{"source": format!("file://{}", probe().display()),
                                    "options": {"filename": "probe"}}]);
    } else {
        let local = alloc.path().join(name).join("local");
        std::fs::create_dir_all(&local).unwrap();
        std::fs::copy(probe(), local.join("probe")).unwrap();
        task["alloc_dir"] = json!(alloc.path());
    }
    for (k, v) in extra.as_object().unwrap() {
        if k == "config" {
            for (ck, cv) in v.as_object().unwrap() {
                task["config"][ck] = cv.clone();
            }
        } else {
            task[k] = v.clone();
        }
    }
    let _one = STARTS.lock().unwrap_or_else(|p| p.into_inner());
    let spares = (path == Route::Prestarted).then(|| {
        let flags = flags_of(&task);
        if execdriver::host::pool::spare_pids()
            .iter()
            .all(|(f, _)| *f != flags)
        {
            // A warm-up task of the kind: it leaves a spare.
            let d = TempDir::new("escape-warm");
            let mut warm = task.clone();
            warm["alloc_dir"] = json!(d.path());
            warm["name"] = json!("warm");
            warm["artifacts"] = json!([]);
            warm["config"] = json!({"command": "/bin/true", "pid_mode": task["config"]["pid_mode"],
                                    "ipc_mode": task["config"]["ipc_mode"]});
            warm["user"] = json!("nobody");
            let r = start(warm).unwrap_or_else(|e| panic!("warm-up start failed: {e}"));
            let id = r["task_id"].as_str().unwrap().to_string();
            wait(&id, 30_000).unwrap();
            destroy(&id);
        }
        ready_spares(flags)
    });
    let r = start(task.clone()).unwrap_or_else(|e| panic!("start of {task} failed: {e}"));
    let id = r["task_id"].as_str().unwrap().to_string();
    let p = Probe {
        id,
        alloc,
        name: name.to_string(),
        start: r.clone(),
    };
    match args.iter().find_map(|a| a.strip_prefix("await=")) {
        Some(file) => wait_for_output(p.alloc.path(), name, &format!("awaiting {file}")),
        None => {
            p.done();
        }
    }
    let sup = r["pid"].as_i64().unwrap() as i32;
    match spares {
        Some(spares) => {
            let (_, standby) = spares.iter().find(|(s, _)| *s == sup).unwrap_or_else(|| {
                panic!("the task did not take a spare: {sup} not in {spares:?}")
            });
            assert_eq!(
                children(sup).first(),
                Some(standby),
                "the command is not the spare's standby"
            );
        }
        None => assert!(
            execdriver::host::pool::spare_pids().is_empty(),
            "a spare on the cold path"
        ),
    }
    p
}

/// The probe's verdict lines that are not `ok`.
pub fn escapes(out: &str) -> Vec<&str> {
    out.lines()
        .filter(|l| l.split_whitespace().nth(1) == Some("ESCAPED") || l.contains(" ? "))
        .collect()
}

/// The value the probe printed for `key` (`key = value`).
pub fn reading<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("no {key} in {out}"))
}

/// Every try of `tries` ran and none got out.
pub fn assert_confined(out: &str, tries: &[&str]) {
    for t in tries {
        let name = t.split('=').next().unwrap();
        assert!(
            out.lines().any(|l| l.starts_with(&format!("{name} "))),
            "{name} did not run: {out}"
        );
    }
    let e = escapes(out);
    assert!(e.is_empty(), "escaped: {e:?}\n{out}");
}

fn hex(s: &str) -> u64 {
    u64::from_str_radix(s.trim(), 16).unwrap()
}

// ---------------------------------------------------------------------------------
// The attacks. Each takes the path it runs on.

/// The tries every task must fail, whoever it runs as.
const ALWAYS: &[&str] = &[
    "blk-tmp",
    "blk-local",
    "mem-tmp",
    "null-tmp",
    "null-shm",
    "core-pattern",
    "sysrq",
    "kcore",
    "keys",
    "timer-list",
    "sched-debug",
    "acpi",
    "scsi",
    "sys",
    "dev-ro",
    "userns",
    "clone-userns",
    "clone3",
    "keyctl",
    "bpf",
    "perf",
    "userfaultfd",
    "mount",
    "umount",
    "remount-proc-sys",
    "open-by-handle",
    "x32",
    "chroot-escape",
    "suid-local",
    "suid-alloc",
    "pvm-read",
    "personality",
    "int80",
];

/// `nobody` (the default user): no capability held, none to gain; every try fails.
pub fn nobody_gains_nothing(path: Route) {
    if !exec_available() {
        return;
    }
    let mut tries = vec!["caps", "setuid", "setgid", "kill-parent", "proc1"];
    tries.extend_from_slice(ALWAYS);
    let p = start_probe(path, "nobody", json!({}), &tries);
    let out = p.done();
    assert_confined(&out, &tries[1..]);
    let defaults = execdriver::caps::default_mask() & execdriver::caps::supported_mask();
    for k in ["CapInh", "CapPrm", "CapEff", "CapAmb"] {
        assert_eq!(hex(reading(&out, k)), 0, "{k}: {out}");
    }
    assert_eq!(hex(reading(&out, "CapBnd")), defaults, "{out}");
    assert_eq!(reading(&out, "NoNewPrivs"), "1");
    assert_eq!(reading(&out, "Seccomp"), "2", "a seccomp filter");
    assert!(reading(&out, "Uid").starts_with("65534"));
    // The files it tried to make setuid-root on the host are not.
    for dir in ["nobody/local", "alloc/data"] {
        for e in std::fs::read_dir(p.alloc.path().join(dir))
            .unwrap()
            .flatten()
        {
            use std::os::unix::fs::MetadataExt;
            let m = e.metadata().unwrap();
            assert!(
                !(m.uid() == 0 && m.mode() & 0o4000 != 0),
                "setuid-root file {}",
                e.path().display()
            );
        }
    }
}

/// A root task (where the operator allowed uid 0): it holds the task's set, yet it
/// cannot reach the host's kernel tunables, devices, keyring or mounts.
pub fn root_stays_inside(path: Route) {
    if !exec_available() {
        return;
    }
    let mut tries = vec!["caps"];
    tries.extend_from_slice(ALWAYS);
    let p = start_probe(path, "root", json!({"user": "root"}), &tries);
    let out = p.done();
    assert_confined(&out, &tries[1..]);
    let defaults = execdriver::caps::default_mask() & execdriver::caps::supported_mask();
    for k in ["CapPrm", "CapEff", "CapBnd"] {
        assert_eq!(hex(reading(&out, k)), defaults, "{k}: {out}");
    }
    // The nodes it could make (allowed numbers) open nothing: the mounts are nodev.
    assert!(
        out.lines()
            .any(|l| l.starts_with("null-tmp ok") && l.contains("EACCES")),
        "{out}"
    );
    // The kernel's device control refused the disk's node itself.
    assert!(
        out.lines()
            .any(|l| l.starts_with("blk-tmp ok mknod: EPERM")),
        "{out}"
    );
    drop(p);
    // A command run by driver_exec in a root task holds the same capabilities, and the
    // kernel's device control holds for it too. (A task of its own: driver_exec enters
    // its command's root, which the probe's chroot escape above has moved.)
    let p = start_probe(path, "rootexec", json!({"user": "root"}), &[]);
    let out = &confined_via_exec(&p, &tries);
    assert_eq!(hex(reading(out, "CapEff")), defaults, "{out}");
    for node in ["blk-tmp", "blk-local", "mem-tmp"] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(&format!("{node} ok mknod: EPERM"))),
            "driver_exec {node}: {out}"
        );
    }
}

/// With `pid_mode: host`, a non-root task sees its supervisor but cannot signal it.
pub fn host_pid_mode_cannot_kill_the_supervisor(path: Route) {
    if !exec_available() {
        return;
    }
    let p = start_probe(
        path,
        "pidhost",
        json!({"config": {"pid_mode": "host"}}),
        &["kill-parent"],
    );
    let out = p.done();
    assert_confined(&out, &["kill-parent"]);
    assert!(out.contains("kill-parent ok EPERM"), "{out}");
}

/// `network_isolation: none`: only loopback, up, and the host's loopback services are out
/// of reach.
pub fn network_none_reaches_nothing(path: Route) {
    if !exec_available() {
        return;
    }
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let connect = format!("connect={port}");
    let p = start_probe(
        path,
        "netnone",
        json!({"network_isolation": {"mode": "none"}}),
        &["interfaces", &connect],
    );
    let out = p.done();
    assert_eq!(reading(&out, "interfaces").trim(), "lo", "{out}");
    assert_confined(&out, &["connect"]);
    // Loopback is up inside: a server of its own on it is reachable (driver_exec enters
    // the same namespace).
    let r = op(
        execdriver::driver::exec,
        json!({"task_id": p.id, "command": "/local/probe", "args": ["interfaces", &connect]}),
    )
    .unwrap();
    let out = r["stdout"].as_str().unwrap();
    assert_eq!(
        reading(out, "interfaces").trim(),
        "lo",
        "driver_exec: {out}"
    );
    assert_confined(out, &["connect"]);
    drop(l);
}

/// `network_isolation: group`: the task joins the namespace at the path (here one of
/// this test's own), and a path that is not a network namespace is refused on the field.
pub fn network_group_joins_the_namespace(path: Route) {
    if !exec_available() {
        return;
    }
    // A network namespace held by a helper process; its /proc/<pid>/ns/net is the path.
    let mut holder = std::process::Command::new("unshare")
        .args(["--net", "sleep", "60"])
        .spawn()
        .expect("unshare(1)");
    let ns = format!("/proc/{}/ns/net", holder.id());
    let t0 = std::time::Instant::now();
    while std::fs::read_link(&ns).ok() == std::fs::read_link("/proc/self/ns/net").ok() {
        assert!(
            t0.elapsed().as_secs() < 10,
            "unshare never made its namespace"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let want = std::fs::read_link(&ns).unwrap();
    // As `ip netns add` keeps one: a bind mount of it on a file.
    let dir = TempDir::new("netns");
    let nsfile = dir.path().join("ns");
    std::fs::write(&nsfile, b"").unwrap();
    changing_mounts(|| {
        nix::mount::mount(
            Some(Path::new(&ns)),
            &nsfile,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .unwrap()
    });
    let p = start_probe(
        path,
        "netgroup",
        json!({"network_isolation": {"mode": "group", "path": nsfile}}),
        &["interfaces"],
    );
    p.done();
    let r = op(
        execdriver::driver::exec,
        json!({"task_id": p.id, "command": "/bin/readlink", "args": ["/proc/self/ns/net"]}),
    )
    .unwrap();
    assert_eq!(
        r["stdout"].as_str().unwrap().trim(),
        want.to_str().unwrap(),
        "{r}"
    );
    drop(p);
    changing_mounts(|| nix::mount::umount2(&nsfile, nix::mount::MntFlags::MNT_DETACH).unwrap());
    let _ = holder.kill();
    let _ = holder.wait();
    // Not a network namespace: refused before anything starts.
    let d = TempDir::new("netbad");
    for bad in ["/proc/self/ns/mnt", "/etc/hostname", "/nonexistent"] {
        let e = start(json!({"name": "n", "driver": "exec", "alloc_dir": d.path(),
            "network_isolation": {"mode": "group", "path": bad},
            "config": {"command": "/bin/true"}}))
        .unwrap_err();
        assert_eq!(
            (e.code, e.field.as_deref()),
            (
                execdriver::Code::InvalidConfig,
                Some("network_isolation.path")
            ),
            "{bad}: {e}"
        );
        assert!(!d.path().join("n").exists());
    }
}

/// `driver_exec` into a task runs under the same confinement as the task.
pub fn exec_into_is_confined(path: Route) {
    if !exec_available() {
        return;
    }
    let p = start_probe(path, "execinto", json!({}), &[]);
    let mut tries = vec!["caps", "setuid"];
    tries.extend_from_slice(ALWAYS);
    let out = &confined_via_exec(&p, &tries);
    assert_eq!(hex(reading(out, "CapEff")), 0, "{out}");
    assert_eq!(reading(out, "Seccomp"), "2", "{out}");
}

/// Runs the probe with `tries` (the first, `caps`, a reading) in the task of `p` by
/// `driver_exec`; asserts every try ran and none got out; returns what it printed.
fn confined_via_exec(p: &Probe, tries: &[&str]) -> String {
    let r = op(
        execdriver::driver::exec,
        json!({"task_id": p.id, "command": "/local/probe", "args": tries}),
    )
    .unwrap();
    let out = r["stdout"].as_str().unwrap().to_string();
    assert_confined(&out, &tries[1..]);
    out
}

/// The filter is what refuses: the calls only it refuses (the kernel would allow them
/// to the task) fail with EPERM under it, and get through with `config.seccomp:
/// "unconfined"` (which this test process's operator allows).
pub fn the_filter_is_what_refuses(path: Route) {
    if !exec_available() {
        return;
    }
    let tries = [
        "keyctl",
        "x32",
        "clone3",
        "pvm-read",
        "personality",
        "int80",
    ];
    let p = start_probe(path, "filtered", json!({}), &tries);
    let out = p.done();
    assert_confined(&out, &tries);
    // An i386 call (int $0x80) is not refused but fatal: the filter kills the process.
    assert!(out.lines().any(|l| l == "int80 ok SIGSYS"), "{out}");
    drop(p);
    let p = start_probe(
        path,
        "unfiltered",
        json!({"config": {"seccomp": "unconfined"}}),
        &tries,
    );
    let out = p.done();
    for t in ["keyctl", "clone3", "pvm-read", "personality", "int80"] {
        assert!(
            out.lines().any(|l| l.starts_with(&format!("{t} ESCAPED"))),
            "{t} is refused even without the filter: the test proves nothing\n{out}"
        );
    }
}

/// The task's view of `/proc`'s protected entries in its mount table: read-only and
/// masked as SPEC §3 lists.
pub fn proc_is_masked_in_the_mount_table(path: Route) {
    if !exec_available() {
        return;
    }
    let p = start_probe(path, "procmask", json!({}), &[]);
    let r = op(
        execdriver::driver::exec,
        json!({"task_id": p.id, "command": "/bin/cat", "args": ["/proc/self/mountinfo"]}),
    )
    .unwrap();
    let mi = r["stdout"].as_str().unwrap();
    let opts = |mp: &str| -> Option<String> {
        mi.lines()
            .map(|l| l.split(' ').collect::<Vec<_>>())
            .rfind(|f| f.len() > 5 && f[4] == mp)
            .map(|f| f[5].to_string())
    };
    // (Each where this kernel has it: the task's /proc is the same kernel's.)
    let here = |p: &str| Path::new(p).exists();
    for ro in [
        "/proc/sys",
        "/proc/sysrq-trigger",
        "/proc/irq",
        "/proc/bus",
        "/proc/fs",
    ] {
        if here(ro) {
            let o = opts(ro).unwrap_or_else(|| panic!("{ro} not mounted read-only: {mi}"));
            assert!(o.split(',').any(|x| x == "ro"), "{ro} not read-only: {o}");
        }
    }
    for masked in [
        "/proc/kcore",
        "/proc/keys",
        "/proc/timer_list",
        "/proc/sched_debug",
        "/proc/acpi",
        "/proc/scsi",
    ] {
        if here(masked) {
            assert!(opts(masked).is_some(), "{masked} not masked: {mi}");
        }
    }
    let dev = opts("/dev").unwrap();
    assert!(dev.split(',').any(|x| x == "ro"), "/dev: {dev}");
    for rw in ["/", "/alloc", "/secrets", "/dev/shm"] {
        let o = opts(rw).unwrap_or_else(|| panic!("{rw} not mounted: {mi}"));
        for f in ["nosuid", "nodev"] {
            assert!(o.split(',').any(|x| x == f), "{rw} lacks {f}: {o}");
        }
    }
}

/// An idle spare holds no host mount: a filesystem the host unmounts is released (its
/// superblock gone, as `/sys/fs/ext4/<device>` shows) although a standby had copied the
/// host's mounts while it was there.
pub fn idle_spares_release_host_mounts(route: Route) {
    if !exec_available() || route != Route::Prestarted {
        return;
    }
    if !Path::new("/dev/loop-control").exists() {
        skip("no loop devices here (/dev/loop-control) to mount a filesystem with");
        return;
    }
    let run = |cmd: &str, args: &[&str]| {
        let o = std::process::Command::new(cmd)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{cmd}: {e}"));
        assert!(
            o.status.success(),
            "{cmd} {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    let _one = STARTS.lock().unwrap_or_else(|p| p.into_inner());
    // A spare of the default kind, with its standby.
    let kind = flags_of(&json!({"config": {}}));
    if execdriver::host::pool::spare_pids()
        .iter()
        .all(|(f, _)| *f != kind)
    {
        let d = TempDir::new("mounts-warm");
        let r = start(json!({"name": "w", "driver": "exec", "alloc_dir": d.path(),
                             "config": {"command": "/bin/true"}}))
        .unwrap();
        let id = r["task_id"].as_str().unwrap().to_string();
        wait(&id, 30_000).unwrap();
        destroy(&id);
    }
    ready_spares(kind);
    let d = TempDir::new("mounts");
    let img = d.path().join("fs.img");
    let mnt = d.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    std::fs::File::create(&img)
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    run("mkfs.ext4", &["-q", "-F", img.to_str().unwrap()]);
    let dev = run("losetup", &["--find", "--show", img.to_str().unwrap()]);
    // The standbys made before the mount are ended; new ones copy the mounts, this one
    // included.
    settle_after(|| run("mount", &[&dev, mnt.to_str().unwrap()]));
    let sb = Path::new("/sys/fs/ext4").join(Path::new(&dev).file_name().unwrap());
    assert!(sb.exists(), "{} while mounted", sb.display());
    let holding = ready_spares(kind);
    // The next test's start finds standbys made after this umount.
    settle_after(|| {
        run("umount", &[mnt.to_str().unwrap()]);
        let t0 = std::time::Instant::now();
        while sb.exists() {
            assert!(
                t0.elapsed().as_secs() < 10,
                "the unmounted filesystem stays alive: spares {holding:?} hold it"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    });
    let _ = std::process::Command::new("losetup")
        .args(["-d", &dev])
        .status();
}

/// A `nobody` task with `cap_add` `chown`, `fowner` and `setfcap` (all in the default
/// `allow_caps`) plants a setuid-root shell and a `cat` with CAP_DAC_OVERRIDE as a file
/// capability in its `/local`. Inside they are inert (nosuid); on the host, in a default
/// alloc dir, no other user can reach them: uid 65534 gets EACCES on the path.
pub fn planted_files_are_out_of_reach(route: Route) {
    if !exec_available() {
        return;
    }
    let alloc_id = format!("plant-{}-{}", std::process::id(), route as u8);
    let p = start_probe(
        route,
        "plant",
        json!({"alloc_id": alloc_id, "config": {"cap_add": ["chown", "fowner", "setfcap"]}}),
        &["plant-suid=/local/suidsh", "plant-fcap=/local/capcat"],
    );
    let out = p.done();
    // The task could make them: the test is about who can reach them.
    assert!(
        reading(&out, "plant-suid").ends_with("uid 0 mode 4755"),
        "{out}"
    );
    assert_eq!(reading(&out, "plant-fcap"), "set", "{out}");
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let local = p.alloc.path().join("plant/local");
    let mode = |d: &Path| std::fs::metadata(d).unwrap().permissions().mode() & 0o7777;
    let made = data_dir();
    for d in [
        made.clone(),
        made.join("alloc"),
        p.alloc.path().to_path_buf(),
    ] {
        assert_eq!(mode(&d), 0o700, "{}", d.display());
    }
    assert_eq!(mode(&local), 0o755);
    assert_eq!(std::fs::metadata(&local).unwrap().uid(), 65534);
    // A host user (uid and gid 65534, no other group) running them.
    for (file, args) in [
        ("suidsh", vec!["-c", "id -u"]),
        ("capcat", vec!["/etc/shadow"]),
    ] {
        let path = local.join(file);
        assert!(path.exists());
        let r = std::process::Command::new(&path)
            .args(&args)
            .uid(65534)
            .gid(65534)
            .output();
        match r {
            Err(e) => assert_eq!(
                e.kind(),
                std::io::ErrorKind::PermissionDenied,
                "{}: {e}",
                path.display()
            ),
            Ok(o) => panic!(
                "a host user ran {}: {:?} {}",
                path.display(),
                o.status,
                String::from_utf8_lossy(&o.stdout)
            ),
        }
    }
}

/// A root task that shares the host's pid namespace kills its supervisor. The task's
/// processes run on in its cgroup: `destroy` without `force` refuses (the task is
/// running), `stop` or a forced `destroy` ends every one of them, and the wait result
/// says what happened.
pub fn a_killed_supervisor_does_not_free_the_task(route: Route) {
    if !exec_available() {
        return;
    }
    for end in ["stop", "destroy"] {
        let p = start_probe(
            route,
            &format!("killsup-{end}"),
            json!({"user": "root", "config": {"pid_mode": "host"}}),
            &["await=/local/go", "kill-parent"],
        );
        let sup = p.start["pid"].as_i64().unwrap() as i32;
        let cg: execdriver::cgroup::TaskCgroup =
            serde_json::from_value(p.start["handle"]["cgroup"].clone()).unwrap();
        std::fs::write(p.alloc.path().join(&p.name).join("local/go"), b"").unwrap();
        // The supervisor dies (it is our child: a zombie until reaped).
        let t0 = std::time::Instant::now();
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{sup}/stat")).unwrap_or_default();
            if stat.is_empty() || stat.rsplit(") ").next().unwrap().starts_with('Z') {
                break;
            }
            assert!(t0.elapsed().as_secs() < 20, "the supervisor was not killed");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let left = cg.pids();
        assert!(!left.is_empty(), "the probe should outlive its supervisor");
        let w = match end {
            "stop" => op(
                execdriver::driver::stop,
                json!({"task_id": p.id, "timeout_ms": 100}),
            )
            .unwrap(),
            _ => {
                let e = op(execdriver::driver::destroy, json!({"task_id": p.id})).unwrap_err();
                assert_eq!(
                    (e.code, e.field.as_deref()),
                    (execdriver::Code::TaskRunning, Some("force")),
                    "{e}"
                );
                assert!(e.message.contains("supervisor"), "{e}");
                assert_eq!(cg.pids(), left, "a refused destroy ended processes");
                let w = wait(&p.id, 0).unwrap();
                op(
                    execdriver::driver::destroy,
                    json!({"task_id": p.id, "force": true}),
                )
                .unwrap();
                w
            }
        };
        assert!(cg.pids().is_empty(), "{end}: left running: {:?}", cg.pids());
        for pid in left {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            assert!(
                stat.is_empty() || stat.contains(") Z"),
                "{end}: process {pid} still runs"
            );
        }
        assert!(
            w["err"].as_str().is_some_and(|e| e.contains("supervisor")),
            "{end}: {w}"
        );
    }
}
