//! The C harness (`examples-c/harness.c`) end to end: built with gcc `-Wall -Wextra
//! -Werror` against the committed header, it dlopens the freshly built cdylib and runs the
//! sample jobs. Also under valgrind (definite leaks and memory errors fail the test).
//!
//! Run: `cargo test --test c_harness` (needs gcc; valgrind tests skip with a message when
//! valgrind is not installed, and fail in CI, which installs it).

mod common;
use common::built_lib as lib;
use common::{TempDir, skip};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Compiles the harness once per test process.
fn harness() -> &'static Path {
    static H: OnceLock<PathBuf> = OnceLock::new();
    H.get_or_init(|| {
        let out =
            Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("harness-{}", std::process::id()));
        let r = Command::new("gcc")
            .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-g", "-O1", "-I"])
            .arg(root().join("include"))
            .arg("-o")
            .arg(&out)
            .arg(root().join("examples-c/harness.c"))
            .arg("-ldl")
            .output()
            .expect("gcc runs (install gcc)");
        assert!(
            r.status.success(),
            "harness.c does not compile:\n{}",
            String::from_utf8_lossy(&r.stderr)
        );
        assert!(lib().exists(), "{} not built", lib().display());
        out
    })
}

/// Runs `[prefix...] harness -l LIB args...` with a private data dir.
fn run_with(prefix: &[&str], args: &[&str], data: &Path) -> Output {
    let mut cmd = match prefix.split_first() {
        Some((p, rest)) => {
            let mut c = Command::new(p);
            c.args(rest).arg(harness());
            c
        }
        None => Command::new(harness()),
    };
    cmd.arg("-l")
        .arg(lib())
        .args(args)
        .current_dir(root())
        .env("EXECDRIVER_DATA_DIR", data)
        .env("EXECDRIVER_SHIM", env!("CARGO_BIN_EXE_execdriver-shim"))
        .env_remove("EXECDRIVER_LIB")
        .output()
        .expect("harness runs")
}

fn run(args: &[&str], data: &Path) -> Output {
    run_with(&[], args, data)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The wait object: the last line of the harness's stdout.
fn wait_json(o: &Output) -> Value {
    let out = text(&o.stdout);
    let last = out.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| {
        panic!(
            "last stdout line is not JSON ({e}):\n{out}\nstderr:\n{}",
            text(&o.stderr)
        )
    })
}

fn job(name: &str) -> String {
    format!("examples-c/jobs/{name}")
}

#[test]
fn hello_raw_prints_output_and_exits_0() {
    let d = TempDir::new("ch-hello");
    let o = run(&["run", &job("hello-raw.json")], d.path());
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}\n{}", text(&o.stderr));
    assert!(out.starts_with("hello from raw_exec\n"), "{out}");
    assert!(out.contains("GREETING=hi from hello task=hello\n"), "{out}");
    let w = wait_json(&o);
    assert_eq!(w["exit_code"], 0, "{w}");
    assert_eq!(w["signal"], 0, "{w}");
    assert!(w["task_id"].as_str().unwrap().starts_with("hello-"), "{w}");
}

#[test]
fn exit3_exits_3() {
    let d = TempDir::new("ch-exit3");
    let o = run(&["run", &job("exit3.json")], d.path());
    assert_eq!(o.status.code(), Some(3), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("failing on purpose"),
        "{}",
        text(&o.stderr)
    );
    assert_eq!(wait_json(&o)["exit_code"], 3);
}

/// `-v`: the library's own log through `driver_set_log_callback`, as it happens.
#[test]
fn verbose_prints_the_library_log_from_its_callback() {
    let d = TempDir::new("ch-verbose");
    let o = run(&["-v", "debug", "run", &job("exit3.json")], d.path());
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    let id = wait_json(&o)["task_id"].as_str().unwrap().to_string();
    for want in [
        format!("execdriver debug: task {id}: received"),
        format!("execdriver info: task {id}: started: supervisor pid "),
        format!("execdriver info: task {id}: exited: exit code 3"),
        format!("execdriver info: task {id}: destroyed"),
    ] {
        assert!(err.contains(&want), "{want:?} not in:\n{err}");
    }
    assert!(!err.contains("execdriver trace:"), "{err}");
    let o = run(&["-v", "loud", "fingerprint"], d.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("-v takes off, error"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn quiet_prints_only_the_wait_object() {
    let d = TempDir::new("ch-quiet");
    let o = run(&["-q", "run", &job("hello-raw.json")], d.path());
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(text(&o.stdout).lines().count(), 1, "{}", text(&o.stdout));
}

#[test]
fn signal_death_exits_128_plus_n() {
    let d = TempDir::new("ch-sig");
    let jf = d.path().join("kill.json");
    // `$$` is the interpolation escape for `$`, so the shell sees `kill -KILL $$`.
    std::fs::write(
        &jf,
        r#"{"name": "k", "driver": "raw_exec", "config": {"command": "/bin/sh", "args": ["-c", "kill -KILL $$$$"]}}"#,
    )
    .unwrap();
    let o = run(&["run", jf.to_str().unwrap()], d.path());
    assert_eq!(o.status.code(), Some(137), "{}", text(&o.stderr));
    let w = wait_json(&o);
    assert_eq!(w["signal"], 9, "{w}");
}

#[test]
fn driver_error_prints_error_json_and_exits_2() {
    let d = TempDir::new("ch-err");
    let jf = d.path().join("bad.json");
    std::fs::write(
        &jf,
        r#"{"name": "b", "driver": "raw_exec", "config": {"command": "/nonexistent/execdriver-nope"}}"#,
    )
    .unwrap();
    let o = run(&["run", jf.to_str().unwrap()], d.path());
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("status 6 (start failed)"), "{err}");
    assert!(err.contains("\"command_not_found\""), "{err}");

    std::fs::write(&jf, r#"{"name": "b", "config": {"comand": "x"}}"#).unwrap();
    let o = run(&["run", jf.to_str().unwrap()], d.path());
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("(invalid request or configuration)") && err.contains("comand"),
        "{err}"
    );
}

#[test]
fn fingerprint_prints_json() {
    let d = TempDir::new("ch-fp");
    let o = run(&["fingerprint"], d.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let fp: Value = serde_json::from_str(text(&o.stdout).trim()).unwrap();
    assert_eq!(fp["attributes"]["driver.raw_exec"], "1", "{fp}");
    assert!(fp["health"].is_string(), "{fp}");
}

#[test]
fn missing_library_is_a_clear_error() {
    let d = TempDir::new("ch-nolib");
    let o = Command::new(harness())
        .args(["-l", "/nonexistent/libexecdriver.so", "fingerprint"])
        .env("EXECDRIVER_DATA_DIR", d.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("EXECDRIVER_LIB"),
        "{}",
        text(&o.stderr)
    );
}

/// The one isolated (`exec`) job: runs when the fingerprint says exec is healthy here,
/// otherwise prints why and skips.
#[test]
fn hello_exec_when_exec_is_healthy() {
    let d = TempDir::new("ch-exec");
    let o = run(&["fingerprint"], d.path());
    let fp: Value = serde_json::from_str(text(&o.stdout).trim()).unwrap();
    if fp["attributes"]["driver.exec"] != "1" || fp["health"] != "healthy" {
        skip(&format!(
            "hello_exec_when_exec_is_healthy: exec is not available here: health={} ({})",
            fp["health"], fp["health_description"]
        ));
        return;
    }
    let o = run(&["-p", "run", &job("hello-exec.json")], d.path());
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}\n{}", text(&o.stderr));
    assert!(out.starts_with("hello from nobody in /\n"), "{out}");
    for entry in ["alloc", "local", "secrets", "tmp", "usr"] {
        assert!(
            out.lines().any(|l| l == entry),
            "`ls /` lacks {entry}:\n{out}"
        );
    }
    assert!(!out.lines().any(|l| l == "root" || l == "home"), "{out}");
}

fn valgrind_available() -> bool {
    match Command::new("valgrind").arg("--version").output() {
        Ok(o) if o.status.success() => true,
        _ => {
            skip("valgrind test: valgrind is not installed (CI installs it)");
            false
        }
    }
}

/// Definite leaks and memory errors fail; "possibly lost" and "still reachable" blocks
/// (Rust's runtime and the library's global task table, alive until exit) do not.
fn under_valgrind(args: &[&str], want_code: i32) {
    let d = TempDir::new("ch-vg");
    under_valgrind_in(args, want_code, d.path());
}

/// `under_valgrind` with a given data directory; returns the harness's output.
fn under_valgrind_in(args: &[&str], want_code: i32, data: &Path) -> Output {
    let o = run_with(
        &[
            "valgrind",
            "--leak-check=full",
            "--error-exitcode=1",
            "--errors-for-leak-kinds=definite",
            "--show-leak-kinds=definite",
        ],
        args,
        data,
    );
    let err = text(&o.stderr);
    assert!(
        err.contains("ERROR SUMMARY: 0 errors"),
        "valgrind found errors running harness {args:?}:\n{err}"
    );
    assert!(
        err.contains("definitely lost: 0 bytes") || err.contains("All heap blocks were freed"),
        "definite leaks running harness {args:?}:\n{err}"
    );
    assert_eq!(o.status.code(), Some(want_code), "{err}");
    o
}

#[test]
fn valgrind_hello_raw_no_definite_leaks() {
    if valgrind_available() {
        under_valgrind(&["run", &job("hello-raw.json")], 0);
    }
}

#[test]
fn valgrind_exit3_and_fingerprint_no_definite_leaks() {
    if valgrind_available() {
        under_valgrind(&["run", &job("exit3.json")], 3);
        under_valgrind(&["fingerprint"], 0);
        under_valgrind(&["call", "stats", "{\"task_id\":\"nope\"}"], 2);
    }
}

fn json_out(o: &Output) -> Value {
    let out = text(&o.stdout);
    serde_json::from_str(out.trim()).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON object ({e}):\n{out}\nstderr:\n{}",
            text(&o.stderr)
        )
    })
}

fn pid_alive(pid: i64) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

/// start → inspect → stats → wait (timeout) → stop → wait → destroy, each step a separate
/// harness process that recovers the task from the handle file; `start` under valgrind
/// (no definite leaks).
#[test]
fn step_by_step_across_processes() {
    let d = TempDir::new("ch-steps");
    let hf = d.path().join("sleeper.handle");
    let h = hf.to_str().unwrap();
    let jf = d.path().join("sleep.json");
    std::fs::write(
        &jf,
        r#"{"name": "steps", "driver": "raw_exec", "config": {"command": "/bin/sleep", "args": ["600"]}, "kill_signal": "SIGTERM"}"#,
    )
    .unwrap();

    // `start` under valgrind when it is installed. (Not a recovering step: valgrind does
    // not implement pidfd_open, so a recovering harness under it sees the supervisor gone.)
    let start = ["start", jf.to_str().unwrap(), h];
    let o = if valgrind_available() {
        under_valgrind_in(&start, 0, d.path())
    } else {
        run(&start, d.path())
    };
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let started = json_out(&o);
    let id = started["task_id"].as_str().unwrap().to_string();
    let pid = started["pid"].as_i64().unwrap();
    let handle: Value = serde_json::from_str(&std::fs::read_to_string(&hf).unwrap()).unwrap();
    assert_eq!(
        handle, started["handle"],
        "the handle file holds the start response's handle"
    );
    assert!(pid_alive(pid), "the task outlives the `start` process");

    let o = run(&["inspect", h], d.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let ins = json_out(&o);
    assert_eq!(
        (ins["task_id"].as_str(), ins["state"].as_str()),
        (Some(&*id), Some("running")),
        "{ins}"
    );

    if valgrind_available() {
        // A recovering step under valgrind too, for the harness's own memory handling:
        // there the library sees the supervisor gone (no pidfd_open), which changes
        // nothing for the task nor for the other processes.
        let o = under_valgrind_in(&["inspect", h], 0, d.path());
        assert_eq!(json_out(&o)["task_id"].as_str(), Some(&*id));
        let o = run(&["inspect", h], d.path());
        assert_eq!(json_out(&o)["state"], "running", "{}", text(&o.stdout));
    }

    let o = run(&["stats", h], d.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(json_out(&o)["pids"]["current"].as_u64().unwrap() >= 1);

    let o = run(&["wait", h, "100"], d.path());
    assert_eq!(o.status.code(), Some(3), "still running: DRIVER_TIMEOUT");
    assert_eq!(json_out(&o)["error"]["code"], "timeout");
    assert!(
        text(&o.stderr).contains("status 3 (timed out)"),
        "{}",
        text(&o.stderr)
    );

    let o = run(&["stop", h, "5000"], d.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let stopped = json_out(&o);
    assert_eq!(
        (stopped["signal"].as_i64(), stopped["exit_code"].as_i64()),
        (Some(15), Some(143)),
        "{stopped}"
    );
    assert!(!pid_alive(pid), "no process of the task remains after stop");

    let o = run(&["wait", h], d.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let w = json_out(&o);
    assert_eq!(
        (w["task_id"].as_str(), w["signal"].as_i64()),
        (Some(&*id), Some(15)),
        "{w}"
    );

    let o = run(&["-p", "destroy", h], d.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(!Path::new(started["task_dir"].as_str().unwrap()).exists());

    // A task's output, recovered from its handle: followed to its end, exact bytes.
    let h2 = d.path().join("h2.json");
    let h2 = h2.to_str().unwrap();
    let o = run(&["start", "examples-c/jobs/hello-raw.json", h2], d.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let want = "hello from raw_exec\nGREETING=hi from hello task=hello\n";
    let o = run(&["logs", "-f", h2], d.path());
    assert_eq!(
        (o.status.code(), text(&o.stdout)),
        (Some(0), want.to_string()),
        "{}",
        text(&o.stderr)
    );
    if valgrind_available() {
        let o = under_valgrind_in(&["logs", h2], 0, d.path());
        assert_eq!(text(&o.stdout), want);
    }
    let o = run(&["logs", "-stderr", h2], d.path());
    assert_eq!((o.status.code(), text(&o.stdout)), (Some(0), String::new()));
    let o = run(&["logs", "-x", h2], d.path());
    assert_eq!(o.status.code(), Some(2));
    let o = run(&["-p", "destroy", h2], d.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));

    // Bad usage and a missing handle file are clear errors.
    let o = run(&["inspect", h, "5"], d.path());
    assert_eq!(o.status.code(), Some(2));
    let o = run(&["wait", "/nonexistent/h.json"], d.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("/nonexistent/h.json"),
        "{}",
        text(&o.stderr)
    );
}

/// The README's harness block (step by step), run as written from a copy of the
/// repository's root, but for `cargo build`: that copy holds what it would have made
/// (this test run's library in `target/debug/`, the supervisor beside it), the sources
/// `make -C examples-c` reads, and the sample jobs. Nothing tells the harness where the
/// library is, nor the library where its supervisor is: no `PATH`, `EXECDRIVER_LIB` or
/// `EXECDRIVER_SHIM`.
#[test]
fn readme_step_by_step_snippet() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let block = readme
        .split("```sh\n")
        .filter_map(|b| b.split("```").next())
        .find(|b| b.starts_with("cargo build && make -C examples-c"))
        .expect("README's harness block");
    let (first, steps) = block.split_once('\n').unwrap();
    let build = first.split('#').next().unwrap().trim_end();
    assert_eq!(build, "cargo build && make -C examples-c");

    let d = TempDir::new("ch-readme");
    let repo = d.path().join("repo");
    let debug = repo.join("target/debug");
    std::fs::create_dir_all(&debug).unwrap();
    std::fs::create_dir_all(repo.join("examples-c")).unwrap();
    // A copy, not a link: the library looks for its supervisor beside its real path.
    std::fs::copy(lib(), debug.join("libexecdriver.so")).unwrap();
    std::os::unix::fs::symlink(
        env!("CARGO_BIN_EXE_execdriver-shim"),
        debug.join("execdriver-shim"),
    )
    .unwrap();
    std::os::unix::fs::symlink(root().join("include"), repo.join("include")).unwrap();
    for f in ["Makefile", "harness.c", "jobs"] {
        std::os::unix::fs::symlink(
            root().join("examples-c").join(f),
            repo.join("examples-c").join(f),
        )
        .unwrap();
    }
    let script = format!("make -C examples-c\n{steps}");
    let o = Command::new("sh")
        .args(["-ec", &script])
        .current_dir(&repo)
        .env_remove("EXECDRIVER_LIB")
        .env_remove("EXECDRIVER_SHIM")
        .env("EXECDRIVER_DATA_DIR", d.path().join("data"))
        .output()
        .unwrap();
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}\n{}", text(&o.stderr));
    // What make printed, then: start, inspect, stats, wait's error object, the echo, stop,
    // wait, destroy.
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.len() > 8, "{out}");
    let lines = &lines[lines.len() - 8..];
    assert!(repo.join("examples-c/harness").is_file(), "{out}");
    assert!(lines[0].contains("\"handle\""), "{out}");
    assert!(lines[1].contains("\"state\":\"running\""), "{out}");
    assert!(lines[3].contains("\"timeout\""), "{out}");
    assert_eq!(lines[4], "wait: status 3", "{out}");
    assert!(lines[6].contains("\"signal\":15"), "{out}");
    assert!(lines[7].contains("\"destroyed\":true"), "{out}");
}
