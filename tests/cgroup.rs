//! cgroup integration tests on the real machine (root). Each test uses its own parent
//! directory `execdriver-test-<pid>-<n>` and a Drop guard that kills, removes the task
//! cgroup and then the (empty) test parent, even when the test fails.

mod common;

use execdriver::Code;
use execdriver::cgroup::{Layout, Limits, TaskCgroup, detect};
use std::fs;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const MIB: u64 = 1024 * 1024;

/// Serialises `Layout::usable` probes within this test binary.
static PROBE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The layout, or None (with the reason printed) when these tests cannot run here; in CI
/// (root, cgroups) that fails the test instead.
fn layout() -> Option<Layout> {
    if !common::is_root() {
        common::skip("cgroup integration tests need root");
        return None;
    }
    let l = match detect() {
        Ok(l) => l,
        Err(e) => {
            common::skip(&format!("no cgroups: {e}"));
            return None;
        }
    };
    // Probes of concurrent tests would show up in detect_and_usable's leftover check.
    let probe = PROBE.lock().unwrap_or_else(|p| p.into_inner());
    let usable = l.usable();
    drop(probe);
    if let Err(e) = usable {
        common::skip(&format!("cgroups not usable: {e}"));
        return None;
    }
    Some(l)
}

fn mounts(l: &Layout) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = match l {
        Layout::V1 { controllers } => controllers.values().cloned().collect(),
        Layout::V2 { root } => vec![root.clone()],
        Layout::Hybrid {
            controllers,
            unified,
        } => {
            let mut v: Vec<PathBuf> = controllers.values().cloned().collect();
            v.push(unified.clone());
            v
        }
    };
    v.sort();
    v.dedup();
    v
}

fn unique_parent() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "execdriver-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Cleans up a test's cgroups and processes whatever happens.
struct Guard {
    layout: Layout,
    parent: String,
    tcg: Option<TaskCgroup>,
    children: Vec<Child>,
    /// More cgroup names under `parent` to remove (with `TaskCgroup::named`).
    names: Vec<String>,
}

impl Guard {
    fn new(layout: &Layout) -> Guard {
        Guard {
            layout: layout.clone(),
            parent: unique_parent(),
            tcg: None,
            children: vec![],
            names: vec![],
        }
    }

    /// Creates `<parent>/<name>`, removed by the guard under that name (whatever it is
    /// renamed to, list that name too).
    fn create_named(&mut self, name: &str, limits: &Limits) -> TaskCgroup {
        self.names.push(name.to_string());
        TaskCgroup::create(&self.layout, &self.parent, name, limits)
            .unwrap_or_else(|e| panic!("create {name}: {e}"))
    }

    fn create(&mut self, limits: &Limits) -> TaskCgroup {
        let t = TaskCgroup::create(&self.layout, &self.parent, "task", limits)
            .unwrap_or_else(|e| panic!("create: {e}"));
        self.tcg = Some(t.clone());
        t
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(t) = &self.tcg {
            let _ = t.kill_all();
            let _ = t.remove();
        }
        for n in &self.names {
            if let Ok(t) = TaskCgroup::named(&self.layout, &self.parent, n) {
                let _ = t.remove();
            }
        }
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for m in mounts(&self.layout) {
            let _ = fs::remove_dir(m.join(&self.parent));
        }
    }
}

fn get(p: &Path) -> String {
    fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .to_string()
}

/// The v1 files of a task cgroup with 64 MiB, 500 MHz, 16 pids and 1 core (when the
/// task has a cpuset dir of its own; else no core pinned).
fn assert_v1_limits(t: &TaskCgroup) {
    let m = &t.v1["memory"];
    assert_eq!(
        get(&m.join("memory.limit_in_bytes")),
        (64 * MIB).to_string()
    );
    let memsw = m.join("memory.memsw.limit_in_bytes");
    if memsw.exists() {
        assert_eq!(get(&memsw), (64 * MIB).to_string());
    } else {
        eprintln!("note: no memory.memsw.limit_in_bytes (no swap accounting)");
    }
    assert_eq!(get(&m.join("memory.swappiness")), "0");
    assert_eq!(get(&t.v1["cpu"].join("cpu.shares")), "500");
    assert_eq!(get(&t.v1["pids"].join("pids.max")), "16");
    let Some(cs) = t.v1.get("cpuset") else {
        return;
    };
    let parent_cpus = get(&cs.parent().unwrap().join("cpuset.effective_cpus"));
    let first = parent_cpus.split([',', '-']).next().unwrap().to_string();
    assert_eq!(get(&cs.join("cpuset.cpus")), first);
    assert!(!get(&cs.join("cpuset.mems")).is_empty());
}

/// Spawns `sh -c script` already inside the task cgroup (joined between fork and exec).
fn spawn_in(t: &TaskCgroup, script: &str) -> Child {
    let t2 = t.clone();
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    // SAFETY: join_self is allocation-free (open/write on stack buffers); the child of
    // fork is single-threaded, as join_self requires.
    unsafe {
        cmd.pre_exec(move || t2.join_self());
    }
    cmd.spawn().expect("spawn sh")
}

fn wait_timeout(c: &mut Child, d: Duration) -> Option<std::process::ExitStatus> {
    let until = Instant::now() + d;
    while Instant::now() < until {
        if let Some(s) = c.try_wait().unwrap() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

#[test]
fn detect_and_usable() {
    let Some(l) = layout() else { return };
    eprintln!("layout: {} {:?}", l.name(), l);
    // on this machine (and CI): v1 controllers plus an empty cgroup2 at /sys/fs/cgroup/unified
    if Path::new("/sys/fs/cgroup/unified/cgroup.procs").exists()
        && Path::new("/sys/fs/cgroup/memory/memory.stat").exists()
    {
        assert_eq!(l.name(), "hybrid");
    }
    // the probe left nothing behind (no other test's probe runs meanwhile)
    let _probe = PROBE.lock().unwrap_or_else(|p| p.into_inner());
    for m in mounts(&l) {
        for e in fs::read_dir(&m).unwrap().flatten() {
            let n = e.file_name().to_string_lossy().to_string();
            assert!(
                !n.starts_with(&format!("execdriver-probe-{}-", std::process::id())),
                "{n}"
            );
        }
    }
}

#[test]
fn create_applies_limits_and_remove_cleans_up() {
    let Some(l) = layout() else { return };
    let mut g = Guard::new(&l);
    let lim = Limits {
        cpu_mhz: 500,
        cores: 1,
        memory_bytes: 64 * MIB,
        pids_max: 16,
        freezer: true,
    };
    let t = g.create(&lim);
    eprintln!("{}", serde_json::to_string_pretty(&t).unwrap());
    for d in &t.dirs {
        assert!(d.is_dir(), "{}", d.display());
        assert!(d.ends_with(format!("{}/task", g.parent)), "{}", d.display());
    }
    if let Some(m) = t.v1.get("memory") {
        assert_eq!(
            m,
            &PathBuf::from(format!("/sys/fs/cgroup/memory/{}/task", g.parent))
        );
        assert_v1_limits(&t);
    } else {
        let d = t.v2.clone().unwrap();
        assert_eq!(get(&d.join("memory.max")), (64 * MIB).to_string());
        assert_eq!(get(&d.join("cpu.weight")), "19");
        assert_eq!(get(&d.join("pids.max")), "16");
        // cores 1: the first CPU of the parent's effective set.
        let avail = get(&d.parent().unwrap().join("cpuset.cpus.effective"));
        let first = avail.split([',', '-']).next().unwrap().trim().to_string();
        assert_eq!(get(&d.join("cpuset.cpus")), first, "of {avail}");
        if d.join("memory.swap.max").exists() {
            assert_eq!(get(&d.join("memory.swap.max")), "0");
        }
    }
    if l.name() == "hybrid" {
        let u = t.v2.clone().unwrap();
        assert_eq!(
            u,
            PathBuf::from(format!("/sys/fs/cgroup/unified/{}/task", g.parent))
        );
        assert!(t.kill.as_ref().unwrap().exists(), "cgroup.kill");
        assert_eq!(t.procs[0], u.join("cgroup.procs"));
    }

    // the same name again is refused and the first is untouched
    let e = TaskCgroup::create(&l, &g.parent, "task", &lim).unwrap_err();
    assert_eq!(e.code, Code::Isolation);
    assert!(e.message.contains("already exists"), "{e}");
    assert!(t.dirs.iter().all(|d| d.is_dir()));

    t.remove().unwrap();
    for d in &t.dirs {
        assert!(!d.exists(), "{} left", d.display());
    }
    t.remove().unwrap(); // idempotent
    for m in mounts(&l) {
        assert!(m.join(&g.parent).is_dir(), "the parent stays");
    }
}

#[test]
fn failed_create_leaves_nothing() {
    let Some(l) = layout() else { return };
    let g = Guard::new(&l);
    let e = TaskCgroup::create(
        &l,
        &g.parent,
        "task",
        &Limits {
            cores: 4096,
            ..Limits::default()
        },
    )
    .unwrap_err();
    assert_eq!(e.code, Code::Isolation);
    assert!(e.message.contains("4096 cores requested"), "{e}");
    for m in mounts(&l) {
        assert!(
            !m.join(&g.parent).join("task").exists(),
            "{} left",
            m.display()
        );
    }
}

#[test]
fn join_pids_and_kill_all() {
    let Some(l) = layout() else { return };
    let mut g = Guard::new(&l);
    let t = g.create(&Limits {
        cpu_mhz: 100,
        ..Limits::default()
    });
    let mut child = Command::new("sleep").arg("100").spawn().unwrap();
    let pid = child.id() as i32;
    t.join(pid).unwrap();
    assert_eq!(t.pids(), vec![pid]);
    let cg = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(cg.contains(&format!("/{}/task", g.parent)), "{cg}");
    assert_eq!(t.stats()["pids"]["current"], 1);

    let start = Instant::now();
    t.kill_all().unwrap();
    let st = wait_timeout(&mut child, Duration::from_secs(5)).expect("sleep survived kill_all");
    assert_eq!(st.signal(), Some(libc::SIGKILL), "{st:?}");
    eprintln!("kill_all took {:?}", start.elapsed());
    assert!(t.pids().is_empty());
    t.kill_all().unwrap(); // nothing left: still fine
    t.remove().unwrap();
    assert!(t.dirs.iter().all(|d| !d.exists()));
}

#[test]
fn join_self_enters_every_hierarchy_by_v1_tasks() {
    let Some(l) = layout() else { return };
    let mut g = Guard::new(&l);
    let t = g.create(&Limits::default());
    // v1 directories are joined by `tasks` (no threadgroup lock), cgroup2 by cgroup.procs;
    // the shared parents (cpuset, freezer: no cores, no freezer asked for) by `tasks` too.
    let files = t.self_join_files();
    assert_eq!(files.len(), t.procs.len() + t.shared.len());
    for f in &files {
        let name = f.file_name().unwrap().to_str().unwrap();
        let v2 = t.v2.as_deref() == f.parent();
        assert_eq!(name, if v2 { "cgroup.procs" } else { "tasks" }, "{f:?}");
    }
    let mut child = spawn_in(&t, "exec sleep 100");
    let pid = child.id() as i32;
    assert_eq!(t.pids(), vec![pid]);
    // Every hierarchy the task has a directory in lists it, and /proc says so too.
    for p in &t.procs {
        assert_eq!(get(p), pid.to_string(), "{p:?}");
    }
    let cg = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let inside = cg
        .lines()
        .filter(|l| l.ends_with(&format!("/{}/task", g.parent)))
        .count();
    assert_eq!(inside, t.procs.len(), "{cg}");
    let shared = cg
        .lines()
        .filter(|l| l.ends_with(&format!(":/{}", g.parent)))
        .count();
    assert_eq!(shared, t.shared.len(), "{cg}");
    t.kill_all().unwrap();
    wait_timeout(&mut child, Duration::from_secs(5)).expect("sleep survived kill_all");
    t.remove().unwrap();
}

#[test]
fn kill_all_takes_every_descendant_with_and_without_cgroup_kill() {
    let Some(l) = layout() else { return };
    for use_kill_file in [true, false] {
        let mut g = Guard::new(&l);
        let mut t = g.create(&Limits::default());
        if !use_kill_file {
            t.kill = None; // force the freeze–kill–thaw path
        }
        let mut sh = spawn_in(
            &t,
            "sleep 100 & sleep 100 & (sleep 100 &) ; trap '' TERM; wait",
        );
        let until = Instant::now() + Duration::from_secs(5);
        while t.pids().len() < 4 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        let before = t.pids();
        assert!(before.len() >= 4, "{before:?}");
        assert!(before.contains(&(sh.id() as i32)));
        t.kill_all().unwrap();
        assert!(
            t.pids().is_empty(),
            "survivors (cgroup.kill={use_kill_file})"
        );
        let st = wait_timeout(&mut sh, Duration::from_secs(5)).expect("sh survived");
        assert_eq!(st.signal(), Some(libc::SIGKILL));
        // A process leaves its cgroup early in its exit, before it is a zombie: each is
        // given a moment to finish dying.
        let dead = |p: i32| {
            !Path::new(&format!("/proc/{p}")).exists()
                || fs::read_to_string(format!("/proc/{p}/stat"))
                    .unwrap_or_default()
                    .contains(") Z")
        };
        let until = Instant::now() + Duration::from_secs(5);
        for p in before {
            while !dead(p) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(5));
            }
            assert!(dead(p), "pid {p} alive");
        }
        t.remove().unwrap();
    }
}

#[test]
fn remove_kills_a_busy_cgroup_first() {
    let Some(l) = layout() else { return };
    let mut g = Guard::new(&l);
    let t = g.create(&Limits::default());
    let mut child = spawn_in(&t, "exec sleep 100");
    let until = Instant::now() + Duration::from_secs(5);
    while t.pids().is_empty() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
    t.remove().unwrap();
    assert!(t.dirs.iter().all(|d| !d.exists()));
    let st = wait_timeout(&mut child, Duration::from_secs(5)).expect("child survived remove");
    assert_eq!(st.signal(), Some(libc::SIGKILL));
}

#[test]
fn oom_killed_after_exceeding_32_mib() {
    let Some(l) = layout() else { return };
    let mut g = Guard::new(&l);
    let t = g.create(&Limits {
        memory_bytes: 32 * MIB,
        ..Limits::default()
    });
    assert!(!t.oom_killed());
    let mut child = spawn_in(&t, "exec tail /dev/zero");
    let st =
        wait_timeout(&mut child, Duration::from_secs(30)).expect("tail /dev/zero was not killed");
    assert_eq!(st.signal(), Some(libc::SIGKILL), "{st:?}");
    assert!(t.oom_killed(), "oom_killed false after an OOM kill");
    let s = t.stats();
    eprintln!("after oom: {s}");
    assert!(
        s["memory"]["max_usage_bytes"].as_u64().unwrap() > 16 * MIB,
        "{s}"
    );
    t.remove().unwrap();

    // a task that stays under its limit is not reported as OOM-killed
    let mut g2 = Guard::new(&l);
    let t2 = g2.create(&Limits {
        memory_bytes: 32 * MIB,
        ..Limits::default()
    });
    let mut ok = spawn_in(&t2, "head -c 1000000 /dev/zero | wc -c");
    let st = wait_timeout(&mut ok, Duration::from_secs(10)).unwrap();
    assert!(st.success());
    assert!(!t2.oom_killed());
}

#[test]
fn pids_max_holds() {
    let Some(l) = layout() else { return };
    let mut g = Guard::new(&l);
    let t = g.create(&Limits {
        pids_max: 8,
        ..Limits::default()
    });
    let mut sh = spawn_in(
        &t,
        "for i in $(seq 30); do sleep 5 & done 2>/dev/null; sleep 1",
    );
    let mut max_seen = 0;
    let until = Instant::now() + Duration::from_millis(800);
    while Instant::now() < until {
        max_seen = max_seen.max(t.stats()["pids"]["current"].as_u64().unwrap());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(max_seen <= 8, "{max_seen}");
    assert!(max_seen >= 2, "{max_seen}");
    t.kill_all().unwrap();
    let _ = wait_timeout(&mut sh, Duration::from_secs(5));
}

#[test]
fn stats_of_a_busy_child() {
    let Some(l) = layout() else { return };
    let mut g = Guard::new(&l);
    let t = g.create(&Limits {
        cpu_mhz: 1000,
        memory_bytes: 256 * MIB,
        ..Limits::default()
    });
    // ~8 MiB in a shell variable, then spin
    let mut child = spawn_in(
        &t,
        "x=$(head -c 8000000 /dev/zero | tr '\\0' a); i=0; while [ $i -lt 100000000 ]; do i=$((i+1)); done",
    );
    // Sample until the child has burnt 50 ms of CPU and holds its 8 MiB (a loaded CI box
    // may take a while to get there), then check every field of that one sample.
    let until = Instant::now() + Duration::from_secs(20);
    let s = loop {
        let s = t.stats();
        let cpu = s["cpu"]["total_ns"].as_u64().unwrap_or(0);
        let rss = s["memory"]["rss_bytes"].as_u64().unwrap_or(0);
        if (cpu > 50_000_000 && rss > 4 * MIB) || Instant::now() > until {
            break s;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    eprintln!("{s}");
    let n = |a: &str, b: &str| s[a][b].as_u64().unwrap();
    assert!(n("cpu", "total_ns") > 50_000_000, "{s}");
    assert!(n("cpu", "user_ns") > 0, "{s}");
    // user_ns comes from tick-based cpuacct.stat (10 ms steps), total_ns from the precise
    // cpuacct.usage: allow the tick granularity between them.
    assert!(
        n("cpu", "total_ns") + 20_000_000 >= n("cpu", "user_ns"),
        "{s}"
    );
    assert!(n("memory", "usage_bytes") > MIB, "{s}");
    assert!(n("memory", "rss_bytes") > MIB, "{s}");
    assert!(n("memory", "max_usage_bytes") >= n("memory", "usage_bytes"));
    assert!(n("pids", "current") >= 1);
    assert!(s["timestamp_ns"].as_u64().unwrap() > 0);

    // cheap enough for a sampling loop
    let start = Instant::now();
    for _ in 0..100 {
        let _ = t.stats();
    }
    eprintln!("stats(): {:?} per call", start.elapsed() / 100);

    t.kill_all().unwrap();
    let st = wait_timeout(&mut child, Duration::from_secs(5)).unwrap();
    assert_eq!(st.signal(), Some(libc::SIGKILL));
}

#[test]
fn kill_all_stops_a_fork_loop() {
    let Some(l) = layout() else { return };
    for use_kill_file in [true, false] {
        let mut g = Guard::new(&l);
        let mut t = g.create(&Limits {
            pids_max: 64,
            ..Limits::default()
        });
        if !use_kill_file {
            t.kill = None;
        }
        let mut sh = spawn_in(&t, "trap '' TERM; while :; do sleep 100 & done 2>/dev/null");
        let until = Instant::now() + Duration::from_secs(5);
        while t.pids().len() <= 5 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(t.pids().len() > 5, "{:?}", t.pids());
        let start = Instant::now();
        t.kill_all().unwrap();
        eprintln!(
            "fork loop killed in {:?} (cgroup.kill={use_kill_file})",
            start.elapsed()
        );
        assert!(t.pids().is_empty());
        // (sh may already have exited on its own when fork hit pids.max)
        wait_timeout(&mut sh, Duration::from_secs(5)).expect("sh survived");
        t.remove().unwrap();
    }
}

/// The v1 code path alone (what a v1-only host runs), on this machine's v1 controllers.
#[test]
fn v1_only_layout_on_the_real_controllers() {
    let Some(l) = layout() else { return };
    let Layout::Hybrid { controllers, .. } = &l else {
        eprintln!("SKIP: not a hybrid machine; the v1-only path is covered where the layout is v1");
        return;
    };
    let v1 = Layout::V1 {
        controllers: controllers.clone(),
    };
    let mut g = Guard::new(&v1);
    let t = g.create(&Limits {
        memory_bytes: 32 * MIB,
        pids_max: 32,
        cpu_mhz: 300,
        cores: 0,
        freezer: false,
    });
    assert!(t.v2.is_none() && t.kill.is_none() && t.layout == "v1");
    let mut child = spawn_in(&t, "exec tail /dev/zero");
    let st = wait_timeout(&mut child, Duration::from_secs(30)).expect("not OOM-killed");
    assert_eq!(st.signal(), Some(libc::SIGKILL));
    assert!(t.oom_killed());
    let mut sleeper = spawn_in(&t, "exec sleep 100");
    let until = Instant::now() + Duration::from_secs(5);
    while t.pids().is_empty() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(t.stats()["pids"]["current"], 1);
    t.kill_all().unwrap();
    let st = wait_timeout(&mut sleeper, Duration::from_secs(5)).expect("sleep survived");
    assert_eq!(st.signal(), Some(libc::SIGKILL));
    t.remove().unwrap();
    assert!(t.dirs.iter().all(|d| !d.exists()));
}

/// A placeholder name such as a spare supervisor gives a cgroup made ahead of its task.
fn spare_name() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "spare-{:x}{:04x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The layout a spare makes cgroups with ahead of time: exec's, when it has v1 hierarchies
/// (cgroup2 directories cannot be renamed).
fn spare_layout(l: &Layout) -> Option<Layout> {
    let e = l.for_exec();
    if matches!(e, Layout::V2 { .. }) {
        eprintln!("SKIP: pure cgroup2 host: nothing is created ahead or renamed");
        return None;
    }
    Some(e)
}

/// `/proc/<pid>/cgroup`'s path in the v1 hierarchy that has controller `c`.
fn proc_cgroup_of(pid: u32, c: &str) -> String {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    text.lines()
        .find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, ctls, path) = (f.next()?, f.next()?, f.next()?);
            ctls.split(',').any(|x| x == c).then(|| path.to_string())
        })
        .unwrap_or_else(|| panic!("no {c} line in /proc/{pid}/cgroup: {text}"))
}

fn wait_pids(t: &TaskCgroup, n: usize) {
    let until = Instant::now() + Duration::from_secs(5);
    while t.pids().len() < n && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn rename_keeps_processes_and_apply_limits_after() {
    let Some(l) = layout() else { return };
    let Some(l) = spare_layout(&l) else { return };
    let mut g = Guard::new(&l);
    let spare = spare_name();
    let mut t = g.create_named(&spare, &Limits::default());
    g.names.push("task".into());
    let child = spawn_in(&t, "exec sleep 100");
    let pid = child.id();
    g.children.push(child);
    wait_pids(&t, 1);
    assert_eq!(t.pids(), vec![pid as i32]);
    let old = t.clone();

    t.rename("task").unwrap_or_else(|e| panic!("rename: {e}"));
    eprintln!("{}", serde_json::to_string_pretty(&t).unwrap());
    assert_eq!(t.dirs.len(), old.dirs.len());
    for d in &old.dirs {
        assert!(!d.exists(), "{} left", d.display());
    }
    for d in &t.dirs {
        assert!(d.is_dir(), "{}", d.display());
        assert!(d.ends_with(format!("{}/task", g.parent)), "{}", d.display());
    }
    assert!(t.v2.is_none() && t.kill.is_none());
    let want = format!("/{}/task", g.parent);
    for (c, d) in &t.v1 {
        assert!(t.dirs.contains(d), "{c}: {}", d.display());
        assert_eq!(proc_cgroup_of(pid, c), want, "{c}");
    }
    assert_eq!(t.procs.len(), t.dirs.len());
    for p in &t.procs {
        assert!(t.dirs.contains(&p.parent().unwrap().to_path_buf()));
        assert_eq!(get(p), pid.to_string(), "{}", p.display());
    }
    assert_eq!(t.pids(), vec![pid as i32]);
    // Made like a spare's placeholder (no cores, no freezer): no cpuset or freezer dir of
    // its own, the parent's joined there instead; `named` describes a superset.
    let n = TaskCgroup::named(&l, &g.parent, "task").unwrap();
    assert!(t.dirs.iter().all(|d| n.dirs.contains(d)), "{n:?}");
    for c in ["cpuset", "freezer"] {
        if let Some(m) = mounts(&l).into_iter().find(|m| m.ends_with(c)) {
            assert!(t.shared.contains(&m.join(&g.parent)), "{c}: {:?}", t.shared);
            assert_eq!(proc_cgroup_of(pid, c), format!("/{}", g.parent), "{c}");
        }
    }
    g.tcg = Some(t.clone());

    // the task's limits, once it is known
    t.apply_limits(&Limits {
        cpu_mhz: 500,
        cores: 0,
        memory_bytes: 64 * MIB,
        pids_max: 16,
        freezer: false,
    })
    .unwrap_or_else(|e| panic!("apply_limits: {e}"));
    assert_v1_limits(&t);
    let m = &t.v1["memory"];
    let memsw = m.join("memory.memsw.limit_in_bytes");

    // a higher limit later: memsw has to be raised before the limit
    t.apply_limits(&Limits {
        memory_bytes: 128 * MIB,
        ..Limits::default()
    })
    .unwrap_or_else(|e| panic!("apply_limits again: {e}"));
    assert_eq!(
        get(&m.join("memory.limit_in_bytes")),
        (128 * MIB).to_string()
    );
    if memsw.exists() {
        assert_eq!(get(&memsw), (128 * MIB).to_string());
    }

    t.remove().unwrap();
    assert!(t.dirs.iter().all(|d| !d.exists()));
}

#[test]
fn rename_onto_an_existing_cgroup_is_refused() {
    let Some(l) = layout() else { return };
    let Some(l) = spare_layout(&l) else { return };
    let mut g = Guard::new(&l);
    let spare = spare_name();
    let mut a = g.create_named(&spare, &Limits::default());
    let b = g.create_named(
        "task",
        &Limits {
            memory_bytes: 32 * MIB,
            ..Limits::default()
        },
    );
    let child = spawn_in(&a, "exec sleep 100");
    let pid = child.id() as i32;
    g.children.push(child);
    wait_pids(&a, 1);
    let before = a.clone();

    let e = a.rename("task").unwrap_err();
    eprintln!("{e}");
    assert_eq!(e.code, Code::Isolation);
    assert!(
        e.message
            .contains("already exists (refusing to adopt a cgroup that is not ours)"),
        "{e}"
    );
    assert_eq!(a, before);
    assert!(a.dirs.iter().all(|d| d.is_dir()));
    assert!(b.dirs.iter().all(|d| d.is_dir()));
    assert_eq!(a.pids(), vec![pid]);
    assert!(b.pids().is_empty());
    assert_eq!(
        get(&b.v1["memory"].join("memory.limit_in_bytes")),
        (32 * MIB).to_string()
    );

    // taken in one later hierarchy only: the hierarchies renamed before are renamed back
    let pids_mount = a.v1["pids"].parent().unwrap().to_path_buf();
    let foreign = pids_mount.join("foreign");
    fs::create_dir(&foreign).unwrap();
    let e = a.rename("foreign");
    let _ = fs::remove_dir(&foreign);
    let e = e.unwrap_err();
    eprintln!("{e}");
    assert!(
        e.message.contains("already exists") && e.message.contains(&*foreign.to_string_lossy()),
        "{e}"
    );
    assert_eq!(a, before);
    assert!(a.dirs.iter().all(|d| d.is_dir()));
    assert!(a.dirs.iter().all(|d| !d.with_file_name("foreign").exists()));
    for c in a.v1.keys() {
        assert_eq!(
            proc_cgroup_of(pid as u32, c),
            format!("/{}/{spare}", g.parent)
        );
    }

    a.remove().unwrap();
    b.remove().unwrap();
}

#[test]
fn named_removes_a_set_and_is_fine_with_none() {
    let Some(l) = layout() else { return };
    let exec = l.for_exec();
    let mut g = Guard::new(&l);
    let spare = spare_name();
    let t = TaskCgroup::create(&exec, &g.parent, &spare, &Limits::default()).unwrap();
    g.tcg = Some(t.clone());
    let n = TaskCgroup::named(&exec, &g.parent, &spare).unwrap();
    assert!(t.dirs.iter().all(|d| n.dirs.contains(d)), "{n:?}");
    // a leftover process (the remove of a busy cgroup kills it first)
    let mut child = spawn_in(&t, "exec sleep 100");
    wait_pids(&t, 1);
    n.remove().unwrap();
    assert!(t.dirs.iter().all(|d| !d.exists()));
    let st = wait_timeout(&mut child, Duration::from_secs(5)).expect("child survived");
    assert_eq!(st.signal(), Some(libc::SIGKILL));
    // nothing there (any more, or ever, in any hierarchy of the full layout): fine
    n.remove().unwrap();
    TaskCgroup::named(&l, &g.parent, &spare)
        .unwrap()
        .remove()
        .unwrap();
    TaskCgroup::named(&l, &g.parent, "never-made")
        .unwrap()
        .remove()
        .unwrap();
    for m in mounts(&exec) {
        assert!(m.join(&g.parent).is_dir(), "the parent stays");
    }
}

#[test]
fn for_exec_on_hybrid_uses_the_v1_hierarchies_only() {
    let Some(l) = layout() else { return };
    let Layout::Hybrid {
        controllers,
        unified,
    } = &l
    else {
        assert_eq!(l.for_exec(), l);
        eprintln!("SKIP: not a hybrid machine; for_exec is the layout itself");
        return;
    };
    let exec = l.for_exec();
    assert_eq!(
        exec,
        Layout::V1 {
            controllers: controllers.clone()
        }
    );
    let mut g = Guard::new(&exec);
    let t = g.create(&Limits::default());
    assert_eq!(t.layout, "v1");
    assert!(t.v2.is_none() && !t.v2_controllers && t.kill.is_none());
    assert!(!unified.join(&g.parent).join("task").exists());
    assert!(t.dirs.iter().all(|d| !d.starts_with(unified)));
    assert!(t.procs.iter().all(|p| !p.ends_with("cgroup.kill")) && t.procs.len() == t.dirs.len());
    t.remove().unwrap();
}

/// Kernel device control (v1 `devices`, v2 the BPF device program): a process in the
/// task's cgroup opens the devices of the task's `/dev` and nothing else, whatever node
/// it finds (here made on the host's filesystem, which allows device nodes).
#[test]
fn device_control_allows_only_the_tasks_devices() {
    let Some(l) = layout() else { return };
    let mut g = Guard::new(&l);
    let t = g.create(&Limits::default());
    let dir = std::env::temp_dir().join(format!("execdriver-devs-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir(&dir).unwrap();
    let node = |name: &str, major: u64, minor: u64| {
        let p = dir.join(name);
        nix::sys::stat::mknod(
            &p,
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(major, minor),
        )
        .unwrap();
        p.to_str().unwrap().to_string()
    };
    let null = node("null", 1, 3);
    let kmsg = node("kmsg", 1, 11);
    // Outside the cgroup, both open (the test's own check of the nodes).
    assert!(fs::File::open(&kmsg).is_ok() && fs::File::open(&null).is_ok());
    let disk = dir.join("disk");
    let script = format!(
        "echo x > {null} || exit 10; \
         head -c 1 {kmsg} 2>/dev/null && exit 11; \
         mknod {} b 8 0 2>/dev/null && exit 12; exit 0",
        disk.display()
    );
    let mut sh = spawn_in(&t, &script);
    let st = wait_timeout(&mut sh, Duration::from_secs(10)).unwrap();
    let _ = fs::remove_dir_all(&dir);
    assert_eq!(
        st.code(),
        Some(0),
        "exit {st:?}: 10 = an allowed device refused, 11 = /dev/kmsg opened, 12 = a disk node made"
    );
}

/// Pure v2: a controller that cannot be delegated to the driver's cgroup parent (here a
/// process sits in a directory above it, so the kernel refuses to enable controllers
/// below it) is named, as the fingerprint then reports it (`unhealthy`), instead of
/// every start failing.
#[test]
fn an_undelegatable_controller_is_named() {
    let Some(l) = layout() else { return };
    let Layout::V2 { root } = &l else {
        eprintln!(
            "SKIP: pure cgroup v2 only: {} here (tests/vm runs it on v2)",
            l.name()
        );
        return;
    };
    assert!(
        l.controllers().iter().any(|c| c == "memory"),
        "{:?}",
        l.controllers()
    );
    let parent = unique_parent();
    let dir = root.join(&parent);
    fs::create_dir(&dir).unwrap();
    let mut sleeper = Command::new("sleep").arg("60").spawn().unwrap();
    fs::write(dir.join("cgroup.procs"), sleeper.id().to_string()).unwrap();
    let e = l.usable_under(&format!("{parent}/inner"));
    // The driver says so too: its fingerprint is unhealthy, naming the controller, and an
    // exec start is refused with that reason (not failed at the cgroup's creation).
    common::init();
    let conf = |v: serde_json::Value| common::op(execdriver::driver::configure, v).unwrap();
    conf(serde_json::json!({"cgroup_parent": format!("{parent}/inner")}));
    let f = execdriver::driver::fingerprint(None).unwrap();
    let d = common::TempDir::new("undelegated");
    let refused = common::start(serde_json::json!({"name": "u", "driver": "exec",
        "alloc_dir": d.path(), "config": {"command": "/bin/true"}}));
    conf(serde_json::json!({}));
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    let _ = fs::remove_dir(dir.join("inner"));
    let _ = fs::remove_dir(&dir);
    let e = e.unwrap_err();
    assert!(e.contains("memory") && e.contains("delegated"), "{e}");
    assert_eq!(f["health"], "unhealthy", "{f}");
    let desc = f["health_description"].as_str().unwrap();
    assert!(desc.contains("memory") && desc.contains("delegated"), "{f}");
    let refused = refused.unwrap_err();
    assert_eq!(refused.code, Code::Unsupported, "{refused}");
    assert!(refused.message.contains("memory"), "{refused}");
    // Where nothing is in the way, the same parent is usable.
    l.usable_under(&parent).unwrap();
    let _ = fs::remove_dir(&dir);
}
