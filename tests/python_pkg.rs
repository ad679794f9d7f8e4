//! Runs the `execdriver` Python package's suite (`tests/python_pkg/test_package.py`, over
//! `python/execdriver`) against the freshly built cdylib, so that `cargo test` covers it.
//! Needs `python3` (stdlib only); skips with a message when python3 is missing (fails in
//! CI, which installs it).
//!
//! Run alone: `cargo test --test python_pkg -- --nocapture` (shows the unittest output).

mod common;
use std::path::Path;

#[test]
fn python_package_suite() {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("python");
    let Some(out) = common::python_unittest("tests/python_pkg", Some(&python)) else {
        common::skip("python_package_suite: python3 is not installed");
        return;
    };
    let log = String::from_utf8_lossy(&out.stderr);
    eprintln!("{}{log}", String::from_utf8_lossy(&out.stdout));
    assert!(
        out.status.success(),
        "the Python package suite failed (rerun: PYTHONPATH=python \
         EXECDRIVER_LIB=target/debug/libexecdriver.so python3 -m unittest discover -s \
         tests/python_pkg -v):\n{log}"
    );
}
