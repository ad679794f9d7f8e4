//! Runs the Python ctypes suite (`tests/python/test_ctypes.py`) against the freshly built
//! cdylib, so that `cargo test` covers it. Needs `python3` (stdlib only); skips with a
//! message when python3 is missing (fails in CI, which installs it).
//!
//! Run alone: `cargo test --test python_ctypes -- --nocapture` (shows the unittest output).

mod common;

#[test]
fn python_ctypes_suite() {
    let Some(out) = common::python_unittest("tests/python", None) else {
        common::skip("python_ctypes_suite: python3 is not installed");
        return;
    };
    let log = String::from_utf8_lossy(&out.stderr);
    eprintln!("{log}");
    assert!(
        out.status.success(),
        "the Python ctypes suite failed (rerun: tests/python/run.sh):\n{log}"
    );
}
