//! exec isolation end to end (root and cgroups needed; skipped with a printed reason
//! otherwise): the task's view of the filesystem, user, pid namespace, limits.

mod common;
use common::*;
use serde_json::{Value, json};

/// Whether exec can run here; prints why not.
fn exec_ok() -> bool {
    init();
    let f = execdriver::driver::fingerprint(None).unwrap();
    if f["attributes"]["driver.exec"] != "1" {
        eprintln!("SKIP: exec unavailable here: {}", f["health_description"]);
        return false;
    }
    true
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
    for need in [
        "alloc", "bin", "dev", "etc", "local", "proc", "secrets", "tmp", "usr",
    ] {
        assert!(top.contains(need), "missing /{need} in {top:?}");
    }
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
