//! Every snippet of the README is run as written, by a test here or by the test named
//! in [`SNIPPETS`]; a block that no test runs fails [`every_snippet_is_run`].

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Fenced blocks of `lang` in a Markdown file.
fn blocks(file: &Path, lang: &str) -> Vec<String> {
    all_blocks(file)
        .into_iter()
        .filter(|(l, _)| l == lang)
        .map(|(_, b)| b)
        .collect()
}

/// Every fenced block of a Markdown file: (language, body).
fn all_blocks(file: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(file).unwrap();
    let mut out = vec![];
    let mut rest = text.as_str();
    while let Some(i) = rest.find("```") {
        let after = &rest[i + 3..];
        let Some(nl) = after.find('\n') else { break };
        let lang = after[..nl].trim().to_string();
        let body = &after[nl + 1..];
        let end = body.find("```").unwrap();
        out.push((lang, body[..end].to_string()));
        rest = &body[end + 3..];
    }
    out
}

/// The README's blocks in order: language, first line, and what runs it.
const SNIPPETS: [(&str, &str, &str); 8] = [
    (
        "sh",
        "./demo.sh",
        ".ci/run runs ./test.sh and ./demo.sh (quick_start_is_what_ci_runs)",
    ),
    ("c", "#include <stdio.h>", "c_example_compiles_and_runs"),
    (
        "sh",
        "./install.sh /opt/execdriver",
        "c_example_compiles_and_runs",
    ),
    (
        "sh",
        "cargo build && make -C examples-c",
        "tests/c_harness.rs (readme_step_by_step_snippet)",
    ),
    (
        "python",
        "from execdriver import Driver, DriverTimeout",
        "tests/python_pkg (python/README.md's, the same text)",
    ),
    ("gomod", "module hello", "examples-go/readme_test.go"),
    ("go", "package main", "examples-go/readme_test.go"),
    ("sh", "cargo build", "go_agent_snippet_runs"),
];

#[test]
fn every_snippet_is_run() {
    let found: Vec<(String, String)> = all_blocks(&root().join("README.md"))
        .into_iter()
        .map(|(l, b)| (l, b.lines().next().unwrap_or("").to_string()))
        .collect();
    let known: Vec<(String, String)> = SNIPPETS
        .iter()
        .map(|(l, first, _)| {
            (
                l.to_string(),
                first.split("   ").next().unwrap().to_string(),
            )
        })
        .collect();
    let found_short: Vec<(String, String)> = found
        .iter()
        .map(|(l, first)| {
            (
                l.clone(),
                first.split("   ").next().unwrap().trim_end().to_string(),
            )
        })
        .collect();
    assert_eq!(
        found_short, known,
        "the README's blocks changed: give each new one a test and list it in SNIPPETS"
    );
}

/// The quick start's two commands are what CI runs on a fresh machine.
#[test]
fn quick_start_is_what_ci_runs() {
    let qs = &blocks(&root().join("README.md"), "sh")[0];
    let ci = std::fs::read_to_string(root().join(".ci/run")).unwrap();
    for cmd in ["./demo.sh", "./test.sh"] {
        assert!(qs.lines().any(|l| l.starts_with(cmd)), "{qs}");
        assert!(
            ci.lines().any(|l| l.trim() == cmd),
            ".ci/run does not run {cmd}"
        );
    }
}

/// The README's Go agent block, run as written from the repository's root: `cargo`
/// on its `PATH` is a stand-in that checks it is asked to `build` (this test's own build
/// made the library: a second build here would replace it under the other tests).
#[test]
fn go_agent_snippet_runs() {
    init();
    if Command::new("go").arg("version").output().is_err() {
        skip("go is not installed");
        return;
    }
    let block = blocks(&root().join("README.md"), "sh")
        .into_iter()
        .find(|b| b.starts_with("cargo build\n"))
        .unwrap();
    let d = TempDir::new("readme-agent");
    let bin = d.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let stub = bin.join("cargo");
    std::fs::write(&stub, "#!/bin/sh\n[ \"$*\" = build ] || exit 3\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let o = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &block])
        .current_dir(root())
        .env("PATH", path)
        .env("EXECDRIVER_DATA_DIR", d.path().join("data"))
        .env("GOCACHE", tmp.join("go-cache"))
        .env("GOPATH", tmp.join("go-path"))
        .env("GOPROXY", "off")
        .env_remove("EXECDRIVER_SHIM")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let line = out
        .lines()
        .find(|l| l.starts_with("../examples-c/jobs/hello-raw.json: {"))
        .unwrap_or_else(|| panic!("no result line: {out}"));
    assert!(
        line.contains("\"exit_code\":0") && line.contains("\"task_id\":\"hello-"),
        "{line}"
    );
}

/// `readelf -d` of an ELF file: its dynamic section.
fn dynamic_section(file: &Path) -> String {
    let o = Command::new("readelf")
        .arg("-d")
        .arg(file)
        .output()
        .expect("readelf runs (binutils, which gcc needs)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn c_example_compiles_and_runs() {
    init();
    let c = blocks(&root().join("README.md"), "c");
    assert_eq!(c.len(), 1);
    assert!(c[0].lines().count() < 20);
    let d = TempDir::new("readme-c");
    std::fs::write(d.path().join("hello.c"), &c[0]).unwrap();
    // Installed into a temporary prefix, built with pkg-config, run as it is: the
    // library found through the rpath (its SONAME libexecdriver.so.1), the shim through
    // the install layout.
    if Command::new("pkg-config")
        .arg("--version")
        .output()
        .is_err()
    {
        skip("pkg-config is not installed");
        return;
    }
    // The install block as written, in a directory of its own holding `hello.c` and what
    // `./install.sh` reads (itself, `Cargo.toml`, `include/`), with the one change of its
    // prefix for a temporary one; `BUILD_DIR` installs this test's build (no release
    // build here). The library is then found through the rpath (its SONAME
    // libexecdriver.so.1), the shim through the install layout.
    let install = blocks(&root().join("README.md"), "sh")
        .into_iter()
        .find(|b| b.starts_with("./install.sh"))
        .unwrap();
    for f in ["install.sh", "Cargo.toml", "include"] {
        std::os::unix::fs::symlink(root().join(f), d.path().join(f)).unwrap();
    }
    let prefix = d.path().join("prefix");
    let script = install.replace("/opt/execdriver", prefix.to_str().unwrap());
    let build = Path::new(env!("CARGO_BIN_EXE_execdriver-shim"))
        .parent()
        .unwrap();
    let o = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .current_dir(d.path())
        .env("BUILD_DIR", build)
        .env_remove("LD_LIBRARY_PATH")
        .env_remove("EXECDRIVER_SHIM")
        .env("EXECDRIVER_DATA_DIR", d.path().join("data"))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out} {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(prefix.join("libexec/execdriver/execdriver-shim").is_file());
    // The installed library is named by its SONAME, the program needs it by that name
    // (not by the `.so` link it was linked through), and finds it through its rpath.
    let lib = dynamic_section(&prefix.join("lib/libexecdriver.so.1"));
    assert!(
        lib.contains("(SONAME)") && lib.contains("Library soname: [libexecdriver.so.1]"),
        "{lib}"
    );
    let prog = dynamic_section(&d.path().join("a.out"));
    let needed: Vec<&str> = prog
        .lines()
        .filter(|l| l.contains("(NEEDED)") && l.contains("libexecdriver"))
        .collect();
    assert!(
        needed.len() == 1 && needed[0].contains("Shared library: [libexecdriver.so.1]"),
        "{prog}"
    );
    let libdir = prefix.join("lib");
    assert!(
        prog.lines()
            .any(|l| (l.contains("(RUNPATH)") || l.contains("(RPATH)"))
                && l.contains(libdir.to_str().unwrap())),
        "{prog}"
    );
    assert!(
        out.lines().nth(1).unwrap().starts_with("0 {") && out.contains("\"exit_code\":0"),
        "{out}"
    );
    assert_eq!(
        std::fs::read_to_string(d.path().join("data/alloc/readme-c/alloc/logs/hi.stdout.0"))
            .unwrap(),
        "hello\n"
    );
}

#[test]
fn python_and_shell_snippets_are_the_tested_ones() {
    let py = blocks(&root().join("python/README.md"), "python");
    assert!(
        blocks(&root().join("README.md"), "python").contains(&py[0]),
        "README's Python snippet differs from python/README.md's (tested) one"
    );
    let harness_test = std::fs::read_to_string(root().join("tests/c_harness.rs")).unwrap();
    assert!(
        harness_test.contains("\"cargo build && make -C examples-c\""),
        "tests/c_harness.rs no longer runs the README's harness block"
    );
    let go_test = std::fs::read_to_string(root().join("examples-go/readme_test.go")).unwrap();
    assert!(
        go_test.contains("../README.md"),
        "examples-go/readme_test.go no longer runs the README's Go snippet"
    );
}

/// `scripts/prereqs.sh`, as demo.sh and test.sh use it: a missing tool, where nothing
/// can install it (no apt-get on PATH), stops it at once with the exact `apt-get install`
/// command; no cargo, with the rustup one. Both scripts check before they build, with the
/// tools the README names for each.
#[test]
fn prerequisites_stop_with_the_command() {
    let d = TempDir::new("readme-prereqs");
    let bin = d.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let which = |tool: &str| {
        std::env::var_os("PATH")
            .and_then(|p| {
                std::env::split_paths(&p)
                    .map(|d| d.join(tool))
                    .find(|p| p.is_file())
            })
            .unwrap_or_else(|| panic!("{tool} is not on PATH"))
    };
    for tool in ["sed", "sort", "head", "id", "cargo", "rustc"] {
        std::os::unix::fs::symlink(which(tool), bin.join(tool)).unwrap();
    }
    let prereqs = |path: &Path, args: &str| {
        let t0 = std::time::Instant::now();
        let o = Command::new(which("bash"))
            .args([
                "-euo",
                "pipefail",
                "-c",
                &format!(". scripts/prereqs.sh; prereqs demo.sh {args}; echo passed"),
            ])
            .current_dir(root())
            .env("PATH", path)
            .output()
            .unwrap();
        assert!(t0.elapsed() < std::time::Duration::from_secs(5));
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (code, out, err) = prereqs(&bin, "sed:sed no-such-tool:no-such-package");
    assert_eq!((code, out.as_str()), (Some(1), ""), "{err}");
    assert!(
        err.contains("demo.sh: missing no-such-package")
            && err.contains("\n    apt-get install -y no-such-package\n"),
        "{err}"
    );
    let (code, out, err) = prereqs(&bin, "sed:sed");
    assert_eq!((code, out.as_str()), (Some(0), "passed\n"), "{err}");

    std::fs::remove_file(bin.join("cargo")).unwrap();
    let (code, _, err) = prereqs(&bin, "sed:sed");
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("https://sh.rustup.rs"), "{err}");
    let cargo_toml = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let msrv = cargo_toml
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = \""))
        .unwrap()
        .trim_end_matches('"');
    assert!(err.contains(&format!("Rust {msrv} or later")), "{err}");

    // Each script checks first, and the README names what each needs.
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let needs = readme
        .split("Needs:")
        .nth(1)
        .unwrap()
        .split("\n\n")
        .next()
        .unwrap();
    let needs = needs.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(needs.contains(&format!("{msrv} or later")), "{needs}");
    for script in ["demo.sh", "test.sh"] {
        let text = std::fs::read_to_string(root().join(script)).unwrap();
        let call = text.find(&format!("\nprereqs {script} ")).unwrap();
        assert!(
            text.find("\ncargo ").unwrap() > call,
            "{script} builds first"
        );
        let line = text[call..]
            .split("\n\n")
            .next()
            .unwrap()
            .replace("\\\n", " ");
        let line = line.lines().nth(1).unwrap();
        let mentioned = needs
            .split(&format!("`./{script}` also needs"))
            .nth(1)
            .unwrap();
        let mentioned = mentioned
            .split(';')
            .next()
            .unwrap()
            .split('.')
            .next()
            .unwrap();
        for tool in line.split_whitespace().filter(|w| w.contains(':')) {
            let cmd = tool.split(':').next().unwrap();
            let named = match cmd {
                "go" => "Go",
                "mkfs.ext4" => "e2fsprogs",
                "unshare" => "util-linux",
                other => other,
            };
            assert!(
                mentioned.contains(named),
                "README's Needs does not say {script} needs {named}: {mentioned}"
            );
        }
    }
}
