//! The README's snippets are real: the C example compiles and runs against the built
//! library; the shell and Python snippets are the ones the host tests run.

mod common;
use common::*;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Fenced blocks of `lang` in a Markdown file.
fn blocks(file: &Path, lang: &str) -> Vec<String> {
    let text = std::fs::read_to_string(file).unwrap();
    let open = format!("```{lang}\n");
    let mut out = vec![];
    let mut rest = text.as_str();
    while let Some(i) = rest.find(&open) {
        let body = &rest[i + open.len()..];
        let end = body.find("```").unwrap();
        out.push(body[..end].to_string());
        rest = &body[end..];
    }
    out
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
    if std::process::Command::new("pkg-config")
        .arg("--version")
        .output()
        .is_err()
    {
        skip("pkg-config is not installed");
        return;
    }
    let build = Path::new(env!("CARGO_BIN_EXE_execdriver-shim"))
        .parent()
        .unwrap();
    let prefix = d.path().join("prefix");
    let o = std::process::Command::new(root().join("install.sh"))
        .arg(&prefix)
        .env("BUILD_DIR", build)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(prefix.join("libexec/execdriver/execdriver-shim").is_file());
    let flags = std::process::Command::new("pkg-config")
        .args(["--cflags", "--libs", "execdriver"])
        .env("PKG_CONFIG_PATH", prefix.join("lib/pkgconfig"))
        .output()
        .unwrap();
    assert!(
        flags.status.success(),
        "{}",
        String::from_utf8_lossy(&flags.stderr)
    );
    let flags = String::from_utf8(flags.stdout).unwrap();
    let exe = d.path().join("hello");
    let o = std::process::Command::new("cc")
        .args(["-Wall", "-Wextra", "-Werror"])
        .arg(d.path().join("hello.c"))
        .args(flags.split_whitespace())
        .arg("-o")
        .arg(&exe)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = std::process::Command::new(&exe)
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
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let py = blocks(&root().join("python/README.md"), "python");
    assert!(
        blocks(&root().join("README.md"), "python").contains(&py[0]),
        "README's Python snippet differs from python/README.md's (tested) one"
    );
    let harness_test = std::fs::read_to_string(root().join("tests/c_harness.rs")).unwrap();
    let steps = harness_test
        .split("const README_STEPS: &str = r#\"")
        .nth(1)
        .unwrap()
        .split("\"#;")
        .next()
        .unwrap();
    assert!(
        readme.contains(steps),
        "README's harness snippet differs from tests/c_harness.rs README_STEPS"
    );
    let go_test = std::fs::read_to_string(root().join("examples-go/agent_test.go")).unwrap();
    assert!(
        readme.contains("go build -o agent .") && go_test.contains("go"),
        "Go snippet missing"
    );
}
