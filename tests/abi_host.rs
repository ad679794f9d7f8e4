//! The `abi_stable` root module (feature `abi`) through the host in
//! `examples/abi_host.rs`, against the freshly built `libexecdriver.so`; and the clear
//! refusal of a library that is not a compatible module.
//!
//! `cargo test --features abi --test abi_host`
#![cfg(feature = "abi")]

#[allow(dead_code)]
#[path = "../examples/abi_host.rs"]
mod abi_host;

use std::path::{Path, PathBuf};

/// The freshly built cdylib: `cargo test` rebuilds `target/<profile>/deps/libexecdriver.so`
/// but only `cargo build` copies it up to `target/<profile>/`, so take the newer of the two.
fn library() -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_execdriver-shim"))
        .parent()
        .unwrap()
        .to_path_buf();
    let up = dir.join("libexecdriver.so");
    let deps = dir.join("deps/libexecdriver.so");
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    match (mtime(&up), mtime(&deps)) {
        (Some(a), Some(b)) if a >= b => up,
        (_, Some(_)) => deps,
        _ => up,
    }
}

/// abi_stable remembers the first load of a root module type in the process, success or
/// failure, so each load runs in a child: this test binary re-run on [`host_child`].
fn host(lib: &Path) -> Result<String, String> {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "host_child", "--nocapture", "--test-threads=1"])
        .env("ABI_HOST_LIB", lib)
        .env("EXECDRIVER_SHIM", env!("CARGO_BIN_EXE_execdriver-shim"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if let Some((_, rest)) = text.split_once("HOST-OK\n") {
        Ok(rest.split("\nHOST-END").next().unwrap().to_string())
    } else if let Some((_, rest)) = text.split_once("HOST-ERR\n") {
        Err(rest.split("\nHOST-END").next().unwrap().to_string())
    } else {
        panic!(
            "child failed: {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

/// Runs the example's host on `$ABI_HOST_LIB` when re-run by [`host`]; passes otherwise.
#[test]
fn host_child() {
    let Some(lib) = std::env::var_os("ABI_HOST_LIB") else {
        return;
    };
    match abi_host::host(Path::new(&lib)) {
        Ok(out) => println!("HOST-OK\n{out}\nHOST-END"),
        Err(e) => println!("HOST-ERR\n{e}\nHOST-END"),
    }
}

#[test]
fn host_runs_a_raw_exec_job_through_the_root_module() {
    let out = host(&library()).unwrap_or_else(|e| panic!("{e}"));
    assert!(out.contains("abi_version 1"), "{out}");
    let wait_line = out
        .lines()
        .find(|l| l.starts_with("wait: "))
        .unwrap_or_else(|| panic!("{out}"));
    let w: serde_json::Value = serde_json::from_str(&wait_line["wait: ".len()..]).unwrap();
    assert_eq!(w["exit_code"], 7, "{out}");
    assert_eq!(w["signal"], 0, "{out}");
    assert!(
        out.contains("inspect of an unknown task: inspect failed: status 2 code task_not_found"),
        "{out}"
    );
}

#[test]
fn host_refuses_a_library_that_is_not_the_module() {
    for lib in [
        "/lib/x86_64-linux-gnu/libc.so.6",
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
    ] {
        if !Path::new(lib).exists() {
            continue;
        }
        let e = host(Path::new(lib)).unwrap_err();
        assert!(
            e.contains("is not a compatible execdriver abi_stable module"),
            "{e}"
        );
        assert!(e.contains("--features abi"), "{e}");
        return;
    }
    panic!("no libc.so.6 to try");
}

#[test]
fn host_refuses_a_missing_file() {
    let e = host(Path::new("/nonexistent/libexecdriver.so")).unwrap_err();
    assert!(
        e.contains("is not a compatible execdriver abi_stable module"),
        "{e}"
    );
}
