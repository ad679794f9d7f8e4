//! Runs the `execdriver` Python package's suite (`tests/python_pkg/test_package.py`, over
//! `python/execdriver`) against the freshly built cdylib, so that `cargo test` covers it.
//! Needs `python3` (stdlib only); skips with a message when python3 is missing.
//!
//! Run alone: `cargo test --test python_pkg -- --nocapture` (shows the unittest output).

mod common;
use common::built_lib as lib;
use std::path::Path;
use std::process::Command;

#[test]
fn python_package_suite() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    if Command::new("python3").arg("--version").output().is_err() {
        eprintln!("SKIP python_package_suite: python3 is not installed");
        return;
    }
    let data = std::env::temp_dir().join(format!("execdriver-pypkg-rs-{}", std::process::id()));
    std::fs::create_dir_all(&data).unwrap();
    let out = Command::new("python3")
        .args(["-m", "unittest", "discover", "-s", "tests/python_pkg", "-v"])
        .current_dir(root)
        .env("PYTHONPATH", root.join("python"))
        .env("EXECDRIVER_LIB", lib())
        .env("EXECDRIVER_SHIM", env!("CARGO_BIN_EXE_execdriver-shim"))
        .env("EXECDRIVER_DATA_DIR", &data)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("python3 runs");
    let _ = std::fs::remove_dir_all(&data);
    let log = String::from_utf8_lossy(&out.stderr);
    eprintln!("{}{log}", String::from_utf8_lossy(&out.stdout));
    assert!(
        out.status.success(),
        "the Python package suite failed (rerun: PYTHONPATH=python \
         EXECDRIVER_LIB=target/debug/libexecdriver.so python3 -m unittest discover -s \
         tests/python_pkg -v):\n{log}"
    );
}
