//! The red-team suite against plugin configurations: what the operator has not allowed
//! is refused on the field (the host's pid and ipc namespaces, unconfined seccomp, a
//! network namespace outside `netns_dirs`), and `no_pivot_root` gives a root task no way
//! out of its root. One test function: it reconfigures the (process-wide) plugin.

mod common;
mod escape;
use common::*;
use escape::Route;
use serde_json::json;
use std::os::unix::fs::OpenOptionsExt;

fn refused(req: serde_json::Value, field: &str) {
    let e = start(req.clone()).unwrap_err();
    assert_eq!(
        (e.code, e.field.as_deref()),
        (execdriver::Code::InvalidConfig, Some(field)),
        "{req}: {e}"
    );
}

#[test]
fn what_the_operator_has_not_allowed_is_refused() {
    if !common::exec_available() {
        return;
    }
    op(
        execdriver::driver::configure,
        json!({"denied_host_uids": ""}),
    )
    .unwrap();
    let d = TempDir::new("opcfg");
    let task = |extra: serde_json::Value| {
        let mut t = json!({"name": "o", "driver": "exec", "alloc_dir": d.path(),
                           "config": {"command": "/bin/true"}});
        for (k, v) in extra.as_object().unwrap() {
            if k == "config" {
                for (ck, cv) in v.as_object().unwrap() {
                    t["config"][ck] = cv.clone();
                }
            } else {
                t[k] = v.clone();
            }
        }
        t
    };
    refused(
        task(json!({"config": {"pid_mode": "host"}})),
        "config.pid_mode",
    );
    refused(
        task(json!({"config": {"ipc_mode": "host"}})),
        "config.ipc_mode",
    );
    refused(
        task(json!({"config": {"seccomp": "unconfined"}})),
        "config.seccomp",
    );

    // Network namespaces: only under netns_dirs; a magic link, a FIFO, a plain file are
    // refused with one message, and nothing is opened for reading on the way (a FIFO's
    // writer would be woken by an open).
    let me = format!("/proc/{}/ns/net", std::process::id());
    let fifo = d.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let file = d.path().join("plain");
    std::fs::write(&file, b"x").unwrap();
    op(
        execdriver::driver::configure,
        json!({"denied_host_uids": "", "netns_dirs": [d.path()]}),
    )
    .unwrap();
    let mut messages = vec![];
    for p in [
        me.clone(),
        fifo.to_str().unwrap().into(),
        file.to_str().unwrap().into(),
        d.path().join("missing").to_str().unwrap().into(),
        "/etc/hostname".into(),
    ] {
        let req = task(json!({"network_isolation": {"mode": "group", "path": p}}));
        let e = start(req).unwrap_err();
        assert_eq!(
            e.field.as_deref(),
            Some("network_isolation.path"),
            "{p}: {e}"
        );
        messages.push(e.message.replace(&p, "PATH"));
    }
    messages.dedup();
    assert_eq!(
        messages.len(),
        1,
        "the refusals tell files apart: {messages:?}"
    );
    // The FIFO was never opened for reading: a writer opening it without a reader fails.
    let w = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo);
    assert_eq!(w.unwrap_err().raw_os_error(), Some(libc::ENXIO));

    // no_pivot_root: a root task cannot climb out of its root, on either path.
    for route in [Route::Cold, Route::Prestarted] {
        op(
            execdriver::driver::configure,
            json!({"denied_host_uids": "", "no_pivot_root": true,
                   "prestart_supervisor": route == Route::Prestarted}),
        )
        .unwrap();
        let p = escape::start_probe(
            route,
            "nopivot",
            json!({"user": "root"}),
            &["caps", "chroot-escape"],
        );
        let out = p.done();
        escape::assert_confined(&out, &["chroot-escape"]);
        drop(p);
        refused(
            task(json!({"config": {"seccomp": "unconfined"}})),
            "config.seccomp",
        );
    }
    op(execdriver::driver::configure, json!({})).unwrap();
}
