//! The Python wheel end to end: `python/build_wheel.py` packs the freshly built library
//! and supervisor, python/README.md's install block puts the wheel into a fresh venv (no
//! index), and a script run
//! from outside the repository with no `EXECDRIVER_*` or `PYTHONPATH` in its environment
//! checks the wheel (tag, RECORD hashes, modes) and the installed package (the shim is
//! executable, `Driver()` loads the bundled library, which finds the bundled shim), then
//! runs a raw_exec task, and an exec task where this host can run one.
//!
//! Needs `python3` with `venv`/`ensurepip` (Debian: python3-venv); skips, saying so,
//! without them (a failure in CI, which installs them). Run alone:
//! `cargo test --test python_wheel -- --nocapture`.

mod common;
use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::Command;

const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Run by the venv's interpreter: argv = wheel, data dir, alloc root.
/// Prints one JSON object of what it found; asserts only what the Rust side cannot see.
const CHECK: &str = r#"
import base64, hashlib, json, os, stat, sys, zipfile
wheel, data, allocs = sys.argv[1:4]
out = {"environ": sorted(os.environ)}

with zipfile.ZipFile(wheel) as z:
    names = z.namelist()
    info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/WHEEL"))
    out["wheel_meta"] = z.read(info + "/WHEEL").decode().splitlines()
    listed = {}
    for line in z.read(info + "/RECORD").decode().splitlines():
        path, digest, size = line.rsplit(",", 2)
        listed[path] = (digest, size)
    bad = []
    for n in names:
        body = z.read(n)
        want = ("", "") if n == info + "/RECORD" else (
            "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(body).digest()).rstrip(b"=").decode(),
            str(len(body)))
        if listed.pop(n, None) != want:
            bad.append(n)
    out["record_mismatch"] = bad + sorted(listed)
    out["zip_modes"] = {n: oct(z.getinfo(n).external_attr >> 16) for n in names if not n.endswith("/")}

import execdriver
from execdriver import Driver
pkg = os.path.dirname(os.path.abspath(execdriver.__file__))
out["package"] = pkg
shim = os.path.join(pkg, "execdriver-shim")
out["shim_mode"] = oct(stat.S_IMODE(os.stat(shim).st_mode))
out["shim_executable"] = os.access(shim, os.X_OK)
drv = Driver()
out["lib"] = drv.path
drv.configure({"data_dir": data})
out["shim_path"] = drv.configure()["shim_path"]

def run(driver, name):
    alloc = os.path.join(allocs, name)
    os.mkdir(alloc)
    task = drv.start_task({"name": name, "driver": driver, "alloc_dir": alloc,
                           "config": {"command": "/bin/sh",
                                      "args": ["-c", "echo hello from the wheel: $0", driver]}})
    res = task.wait(timeout=60)
    task.destroy()
    with open(os.path.join(alloc, "alloc", "logs", name + ".stdout.0")) as f:
        return {"exit_code": res["exit_code"], "stdout": f.read()}

out["raw_exec"] = run("raw_exec", "raw")
fp = drv.fingerprint()
if fp["attributes"].get("driver.exec") == "1":
    out["exec"] = run("exec", "iso")
else:
    out["exec_unavailable"] = fp["health_description"]
print(json.dumps(out))
"#;

/// `cmd` with only a plain PATH in its environment.
fn bare(cmd: &mut Command) -> &mut Command {
    cmd.env_clear().env("PATH", PATH)
}

fn run_ok(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn wheel_installs_into_a_fresh_venv_and_runs_tasks() {
    let has_venv = Command::new("python3")
        .args(["-c", "import venv, ensurepip"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_venv {
        skip("python_wheel: python3 with venv and ensurepip (python3-venv) is not installed");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for doc in ["README.md", "python/README.md"] {
        let text = std::fs::read_to_string(root.join(doc)).unwrap();
        assert!(
            text.contains("python3 python/build_wheel.py"),
            "{doc} does not give the wheel command"
        );
    }
    let tmp = TempDir::new("wheel");
    let (work, data, allocs) = (
        tmp.path().join("work"),
        tmp.path().join("data"),
        tmp.path().join("allocs"),
    );
    // python/README.md's install block runs in `work` as from the repository root: the
    // wheel where build_wheel.py puts it, the venv in `.venv`.
    let (dist, venv) = (work.join("target/wheels"), work.join(".venv"));
    for d in [&work, &allocs] {
        std::fs::create_dir(d).unwrap();
    }

    // The wheel, from the library and shim this test run built (a cargo build inside
    // cargo test would build a second profile for minutes).
    let printed = run_ok(
        Command::new("python3")
            .arg(root.join("python/build_wheel.py"))
            .arg("--lib")
            .arg(built_lib())
            .arg("--shim")
            .arg(env!("CARGO_BIN_EXE_execdriver-shim"))
            .arg("-o")
            .arg(&dist)
            .env("PYTHONDONTWRITEBYTECODE", "1"),
        "python/build_wheel.py",
    );
    let tag = format!("py3-none-linux_{}", std::env::consts::ARCH);
    let name = format!("execdriver-{}-{tag}.whl", env!("CARGO_PKG_VERSION"));
    let wheel = dist.join(&name);
    assert_eq!(printed.trim(), wheel.to_str().unwrap());
    let made: Vec<_> = std::fs::read_dir(&dist)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(made, [name]);

    // The install block as written, but for its first line (the wheel is made above,
    // from this test's build): a venv, pip installs the wheel into it, the venv's Python
    // loads the bundled library. pip is kept off the network by its environment only.
    let readme = std::fs::read_to_string(root.join("python/README.md")).unwrap();
    let block = readme
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .unwrap();
    let (first, rest) = block.split_once('\n').unwrap();
    assert!(
        first.starts_with("python3 python/build_wheel.py"),
        "{block}"
    );
    assert!(
        rest.contains("python3 -m venv .venv\n") && rest.contains(".venv/bin/pip install"),
        "python/README.md installs outside a venv (PEP 668):\n{block}"
    );
    let printed = run_ok(
        bare(Command::new("bash").args(["-euo", "pipefail", "-c", rest]))
            .env("PIP_NO_INDEX", "1")
            .env("PIP_NO_CACHE_DIR", "1")
            .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
            .current_dir(&work),
        "python/README.md's install block",
    );
    assert_eq!(
        printed.lines().last(),
        Some(env!("CARGO_PKG_VERSION")),
        "{printed}"
    );
    let python = venv.join("bin/python");

    let printed = run_ok(
        bare(Command::new(&python).arg("-c").arg(CHECK))
            .arg(&wheel)
            .arg(&data)
            .arg(&allocs)
            .current_dir(&work),
        "the check script in the venv",
    );
    let r: Value = serde_json::from_str(printed.trim())
        .unwrap_or_else(|e| panic!("not JSON ({e}): {printed}"));
    eprintln!("{r:#}");

    let environ: Vec<&str> = r["environ"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        !environ
            .iter()
            .any(|k| k.starts_with("EXECDRIVER_") || *k == "PYTHONPATH"),
        "{environ:?}"
    );
    let meta = &r["wheel_meta"];
    assert!(
        meta.as_array()
            .unwrap()
            .contains(&"Root-Is-Purelib: false".into())
    );
    assert!(
        meta.as_array()
            .unwrap()
            .contains(&format!("Tag: {tag}").into())
    );
    assert_eq!(r["record_mismatch"], serde_json::json!([]), "RECORD");
    assert_eq!(r["zip_modes"]["execdriver/execdriver-shim"], "0o100755");

    // Installed into the venv, not picked up from the source tree.
    let pkg = Path::new(r["package"].as_str().unwrap());
    assert!(pkg.starts_with(&venv), "imported from {pkg:?}");
    assert!(!pkg.starts_with(root));
    assert_eq!(r["shim_mode"], "0o755");
    assert_eq!(r["shim_executable"], true);
    assert_eq!(r["lib"], pkg.join("libexecdriver.so").to_str().unwrap());
    assert_eq!(
        r["shim_path"],
        pkg.join("execdriver-shim").to_str().unwrap()
    );

    assert_eq!(r["raw_exec"]["exit_code"], 0, "{r}");
    assert_eq!(r["raw_exec"]["stdout"], "hello from the wheel: raw_exec\n");
    if let Some(why) = r["exec_unavailable"].as_str() {
        skip(&format!("python_wheel: exec unavailable here: {why}"));
    } else {
        assert_eq!(r["exec"]["exit_code"], 0, "{r}");
        assert_eq!(r["exec"]["stdout"], "hello from the wheel: exec\n");
    }
}
