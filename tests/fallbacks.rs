//! Kernel features a user's older kernel may lack: with each taken away (the shim's test
//! hook makes them fail with ENOSYS, see `isolate::seccomp::test_hook`), exec tasks still
//! start on the cold and the prestarted path, with the same confinement; and without
//! pidfds the fingerprint says why exec is unavailable.

mod common;
use common::*;
use serde_json::json;

/// What the task reports of its confinement: its effective capabilities, its seccomp
/// mode, and the flags of the mounts it writes to or must not.
const REPORT: &str = "cat /proc/self/cgroup; grep -E '^(CapEff|Seccomp)' /proc/self/status; \
    awk '$5 == \"/\" || $5 == \"/usr\" || $5 == \"/proc/sys\" || $5 == \"/dev\" || $5 == \"/extra/sub\" {print $5, $6}' /proc/self/mountinfo; \
    touch /usr/x 2>/dev/null && echo usr-writable; echo done";

/// Whether the task of `id` ran in its own cgroup (by `clone3` into it, or by the
/// fallback, which moves it in before it runs the command).
fn in_own_cgroup(out: &str, id: &str) -> bool {
    out.lines().any(|l| {
        l.split(':')
            .nth(2)
            .is_some_and(|p| p.ends_with(&format!("/{id}")))
    })
}

fn check(out: &str, id: &str, what: &str) {
    let has = |l: &str| out.lines().any(|x| x == l);
    assert!(has("done"), "{what}: {out}");
    assert!(in_own_cgroup(out, id), "{what}: not in its cgroup: {out}");
    assert!(has("CapEff:\t0000000000000000"), "{what}: {out}");
    assert!(has("Seccomp:\t2"), "{what}: {out}");
    let flags = |mp: &str| {
        out.lines()
            .filter_map(|l| l.strip_prefix(&format!("{mp} ")))
            .next_back()
            .unwrap_or_else(|| panic!("{what}: {mp} not mounted: {out}"))
            .split(',')
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    for f in ["nosuid", "nodev"] {
        assert!(
            flags("/").contains(&f.to_string()),
            "{what}: / lacks {f}: {out}"
        );
    }
    assert!(flags("/usr").contains(&"ro".to_string()), "{what}: {out}");
    assert!(
        flags("/proc/sys").contains(&"ro".to_string()),
        "{what}: {out}"
    );
    assert!(flags("/dev").contains(&"ro".to_string()), "{what}: {out}");
    assert!(!has("usr-writable"), "{what}: {out}");
    // A mount below a chroot_env source (the host's own: suid and dev allowed there) is
    // bound with it, and as confined as the rest.
    for f in ["ro", "nosuid", "nodev"] {
        assert!(
            flags("/extra/sub").contains(&f.to_string()),
            "{what}: /extra/sub lacks {f}: {out}"
        );
    }
}

/// A `chroot_env` source with a submount (a tmpfs mounted without `nosuid`/`nodev`),
/// which the task sees at `/extra/sub`; unmounted on drop.
struct SubmountSource(TempDir);

impl SubmountSource {
    fn new() -> SubmountSource {
        let d = TempDir::new("submount-src");
        let sub = d.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            &sub,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some("size=64k"),
        )
        .unwrap();
        SubmountSource(d)
    }

    /// The plugin configuration: the default `chroot_env` and this source at `/extra`.
    fn config(&self, prestart: bool) -> serde_json::Value {
        let mut env = execdriver::config::PluginConfig::default().chroot_env;
        env.insert(self.0.path().to_str().unwrap().into(), "/extra".into());
        json!({"prestart_supervisor": prestart, "chroot_env": env})
    }
}

impl Drop for SubmountSource {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0.path().join("sub"), nix::mount::MntFlags::MNT_DETACH);
    }
}

/// One function: the hook is in the process's environment, which every start reads.
#[test]
fn tasks_start_confined_without_each_newer_kernel_feature() {
    if !exec_available() {
        return;
    }
    let cases = [
        "clone3",
        "open_tree,move_mount,fsopen,fsconfig,fsmount",
        "mount_setattr",
        "openat2",
        "pidfd_getfd",
    ];
    // The hook reaches the shim: one it cannot apply ends it, and the start fails.
    // SAFETY: see below.
    unsafe { std::env::set_var(execdriver::proto::TEST_ENOSYS, "no_such_call") };
    op(
        execdriver::driver::configure,
        json!({"prestart_supervisor": false}),
    )
    .unwrap();
    let d = TempDir::new("fallback-hook");
    assert!(
        start(json!({"name": "h", "driver": "exec", "alloc_dir": d.path(),
                     "config": {"command": "/bin/true"}}))
        .is_err(),
        "the test hook did not reach the shim"
    );
    let source = SubmountSource::new();
    for (case, missing) in cases.into_iter().enumerate() {
        // SAFETY: set while no other thread of this test process reads the environment
        // (one test function; the driver's own threads are idle between starts).
        unsafe { std::env::set_var(execdriver::proto::TEST_ENOSYS, missing) };
        for prestart in [false, true] {
            // Spares and the fork server of the previous case end: new ones get the hook.
            op(execdriver::driver::configure, source.config(prestart)).unwrap();
            // Three tasks: with prestart on, the later ones take spares.
            for i in 0..3 {
                let d = TempDir::new("fallback");
                let id = format!("fallback-{}-{case}-{prestart}-{i}", std::process::id());
                let (w, out) = run(json!({"name": "f", "driver": "exec", "alloc_dir": d.path(),
                    "id": id, "config": {"command": "/bin/sh", "args": ["-c", REPORT]}}));
                let what = format!("without {missing}, prestart {prestart}, task {i}");
                assert_eq!(w["exit_code"], 0, "{what}: {w} {out}");
                check(&out, &id, &what);
                // raw_exec's command child (clone3 into its cgroup, or fork and a write
                // of cgroup.procs) under the same hook.
                let id = format!("fallback-raw-{}-{case}-{prestart}-{i}", std::process::id());
                let (w, out) = run(json!({"name": "r", "driver": "raw_exec",
                    "alloc_dir": d.path(), "id": id, "config": {"command": "/bin/sh",
                    "args": ["-c", "cat /proc/self/cgroup; exit 3"]}}));
                assert_eq!(w["exit_code"], 3, "{what}, raw_exec: {w} {out}");
                assert!(in_own_cgroup(&out, &id), "{what}, raw_exec: {out}");
            }
        }
    }
    // SAFETY: as above.
    unsafe { std::env::remove_var(execdriver::proto::TEST_ENOSYS) };
    op(execdriver::driver::configure, json!({})).unwrap();
}

/// Without pidfds (before Linux 5.3) the fingerprint says exec is unavailable and why.
/// Run in a child process of this test binary, where every pidfd_open fails.
#[test]
fn fingerprint_without_pidfds_says_why() {
    if std::env::var_os("EXECDRIVER_TEST_CHILD").is_some() {
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "fingerprint_child_without_pidfds",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("EXECDRIVER_TEST_CHILD", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find_map(|l| l.split_once("FINGERPRINT ").map(|(_, f)| f))
        .unwrap_or_else(|| {
            panic!(
                "no fingerprint: {text} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let f: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(f["health"], "undetected", "{f}");
    assert!(f["attributes"].get("driver.exec").is_none(), "{f}");
    assert!(
        f["health_description"].as_str().unwrap().contains("pidfd"),
        "{f}"
    );
    assert_eq!(f["attributes"]["driver.raw_exec"], "1");
}

#[test]
fn fingerprint_child_without_pidfds() {
    if std::env::var_os("EXECDRIVER_TEST_CHILD").is_none() {
        return;
    }
    let prog = execdriver::supervisor::seccomp::enosys_filter("pidfd_open").unwrap();
    seccompiler::apply_filter_all_threads(&prog).unwrap();
    let f = execdriver::driver::fingerprint(None).unwrap();
    println!("FINGERPRINT {f}");
}
