//! Runs the Go host's checks and suite (`examples-go`: the `execdriver` package and
//! `cmd/agent`) against the freshly built cdylib, so that `cargo test` covers them:
//! `gofmt -l`, `go vet ./...`, `go test ./...`. Needs `go` (Debian's `golang-go`,
//! standard library only, no network); FAILS when it is missing unless
//! `EXECDRIVER_SKIP_GO=1`.
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
    let go = |args: &[&str]| {
        let out = Command::new(args[0])
            .args(&args[1..])
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
            .unwrap_or_else(|e| panic!("{}: {e}", args[0]));
        let log = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), log)
    };
    // gofmt sits next to go in GOROOT/bin, which need not be on PATH.
    let (ok, goroot) = go(&["go", "env", "GOROOT"]);
    assert!(ok, "go env GOROOT: {goroot}");
    let gofmt = Path::new(goroot.trim()).join("bin/gofmt");
    let (ok, unformatted) = go(&[gofmt.to_str().unwrap(), "-l", "."]);
    assert!(
        ok && unformatted.is_empty(),
        "examples-go is not gofmt-clean (run: cd examples-go && gofmt -w .):\n{unformatted}"
    );
    let (ok, vet) = go(&["go", "vet", "./..."]);
    assert!(ok, "go vet ./... in examples-go:\n{vet}");
    let (ok, log) = go(&["go", "test", "-count=1", "-v", "./..."]);
    let _ = std::fs::remove_dir_all(&data);
    eprintln!("{log}");
    assert!(
        ok,
        "the Go host suite failed (rerun: cd examples-go && go test -v ./...):\n{log}"
    );
}
