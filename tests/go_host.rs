//! Runs the Go host's suite (`examples-go`, `go test ./...`) against the freshly built
//! cdylib, so that `cargo test` covers it. Needs `go` (Debian's `golang-go`, standard
//! library only, no network); FAILS when it is missing unless `EXECDRIVER_SKIP_GO=1`.
//!
//! Run alone: `cargo test --test go_host -- --nocapture` (shows the `go test -v` output).

mod common;
use common::built_lib as lib;
use std::path::Path;
use std::process::Command;

#[test]
fn go_host_suite() {
    if std::env::var_os("EXECDRIVER_SKIP_GO").is_some_and(|v| v == "1") {
        eprintln!("SKIP go_host_suite: EXECDRIVER_SKIP_GO=1");
        return;
    }
    if Command::new("go").arg("version").output().is_err() {
        panic!(
            "`go` is not installed: install it (`apt-get install -y golang-go`; .ci/run does) \
             or set EXECDRIVER_SKIP_GO=1 to skip the Go host suite"
        );
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // Go's caches under target/ so that it works as root in CI without a usable $HOME.
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let data = std::env::temp_dir().join(format!("execdriver-gors-{}", std::process::id()));
    std::fs::create_dir_all(&data).unwrap();
    let out = Command::new("go")
        .args(["test", "-count=1", "-v", "./..."])
        .current_dir(root.join("examples-go"))
        .env("EXECDRIVER_LIB", lib())
        .env("EXECDRIVER_SHIM", env!("CARGO_BIN_EXE_execdriver-shim"))
        .env("EXECDRIVER_DATA_DIR", &data)
        .env("GOCACHE", tmp.join("go-cache"))
        .env("GOPATH", tmp.join("go-path"))
        .env("GOPROXY", "off")
        .env("GO111MODULE", "on")
        .env("CGO_ENABLED", "1")
        .output()
        .expect("go runs");
    let _ = std::fs::remove_dir_all(&data);
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{log}");
    assert!(
        out.status.success(),
        "the Go host suite failed (rerun: cd examples-go && go test -v ./...):\n{log}"
    );
}
