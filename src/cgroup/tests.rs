//! Unit tests against fake cgroupfs directories (see `fake` in mod.rs).

use super::*;
use std::sync::atomic::{AtomicU64, Ordering};

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "execdriver-cgfake-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn put(dir: &Path, files: &[(&str, &str)]) {
    fs::create_dir_all(dir).unwrap();
    for (f, v) in files {
        fs::write(dir.join(f), v).unwrap();
    }
}

fn get(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

const MIB: u64 = 1024 * 1024;

fn limits() -> Limits {
    Limits {
        cpu_mhz: 500,
        cores: 2,
        memory_bytes: 64 * MIB,
        pids_max: 16,
        freezer: true,
    }
}

/// A v2 root that looks like the kernel's, and a template for new directories.
fn fake_v2(root: &Path, with_swap: bool) {
    put(
        root,
        &[
            (
                "cgroup.controllers",
                "cpuset cpu io memory hugetlb pids rdma",
            ),
            ("cgroup.subtree_control", ""),
            ("cpuset.cpus.effective", "0-3"),
            ("cgroup.procs", ""),
        ],
    );
    let t = root.join(".template");
    put(
        &t,
        &[
            ("cgroup.controllers", "cpuset cpu memory pids"),
            ("cgroup.subtree_control", ""),
            ("cgroup.procs", ""),
            ("cgroup.kill", ""),
            ("cgroup.freeze", "0"),
            ("memory.max", "max"),
            ("cpu.weight", "100"),
            ("pids.max", "max"),
            ("cpuset.cpus", ""),
            ("cpuset.cpus.effective", "0-3"),
        ],
    );
    if with_swap {
        put(&t, &[("memory.swap.max", "max")]);
    }
}

/// v1 mounts at `<root>/<controller>` with kernel-like root files and templates.
fn fake_v1(root: &Path) {
    for c in V1_CONTROLLERS {
        put(&root.join(c), &[("cgroup.procs", "")]);
        put(&root.join(c).join(".template"), &[("cgroup.procs", "")]);
    }
    put(
        &root.join("cpuset"),
        &[("cpuset.cpus", "0-3"), ("cpuset.mems", "0")],
    );
    put(
        &root.join("cpuset/.template"),
        &[("cpuset.cpus", ""), ("cpuset.mems", "")],
    );
    put(
        &root.join("memory/.template"),
        &[
            ("memory.limit_in_bytes", "9223372036854771712"),
            ("memory.memsw.limit_in_bytes", "9223372036854771712"),
            ("memory.swappiness", "60"),
        ],
    );
    put(&root.join("cpu/.template"), &[("cpu.shares", "1024")]);
    put(&root.join("pids/.template"), &[("pids.max", "max")]);
    put(
        &root.join("freezer/.template"),
        &[("freezer.state", "THAWED")],
    );
    put(
        &root.join("devices/.template"),
        &[("devices.deny", ""), ("devices.allow", "")],
    );
}

#[test]
fn detects_this_machines_hybrid_layout() {
    let mi = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    let l = Layout::from_mountinfo(mi).unwrap();
    assert_eq!(l.name(), "hybrid");
    let Layout::Hybrid {
        controllers,
        unified,
    } = l
    else {
        panic!()
    };
    assert_eq!(unified, PathBuf::from("/sys/fs/cgroup/unified"));
    assert_eq!(
        controllers["memory"],
        PathBuf::from("/sys/fs/cgroup/memory")
    );
    assert_eq!(controllers.len(), 7, "{controllers:?}");
    assert!(controllers.contains_key("devices"));
}

#[test]
fn detects_v1_comounted_v2_and_none() {
    let v1 = "29 26 0:26 / /sys/fs/cgroup/cpu,cpuacct rw shared:10 - cgroup cgroup rw,cpu,cpuacct\n\
              30 26 0:27 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
    let l = Layout::from_mountinfo(v1).unwrap();
    assert_eq!(l.name(), "v1");
    let Layout::V1 { controllers } = l else {
        panic!()
    };
    assert_eq!(controllers["cpu"], controllers["cpuacct"]);

    let v2 = "25 20 0:22 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n\
              26 20 0:23 / /mnt/with\\040space rw - tmpfs tmpfs rw\n";
    assert_eq!(
        Layout::from_mountinfo(v2).unwrap(),
        Layout::v2_at(Path::new("/sys/fs/cgroup"))
    );
    // a v1 name=systemd mount alone does not make a v1 layout
    let v2s =
        format!("{v2}27 20 0:24 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd\n");
    assert_eq!(Layout::from_mountinfo(&v2s).unwrap().name(), "v2");

    let e = Layout::from_mountinfo("26 20 0:23 / /tmp rw - tmpfs tmpfs rw\n").unwrap_err();
    assert_eq!(e.code, Code::Unsupported);
    assert_eq!(unescape_mountinfo("/mnt/with\\040space"), "/mnt/with space");
}

#[test]
fn rejects_bad_names() {
    let d = TempDir::new();
    let l = Layout::v2_at(&d.0);
    for (parent, name) in [
        ("execdriver", ""),
        ("execdriver", "a/b"),
        ("execdriver", ".."),
        ("execdriver", "."),
        ("", "t"),
        ("/abs", "t"),
        ("a/../b", "t"),
        ("a//b", "t"),
        ("execdriver", "x\ny"),
    ] {
        let e = TaskCgroup::create(&l, parent, name, &Limits::default()).unwrap_err();
        assert_eq!(e.code, Code::InvalidConfig, "{parent:?} {name:?}: {e}");
    }
    assert_eq!(
        fs::read_dir(&d.0).unwrap().count(),
        0,
        "nothing was created"
    );
}

#[test]
fn weight_and_shares() {
    assert_eq!(cpu_shares(0), 2);
    assert_eq!(cpu_shares(100), 100);
    assert_eq!(cpu_shares(1_000_000), 262_144);
    assert_eq!(cpu_weight(2), 1);
    assert_eq!(cpu_weight(262_144), 10_000);
    assert_eq!(cpu_weight(1024), 39);
    assert_eq!(cpu_weight(500), 19);
}

#[test]
fn cpu_lists() {
    assert_eq!(
        v1::parse_cpu_list("0-3,8,10-11\n").unwrap(),
        vec![0, 1, 2, 3, 8, 10, 11]
    );
    assert_eq!(v1::pick_cpus("2-5", 3).unwrap(), "2,3,4");
    assert!(v1::pick_cpus("0-1", 3).is_err());
    assert!(v1::parse_cpu_list("3-1").is_err());
    assert!(v1::parse_cpu_list("x").is_err());
}

#[test]
fn format_pid() {
    let mut b = [0u8; 12];
    for v in [0, 7, 1234, i32::MAX, -1, i32::MIN] {
        let n = format_i32(v, &mut b);
        assert_eq!(std::str::from_utf8(&b[..n]).unwrap(), v.to_string());
    }
}

#[test]
fn v2_create_writes_limits_and_remove_leaves_parent() {
    let d = TempDir::new();
    fake_v2(&d.0, true);
    let l = Layout::v2_at(&d.0);
    let t = TaskCgroup::create(&l, "execdriver/nested", "task1", &limits()).unwrap();
    let leaf = d.0.join("execdriver/nested/task1");
    assert_eq!(t.dirs, vec![leaf.clone()]);
    assert_eq!(t.v2.as_deref(), Some(leaf.as_path()));
    assert!(t.v2_controllers && t.v1.is_empty() && t.layout == "v2");
    assert_eq!(t.self_join_files(), vec![leaf.join("cgroup.procs")]);
    assert_eq!(t.kill, Some(leaf.join("cgroup.kill")));
    for dir in [
        d.0.clone(),
        d.0.join("execdriver"),
        d.0.join("execdriver/nested"),
    ] {
        let sc = get(&dir.join("cgroup.subtree_control"));
        for c in ["+cpu", "+memory", "+pids", "+cpuset"] {
            assert!(
                sc.split_whitespace().any(|x| x == c),
                "{}: {sc}",
                dir.display()
            );
        }
    }
    assert_eq!(get(&leaf.join("memory.max")), (64 * MIB).to_string());
    assert_eq!(get(&leaf.join("memory.swap.max")), "0");
    assert_eq!(get(&leaf.join("cpu.weight")), "19");
    assert_eq!(get(&leaf.join("pids.max")), "16");
    assert_eq!(get(&leaf.join("cpuset.cpus")), "0,1");

    // a second cgroup of the same name is refused, and the first is untouched
    let e = TaskCgroup::create(&l, "execdriver/nested", "task1", &limits()).unwrap_err();
    assert_eq!(e.code, Code::Isolation);
    assert!(e.message.contains("already exists"), "{e}");
    assert!(leaf.exists());

    // serialized paths are all a recovered host needs
    let t2: TaskCgroup = serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
    assert_eq!(t2, t);
    t2.join(4321).unwrap();
    assert_eq!(t2.pids(), vec![4321]);
    fs::write(leaf.join("cgroup.procs"), "").unwrap();

    t2.remove().unwrap();
    assert!(!leaf.exists());
    assert!(d.0.join("execdriver/nested").exists(), "the parent stays");
    t2.remove().unwrap(); // idempotent
    assert!(t2.pids().is_empty());
    assert!(!t2.oom_killed());
}

#[test]
fn v2_no_limits_and_no_swap_accounting() {
    let d = TempDir::new();
    fake_v2(&d.0, false);
    let t = TaskCgroup::create(&Layout::v2_at(&d.0), "p", "t", &Limits::default()).unwrap();
    let leaf = d.0.join("p/t");
    assert_eq!(get(&leaf.join("memory.max")), "max");
    assert_eq!(get(&leaf.join("pids.max")), "max");
    assert_eq!(get(&leaf.join("cpuset.cpus")), "");
    assert_eq!(get(&leaf.join("cpu.weight")), "1"); // cpu_mhz 0 → shares 2 → weight 1
    assert!(
        !leaf.join("memory.swap.max").exists(),
        "never creates control files"
    );
    t.remove().unwrap();
}

#[test]
fn v2_failures_leave_nothing() {
    // too many cores: fails after the leaf was made, which is removed again
    let d = TempDir::new();
    fake_v2(&d.0, true);
    let l = Layout::v2_at(&d.0);
    let e = TaskCgroup::create(
        &l,
        "p",
        "t",
        &Limits {
            cores: 8,
            ..limits()
        },
    )
    .unwrap_err();
    assert_eq!(e.code, Code::Isolation);
    assert!(
        e.message.contains("8 cores requested") && e.message.contains("/p/t"),
        "{e}"
    );
    assert!(!d.0.join("p/t").exists());

    // a missing controller: fails before anything is made
    fs::write(d.0.join("cgroup.controllers"), "cpu io pids").unwrap();
    let e = TaskCgroup::create(&l, "p", "u", &limits()).unwrap_err();
    assert_eq!(e.code, Code::Isolation);
    assert!(
        e.message.contains("memory controller is not available"),
        "{e}"
    );
    assert!(!d.0.join("p/u").exists());
    assert!(l.usable().unwrap_err().contains("memory"));
}

#[test]
fn v2_oom_and_stats() {
    let d = TempDir::new();
    fake_v2(&d.0, true);
    let t = TaskCgroup::create(&Layout::v2_at(&d.0), "p", "t", &limits()).unwrap();
    let leaf = d.0.join("p/t");
    put(
        &leaf,
        &[(
            "memory.events",
            "low 0\nhigh 0\nmax 12\noom 1\noom_kill 0\noom_group_kill 0\n",
        )],
    );
    assert!(!t.oom_killed());
    put(
        &leaf,
        &[(
            "memory.events",
            "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 0\n",
        )],
    );
    assert!(t.oom_killed());

    put(
        &leaf,
        &[
            ("memory.stat", "anon 1000\nfile 2000\nkernel 30\nshmem 0\n"),
            ("memory.current", "5000\n"),
            ("memory.peak", "6000\n"),
            ("memory.swap.current", "7\n"),
            (
                "cpu.stat",
                "usage_usec 10\nuser_usec 6\nsystem_usec 4\nnr_periods 9\nnr_throttled 3\nthrottled_usec 2\n",
            ),
            ("pids.current", "5\n"),
        ],
    );
    let s = t.stats();
    assert_eq!(
        s["memory"],
        serde_json::json!({"rss_bytes": 1000, "cache_bytes": 2000, "swap_bytes": 7,
                           "usage_bytes": 5000, "max_usage_bytes": 6000, "measured": ["rss_bytes", "cache_bytes", "swap_bytes", "usage_bytes", "max_usage_bytes"]})
    );
    assert_eq!(
        s["cpu"],
        serde_json::json!({"user_ns": 6000, "system_ns": 4000, "total_ns": 10000,
                           "throttled_periods": 3, "throttled_ns": 2000, "measured": ["user_ns", "system_ns", "total_ns", "throttled_periods", "throttled_ns"]})
    );
    assert_eq!(s["pids"], serde_json::json!({"current": 5, "measured": ["current"]}));
    assert!(s["timestamp_ns"].as_u64().unwrap() > 1_600_000_000_000_000_000);
    t.remove().unwrap();
    // after removal every number reads 0 and is not measured, nothing panics
    let gone = t.stats();
    assert_eq!(gone["memory"]["usage_bytes"], 0);
    assert_eq!(gone["memory"]["measured"], serde_json::json!([]));
}

#[test]
fn v1_create_writes_limits() {
    let d = TempDir::new();
    fake_v1(&d.0);
    let l = Layout::v1_at(&d.0);
    let t = TaskCgroup::create(&l, "execdriver", "t1", &limits()).unwrap();
    assert_eq!(t.layout, "v1");
    assert_eq!(t.dirs.len(), 7);
    assert!(t.v2.is_none() && t.kill.is_none());
    let dir = |c: &str| d.0.join(c).join("execdriver/t1");
    // Devices: everything refused, then the allowlist (the fake keeps the last write).
    assert_eq!(get(&dir("devices").join("devices.deny")), "a");
    assert_eq!(get(&dir("devices").join("devices.allow")), "c 136:* rwm");
    for c in V1_CONTROLLERS {
        assert_eq!(t.v1[c], dir(c));
    }
    assert_eq!(t.procs.len(), 7);
    assert_eq!(t.procs[0], dir("cpuset").join("cgroup.procs"));
    assert_eq!(
        get(&dir("memory").join("memory.limit_in_bytes")),
        (64 * MIB).to_string()
    );
    assert_eq!(
        get(&dir("memory").join("memory.memsw.limit_in_bytes")),
        (64 * MIB).to_string()
    );
    assert_eq!(get(&dir("memory").join("memory.swappiness")), "0");
    assert_eq!(get(&dir("cpu").join("cpu.shares")), "500");
    assert_eq!(get(&dir("pids").join("pids.max")), "16");
    // the parent's cpuset was empty and got the root's; the task pins the first 2
    assert_eq!(get(&d.0.join("cpuset/execdriver/cpuset.cpus")), "0-3");
    assert_eq!(get(&d.0.join("cpuset/execdriver/cpuset.mems")), "0");
    assert_eq!(get(&dir("cpuset").join("cpuset.cpus")), "0,1");
    assert_eq!(get(&dir("cpuset").join("cpuset.mems")), "0");

    assert!(t.self_join_files().iter().all(|f| f.ends_with("tasks")));
    t.join(77).unwrap();
    for p in &t.procs {
        assert_eq!(get(p), "77");
    }
    assert_eq!(t.pids(), vec![77]);
    for p in &t.procs {
        fs::write(p, "").unwrap();
    }
    t.remove().unwrap();
    for c in V1_CONTROLLERS {
        assert!(!dir(c).exists());
        assert!(d.0.join(c).join("execdriver").exists());
    }
}

#[test]
fn v1_comounted_and_failure_rollback() {
    let d = TempDir::new();
    fake_v1(&d.0);
    let mut controllers = Layout::v1_map(&d.0);
    // cpu and cpuacct co-mounted at <root>/cpu
    controllers.insert("cpuacct".into(), d.0.join("cpu"));
    let l = Layout::V1 { controllers };
    let t = TaskCgroup::create(
        &l,
        "p",
        "t",
        &Limits {
            cores: 0,
            ..limits()
        },
    )
    .unwrap();
    // cores 0: no cpuset dir of its own; the task joins the parent, which got the
    // root's cpus and mems
    assert_eq!(t.dirs.len(), 5);
    assert!(!d.0.join("cpuset/p/t").exists() && !t.v1.contains_key("cpuset"));
    assert_eq!(t.v1["cpu"], t.v1["cpuacct"]);
    assert_eq!(t.procs.len(), 5);
    assert_eq!(t.shared, vec![d.0.join("cpuset/p")]);
    assert_eq!(get(&d.0.join("cpuset/p/cpuset.cpus")), "0-3");
    assert_eq!(get(&d.0.join("cpuset/p/cpuset.mems")), "0");
    assert_eq!(
        t.self_join_files().last(),
        Some(&d.0.join("cpuset/p/tasks"))
    );
    t.remove().unwrap();
    assert!(d.0.join("cpuset/p").is_dir(), "the shared parent stays");

    // a failure after every directory was made (more cores than the parent has)
    // removes all of them
    let e = TaskCgroup::create(
        &l,
        "p",
        "u",
        &Limits {
            cores: 5,
            ..limits()
        },
    )
    .unwrap_err();
    assert_eq!(e.code, Code::Isolation);
    assert!(
        e.message
            .contains("5 cores requested but only 4 cpus (0-3)"),
        "{e}"
    );
    for c in ["cpuset", "cpu", "memory", "pids", "freezer"] {
        assert!(!d.0.join(c).join("p/u").exists(), "{c} left behind");
    }
}

#[test]
fn v1_oom_and_stats() {
    assert!(!stats::v1_oom_killed(
        "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n"
    ));
    assert!(stats::v1_oom_killed(
        "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"
    ));
    assert!(stats::v1_oom_killed("oom_kill_disable 0\nunder_oom 1\n"));
    assert!(!stats::v1_oom_killed("oom_kill_disable 0\nunder_oom 0\n"));

    let d = TempDir::new();
    fake_v1(&d.0);
    let t = TaskCgroup::create(&Layout::v1_at(&d.0), "p", "t", &limits()).unwrap();
    let dir = |c: &str| d.0.join(c).join("p/t");
    put(
        &dir("memory"),
        &[(
            "memory.oom_control",
            "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
        )],
    );
    assert!(t.oom_killed());
    put(
        &dir("memory"),
        &[
            (
                "memory.stat",
                "cache 11\nrss 22\nswap 33\ntotal_cache 100\ntotal_rss 200\ntotal_swap 300\n",
            ),
            ("memory.usage_in_bytes", "400\n"),
            ("memory.max_usage_in_bytes", "500\n"),
        ],
    );
    put(
        &dir("cpuacct"),
        &[
            ("cpuacct.usage", "9000\n"),
            ("cpuacct.usage_user", "6000\n"),
            ("cpuacct.usage_sys", "3000\n"),
        ],
    );
    put(
        &dir("cpu"),
        &[(
            "cpu.stat",
            "nr_periods 5\nnr_throttled 2\nthrottled_time 777\n",
        )],
    );
    put(&dir("pids"), &[("pids.current", "3\n")]);
    let s = t.stats();
    assert_eq!(
        s["memory"],
        serde_json::json!({"rss_bytes": 200, "cache_bytes": 100, "swap_bytes": 300,
                           "usage_bytes": 400, "max_usage_bytes": 500, "measured": ["rss_bytes", "cache_bytes", "swap_bytes", "usage_bytes", "max_usage_bytes"]})
    );
    assert_eq!(
        s["cpu"],
        serde_json::json!({"user_ns": 6000, "system_ns": 3000, "total_ns": 9000,
                           "throttled_periods": 2, "throttled_ns": 777, "measured": ["user_ns", "system_ns", "total_ns", "throttled_periods", "throttled_ns"]})
    );
    assert_eq!(s["pids"]["current"], 3);

    // older kernels: cpuacct.stat in clock ticks
    fs::remove_file(dir("cpuacct").join("cpuacct.usage_user")).unwrap();
    put(&dir("cpuacct"), &[("cpuacct.stat", "user 3\nsystem 1\n")]);
    let tick = 1_000_000_000 / stats_clk_tck();
    assert_eq!(t.stats()["cpu"]["user_ns"], 3 * tick);
    assert_eq!(t.stats()["cpu"]["system_ns"], tick);
    t.remove().unwrap();
}

fn stats_clk_tck() -> u64 {
    crate::sys::process::clock_ticks()
}

#[test]
fn hybrid_uses_v1_limits_and_v2_tracking() {
    let d = TempDir::new();
    fake_v1(&d.0);
    put(
        &d.0.join("unified"),
        &[("cgroup.controllers", ""), ("cgroup.procs", "")],
    );
    put(
        &d.0.join("unified/.template"),
        &[
            ("cgroup.procs", ""),
            ("cgroup.kill", ""),
            ("cpu.stat", "usage_usec 1\n"),
        ],
    );
    let l = Layout::hybrid_at(&d.0);
    assert_eq!(l.name(), "hybrid");
    let t = TaskCgroup::create(&l, "execdriver", "h", &limits()).unwrap();
    let u = d.0.join("unified/execdriver/h");
    assert_eq!(t.v2.as_deref(), Some(u.as_path()));
    assert!(!t.v2_controllers);
    assert_eq!(t.kill, Some(u.join("cgroup.kill")));
    assert_eq!(t.procs[0], u.join("cgroup.procs"));
    assert_eq!(t.procs.len(), 8);
    let joins = t.self_join_files();
    assert_eq!(joins[0], u.join("cgroup.procs"));
    assert!(joins[1..].iter().all(|f| f.ends_with("tasks")));
    assert_eq!(t.dirs.len(), 8);
    assert_eq!(
        get(&d.0.join("memory/execdriver/h/memory.limit_in_bytes")),
        (64 * MIB).to_string()
    );
    // no controller was enabled in the unified hierarchy
    assert!(!d.0.join("unified/cgroup.subtree_control").exists());
    // oom and memory come from v1
    put(
        &d.0.join("memory/execdriver/h"),
        &[("memory.oom_control", "under_oom 0\noom_kill 3\n")],
    );
    assert!(t.oom_killed());
    t.remove().unwrap();
    assert!(!u.exists());
}

#[test]
fn usable_probes_and_cleans_up() {
    let d = TempDir::new();
    fake_v1(&d.0);
    put(&d.0.join("unified"), &[("cgroup.procs", "")]);
    Layout::hybrid_at(&d.0).usable().unwrap();
    for c in V1_CONTROLLERS.iter().chain(["unified"].iter()) {
        let left: Vec<_> = fs::read_dir(d.0.join(c))
            .unwrap()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("execdriver-probe")
            })
            .collect();
        assert!(left.is_empty(), "{c}: probe left behind");
    }
    let mut controllers = Layout::v1_map(&d.0);
    controllers.remove("pids");
    let e = Layout::V1 { controllers }.usable().unwrap_err();
    assert!(e.contains("pids"), "{e}");
}

/// Every plain file of `dir` with its contents, by name.
fn files(dir: &Path) -> BTreeMap<String, String> {
    fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| (e.file_name().to_string_lossy().into_owned(), get(&e.path())))
        .collect()
}

#[test]
fn v2_apply_limits_after_create_matches_create_with_limits() {
    let d = TempDir::new();
    fake_v2(&d.0, true);
    let l = Layout::v2_at(&d.0);
    let with = TaskCgroup::create(&l, "p", "with", &limits()).unwrap();
    let later = TaskCgroup::create(&l, "p", "later", &Limits::default()).unwrap();
    assert_eq!(get(&d.0.join("p/later/memory.max")), "max");
    assert_eq!(get(&d.0.join("p/later/cpuset.cpus")), "");
    later.apply_limits(&limits()).unwrap();
    let f = files(&d.0.join("p/later"));
    assert_eq!(f, files(&d.0.join("p/with")));
    assert_eq!(f["memory.max"], (64 * MIB).to_string());
    assert_eq!(f["memory.swap.max"], "0");
    assert_eq!(f["cpu.weight"], "19");
    assert_eq!(f["pids.max"], "16");
    assert_eq!(f["cpuset.cpus"], "0,1");

    // an error names the step and the path
    let e = later
        .apply_limits(&Limits {
            cores: 9,
            ..limits()
        })
        .unwrap_err();
    assert_eq!(e.code, Code::Isolation);
    assert!(
        e.message.contains("pin cores in") && e.message.contains("/p/later"),
        "{e}"
    );
    with.remove().unwrap();
    later.remove().unwrap();
}

#[test]
fn v1_apply_limits_after_create_matches_create_with_limits() {
    let d = TempDir::new();
    fake_v1(&d.0);
    let l = Layout::v1_at(&d.0);
    let with = TaskCgroup::create(&l, "p", "with", &limits()).unwrap();
    // Made with no limits but the same directories (a cpuset and a freezer of its own).
    let dirs_only = Limits {
        cores: 1,
        freezer: true,
        ..Limits::default()
    };
    let later = TaskCgroup::create(&l, "p", "later", &dirs_only).unwrap();
    later.apply_limits(&limits()).unwrap();
    for c in V1_CONTROLLERS {
        assert_eq!(files(&later.v1[c]), files(&with.v1[c]), "{c}");
    }
    assert_eq!(get(&later.v1["cpuset"].join("cpuset.cpus")), "0,1");
    assert_eq!(get(&later.v1["cpu"].join("cpu.shares")), "500");
    with.remove().unwrap();
    later.remove().unwrap();
}

#[test]
fn apply_limits_on_a_tracking_cgroup_writes_nothing() {
    let d = TempDir::new();
    fake_v2(&d.0, true);
    let t = TaskCgroup::create_tracking(&Layout::v2_at(&d.0), "p", "t")
        .unwrap()
        .unwrap();
    let before = files(&d.0.join("p/t"));
    t.apply_limits(&limits()).unwrap();
    assert_eq!(files(&d.0.join("p/t")), before);
    t.remove().unwrap();
}

#[test]
fn rename_refuses_a_cgroup2_directory() {
    for hybrid in [false, true] {
        let d = TempDir::new();
        let l = if hybrid {
            fake_v1(&d.0);
            put(&d.0.join("unified"), &[("cgroup.procs", "")]);
            put(&d.0.join("unified/.template"), &[("cgroup.procs", "")]);
            Layout::hybrid_at(&d.0)
        } else {
            fake_v2(&d.0, true);
            Layout::v2_at(&d.0)
        };
        let mut t = TaskCgroup::create(&l, "p", "ahead-1", &Limits::default()).unwrap();
        let before = t.clone();
        let e = t.rename("task").unwrap_err();
        assert_eq!(e.code, Code::Isolation);
        assert!(
            e.message.contains("a cgroup2 directory cannot be renamed"),
            "{e}"
        );
        assert_eq!(t, before);
        assert!(t.dirs.iter().all(|d| d.is_dir()));
        assert!(t.dirs.iter().all(|d| !d.with_file_name("task").exists()));
        // a bad name is a config error, whatever the layout
        assert_eq!(t.rename("a/b").unwrap_err().code, Code::InvalidConfig);
        t.remove().unwrap();
    }
}

#[test]
fn v1_rename_moves_every_path_and_rolls_back_on_a_taken_name() {
    let d = TempDir::new();
    fake_v1(&d.0);
    let mut controllers = Layout::v1_map(&d.0);
    controllers.insert("cpuacct".into(), d.0.join("cpu"));
    let l = Layout::V1 { controllers };
    let every_dir = Limits {
        cores: 1,
        freezer: true,
        ..Limits::default()
    };
    let mut t = TaskCgroup::create(&l, "p", "ahead-1", &every_dir).unwrap();
    t.join(42).unwrap();
    let old = t.clone();

    // taken in a later hierarchy only: the earlier renames are undone
    put(&d.0.join("pids/p/foreign"), &[("cgroup.procs", "7")]);
    let e = t.rename("foreign").unwrap_err();
    assert_eq!(e.code, Code::Isolation);
    assert!(
        e.message
            .contains("already exists (refusing to adopt a cgroup that is not ours)")
            && e.message.contains("pids/p/foreign"),
        "{e}"
    );
    assert_eq!(t, old);
    assert!(t.dirs.iter().all(|d| d.is_dir()));
    assert_eq!(get(&d.0.join("pids/p/foreign/cgroup.procs")), "7");
    assert!(!d.0.join("cpuset/p/foreign").exists());

    t.rename("task").unwrap();
    let dir = |c: &str| d.0.join(c).join("p/task");
    assert_eq!(t, TaskCgroup::named(&l, "p", "task").unwrap());
    assert_eq!(t.dirs.len(), 6);
    assert_eq!(t.v1["cpuacct"], dir("cpu"));
    for c in ["cpuset", "cpu", "memory", "pids", "freezer"] {
        assert!(dir(c).is_dir() && !d.0.join(c).join("p/ahead-1").exists());
        assert_eq!(t.v1[c], dir(c));
        assert_eq!(get(&dir(c).join("cgroup.procs")), "42", "{c}");
    }
    assert_eq!(t.procs[0], dir("cpuset").join("cgroup.procs"));
    assert_eq!(t.pids(), vec![42]);
    t.rename("task").unwrap(); // already so named: nothing to do
    for p in &t.procs {
        fs::write(p, "").unwrap();
    }
    t.remove().unwrap();
}

#[test]
fn named_describes_what_create_makes_and_removes_it() {
    let d = TempDir::new();
    fake_v1(&d.0);
    fake_v2(&d.0.join("unified"), false);
    for l in [
        Layout::v1_at(&d.0),
        Layout::hybrid_at(&d.0),
        Layout::v2_at(&d.0.join("unified")),
    ] {
        // With a directory in every hierarchy it is exactly what create made.
        let every_dir = Limits {
            cores: 1,
            freezer: true,
            ..Limits::default()
        };
        let t = TaskCgroup::create(&l, "p/q", "ahead-2", &every_dir).unwrap();
        let n = TaskCgroup::named(&l, "p/q", "ahead-2").unwrap();
        assert_eq!(n, t, "{}", l.name());
        n.remove().unwrap();
        assert!(t.dirs.iter().all(|d| !d.exists()));
        n.remove().unwrap(); // nothing left: still fine
        // Without (no cores, no freezer): a superset, which removes it all the same.
        let t = TaskCgroup::create(&l, "p/q", "ahead-3", &Limits::default()).unwrap();
        let n = TaskCgroup::named(&l, "p/q", "ahead-3").unwrap();
        assert!(t.dirs.iter().all(|d| n.dirs.contains(d)), "{}", l.name());
        n.remove().unwrap();
        assert!(t.dirs.iter().all(|d| !d.exists()));
    }
    assert_eq!(
        TaskCgroup::named(&Layout::v1_at(&d.0), "/abs", "x")
            .unwrap_err()
            .code,
        Code::InvalidConfig
    );
}

#[test]
fn layout_for_exec_and_json() {
    let root = Path::new("/sys/fs/cgroup");
    let h = Layout::hybrid_at(root);
    assert_eq!(h.for_exec(), Layout::v1_at(root));
    assert_eq!(Layout::v1_at(root).for_exec(), Layout::v1_at(root));
    assert_eq!(Layout::v2_at(root).for_exec(), Layout::v2_at(root));

    let j = serde_json::to_value(&h).unwrap();
    assert_eq!(j["kind"], "hybrid");
    assert_eq!(j["unified"], "/sys/fs/cgroup/unified");
    assert_eq!(j["controllers"]["memory"], "/sys/fs/cgroup/memory");
    assert_eq!(
        serde_json::to_value(Layout::v2_at(root)).unwrap(),
        serde_json::json!({"kind": "v2", "root": "/sys/fs/cgroup"})
    );
    for l in [h.clone(), h.for_exec(), Layout::v2_at(root)] {
        let back: Layout = serde_json::from_str(&serde_json::to_string(&l).unwrap()).unwrap();
        assert_eq!(back, l);
    }
}

/// Cgroups made on the way to a start go when their guard is dropped (an early return or
/// a panic), and stay once it is disarmed.
#[test]
fn a_cgroup_guard_removes_unless_disarmed() {
    let d = TempDir::new();
    fake_v2(&d.0, false);
    let l = Layout::v2_at(&d.0);
    let made = |name| CgroupGuard::new(Some(TaskCgroup::create(&l, "p", name, &Limits::default()).unwrap()));
    let g = made("dropped");
    assert!(d.0.join("p/dropped").is_dir());
    drop(g);
    assert!(!d.0.join("p/dropped").exists());
    let r = std::panic::catch_unwind(|| {
        let _g = made("unwound");
        panic!("a bug in the start");
    });
    assert!(r.is_err() && !d.0.join("p/unwound").exists());
    let kept = made("kept").disarm().unwrap();
    assert!(d.0.join("p/kept").is_dir());
    kept.remove().unwrap();
    drop(CgroupGuard::new(None));
}
