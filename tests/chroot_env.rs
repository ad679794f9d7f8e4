//! A `chroot_env` that lacks what a command needs to load: the start is refused with a
//! message that names what is missing and where to add it, instead of the kernel's
//! `ENOENT` for a file that is plainly there (or a task that exits 127). Its own test
//! process: the plugin configuration is process-wide.

mod common;
use common::*;
use serde_json::json;

/// The start of `/bin/sh` under `chroot_env`: refused with `command_not_found` naming
/// `config.command`, its message containing each of `says`, and nothing of the task left.
fn refused(chroot_env: serde_json::Value, says: &[&str]) {
    op(
        execdriver::driver::configure,
        json!({"chroot_env": chroot_env, "prestart_supervisor": false}),
    )
    .unwrap();
    let d = TempDir::new("chroot-env");
    let e = start(json!({"name": "t", "driver": "exec", "alloc_dir": d.path(),
                         "config": {"command": "/bin/sh", "args": ["-c", "true"]}}))
    .unwrap_err();
    assert_eq!(e.code, execdriver::Code::CommandNotFound, "{e}");
    assert_eq!(e.field.as_deref(), Some("config.command"), "{e}");
    for s in says {
        assert!(e.message.contains(s), "{s:?} not in: {e}");
    }
    assert!(
        !d.path().join("t").exists(),
        "the failed start left its task dir"
    );
}

#[test]
fn a_root_without_the_loader_or_a_library_is_refused_naming_it() {
    if !exec_available() {
        return;
    }
    let sh = std::fs::canonicalize("/bin/sh").unwrap();
    let interp = std::process::Command::new("readelf")
        .args(["-l", sh.to_str().unwrap()])
        .output()
        .ok()
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            let at = text.find("interpreter: ")? + "interpreter: ".len();
            Some(text[at..].split(']').next()?.to_string())
        })
        .unwrap_or_else(|| "/lib64/ld-linux-x86-64.so.2".into());
    // Only the shell's directory: no loader.
    let bin = sh.parent().unwrap().to_str().unwrap().to_string();
    let mut env = json!({ &bin: &bin, "/bin": "/bin" });
    refused(env.clone(), &[&interp, "ELF interpreter", "chroot_env"]);
    // The loader (the file itself, bound where the shell looks for it), but no libc.
    let real_interp = std::fs::canonicalize(&interp).unwrap();
    env[real_interp.to_str().unwrap()] = json!(interp);
    refused(
        env,
        &[
            "libc.so",
            "shared library",
            "needed by /bin/sh",
            "chroot_env",
        ],
    );
    op(execdriver::driver::configure, json!({})).unwrap();
}
