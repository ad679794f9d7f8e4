//! raw_exec's command process (the trampoline, `sys::trampoline`: system calls only, in
//! the supervisor's memory) failing at its exec or at its chdir: the start's error names
//! the cause and the field, whether the supervisor was launched for the start (cold) or
//! prestarted (a spare), and the start leaves no cgroup and no task directory.
//!
//! A test binary of its own: the plugin configuration and the spares are process-wide,
//! and the prestarted case must be sure the failing start took the spare it saw.

mod common;
use common::*;
use serde_json::{Value, json};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Puts the default plugin configuration back on drop (which ends the spares).
struct DefaultConfig;

impl Drop for DefaultConfig {
    fn drop(&mut self) {
        let _ = op(execdriver::driver::configure, json!({}));
    }
}

/// An executable file that starts like an ELF binary and is not one: execve says
/// ENOEXEC.
fn bad_elf(dir: &Path) -> PathBuf {
    let p = dir.join("bad-elf");
    let mut bytes = b"\x7fELF\x02\x01\x01".to_vec();
    bytes.extend_from_slice(&[0xa5; 57]);
    std::fs::write(&p, bytes).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// Every directory under /sys/fs/cgroup named `id`, one a line.
fn cgroups_named(id: &str) -> String {
    let out = std::process::Command::new("find")
        .args(["/sys/fs/cgroup", "-name", id])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The idle raw_exec spares, made by a task run before if there are none.
fn raw_exec_spares(d: &Path) -> Vec<i32> {
    let spares = || {
        execdriver::host::pool::settle();
        execdriver::host::pool::spare_pids()
            .into_iter()
            .filter(|(flags, _)| *flags == 0)
            .map(|(_, pid)| pid)
            .collect::<Vec<_>>()
    };
    let now = spares();
    if !now.is_empty() {
        return now;
    }
    // Its start asks for a spare in the background; its destroy gives its own back.
    let (w, _) = run(raw_task("maker", &d.join("maker"), "true"));
    assert_eq!(w["exit_code"], 0, "{w}");
    let now = spares();
    assert!(!now.is_empty(), "no raw_exec spare after a raw_exec task");
    now
}

/// What one failing start must say.
struct Expected {
    code: execdriver::Code,
    field: &'static str,
    /// The message contains one of these.
    any_of: &'static [&'static str],
}

fn start_fails(req: Value, id: &str, alloc: &Path, want: &Expected, what: &str) {
    let e = start(req).expect_err(what);
    assert_eq!(e.code, want.code, "{what}: {e}");
    assert_eq!(e.field.as_deref(), Some(want.field), "{what}: {e}");
    assert!(
        want.any_of.iter().any(|m| e.message.contains(m)),
        "{what}: {e}"
    );
    assert!(!alloc.join("t").exists(), "{what}: task dir left behind");
    let left = cgroups_named(id);
    assert!(left.is_empty(), "{what}: cgroups left: {left}");
}

#[test]
fn a_failing_exec_or_chdir_names_its_cause_and_leaves_nothing() {
    init();
    let _default = DefaultConfig;
    let d = TempDir::new("trampoline");
    let bad = bad_elf(d.path());
    let cases = [
        (
            json!({"command": bad}),
            Expected {
                code: execdriver::Code::Spawn,
                field: "config.command",
                any_of: &["ENOEXEC", "Exec format error"],
            },
        ),
        (
            json!({"command": "/bin/true", "work_dir": d.path().join("no-such-dir")}),
            Expected {
                code: execdriver::Code::Spawn,
                field: "config.work_dir",
                any_of: &["ENOENT", "No such file"],
            },
        ),
    ];
    let mut n = 0;
    for prestart in [false, true] {
        op(
            execdriver::driver::configure,
            json!({"prestart_supervisor": prestart}),
        )
        .unwrap();
        for (config, want) in &cases {
            n += 1;
            let id = format!("trampoline-{}-{n}", std::process::id());
            let alloc = d.path().join(format!("a{n}"));
            let spares = if prestart {
                raw_exec_spares(d.path())
            } else {
                vec![]
            };
            let req = json!({"id": id, "name": "t", "driver": "raw_exec",
                "alloc_dir": alloc, "config": config});
            let what = format!("{config} with prestart_supervisor {prestart}");
            start_fails(req, &id, &alloc, want, &what);
            if prestart {
                // A spare took the start: it failed, exited and was reaped.
                let gone = spares
                    .iter()
                    .filter(|pid| !Path::new(&format!("/proc/{pid}")).exists())
                    .count();
                assert_eq!(gone, 1, "{what}: no spare of {spares:?} took the start");
            }
        }
    }
    if !is_root() {
        skip("the tasks' cgroups (none made without root)");
    }
}
