//! A Rust host of the `abi_stable` root module (feature `abi`): loads `libexecdriver.so`
//! with abi_stable's load-time layout checks, runs one raw_exec job (start, wait, print the
//! wait result, destroy) and exits 0. A library without the module, or with an
//! incompatible one, is refused with a clear message and exit status 2.
//!
//! ```text
//! cargo build --release --features abi
//! cargo run --release --features abi --example abi_host -- target/release/libexecdriver.so
//! ```

use abi_stable::library::RootModule;
use abi_stable::std_types::{RResult, RString};
use execdriver::abi::{DriverErrorFfi, DriverModRef};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn call(
    name: &str,
    f: extern "C" fn(abi_stable::std_types::RStr<'_>) -> RResult<RString, DriverErrorFfi>,
    req: &Value,
) -> Result<Value, String> {
    let text = req.to_string();
    match f(text.as_str().into()) {
        RResult::ROk(s) => {
            serde_json::from_str(s.as_str()).map_err(|e| format!("{name}: bad JSON: {e}"))
        }
        RResult::RErr(e) => Err(format!(
            "{name} failed: status {} code {} message {}{}",
            e.status,
            e.code,
            e.message,
            e.field.map(|f| format!(" field {f}")).unwrap_or_default()
        )),
    }
}

fn main() -> ExitCode {
    let Some(lib) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: abi_host PATH/TO/libexecdriver.so");
        return ExitCode::from(2);
    };
    match host(&lib) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("abi_host: {e}");
            ExitCode::from(2)
        }
    }
}

/// Loads the module from `lib` and runs the sample job; returns what it would print.
pub fn host(lib: &Path) -> Result<String, String> {
    let m = DriverModRef::load_from_file(lib).map_err(|e| {
        format!(
            "{} is not a compatible execdriver abi_stable module \
             (was it built with `--features abi`, from a compatible version?):\n{e}",
            lib.display()
        )
    })?;
    let mut out = format!(
        "loaded {} (abi_version {})\n",
        lib.display(),
        (m.abi_version())()
    );
    let alloc = std::env::temp_dir().join(format!(
        "execdriver-abi-host-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let result = run(m, &alloc, &mut out);
    let _ = std::fs::remove_dir_all(&alloc);
    result.map(|()| out)
}

fn run(m: DriverModRef, alloc: &Path, out: &mut String) -> Result<(), String> {
    let start = json!({
        "name": "hello", "driver": "raw_exec", "alloc_dir": alloc,
        "config": {"command": "/bin/sh", "args": ["-c", "echo hello from abi_host; exit 7"]},
    });
    let r = call("start", m.start(), &start)?;
    let id = r["task_id"]
        .as_str()
        .ok_or("start: no task_id")?
        .to_string();
    let w = call(
        "wait",
        m.wait(),
        &json!({"task_id": id, "timeout_ms": 60_000}),
    );
    let d = call(
        "destroy",
        m.destroy(),
        &json!({"task_id": id, "force": true}),
    );
    let w = w?;
    out.push_str(&format!("wait: {w}\n"));
    d?;
    // An error takes the typed path: unknown task.
    match call("inspect", m.inspect(), &json!({"task_id": "no-such-task"})) {
        Err(e) => out.push_str(&format!("inspect of an unknown task: {e}\n")),
        Ok(v) => return Err(format!("inspect of an unknown task succeeded: {v}")),
    }
    Ok(())
}
