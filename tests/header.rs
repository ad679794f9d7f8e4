//! The committed `include/execdriver.h` must be exactly what cbindgen generates from the
//! crate now; everything it declares is in docs/api.md, and driver_status_str() answers
//! what docs/api.md's status table says.
//!
//! Regenerate after changing the ABI or its doc comments:
//!     UPDATE_HEADER=1 cargo test --test header

mod common;

use std::path::Path;
use std::process::Command;

/// Written once at the top of the header, for every `driver_<op>`.
const CONVENTION: &str = r#"
/**
 * Calling convention of every `driver_<op>(request_json, response_json)`:
 *
 * - `request_json`: NULL or a NUL-terminated UTF-8 JSON object, read only during the
 *   call (NULL means "no fields" where the operation has no required ones).
 * - `response_json`: NULL or valid for writing one pointer; if not NULL it receives a
 *   JSON object the caller owns (the result, or `{"error": {...}}`), which the caller
 *   frees with driver_free().
 * - Returns a DriverStatus (driver_status_str() gives it as text).
 * - Safe to call from any thread, concurrently; a panic inside becomes DRIVER_INTERNAL.
 */
"#;

fn generate() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut config =
        cbindgen::Config::from_file(root.join("cbindgen.toml")).expect("cbindgen.toml parses");
    // The version macros, from the crate's version and ABI version.
    let v = env!("CARGO_PKG_VERSION");
    let [major, minor, patch] = [
        env!("CARGO_PKG_VERSION_MAJOR"),
        env!("CARGO_PKG_VERSION_MINOR"),
        env!("CARGO_PKG_VERSION_PATCH"),
    ];
    config.after_includes = Some(format!(
        "{CONVENTION}\n/** The C ABI version this header describes (driver_abi_version() returns it). */\n\
         #define EXECDRIVER_ABI_VERSION {abi}\n\
         /** The library version this header comes with (driver_version() returns it). */\n\
         #define EXECDRIVER_VERSION \"{v}\"\n\
         #define EXECDRIVER_VERSION_MAJOR {major}\n\
         #define EXECDRIVER_VERSION_MINOR {minor}\n\
         #define EXECDRIVER_VERSION_PATCH {patch}\n",
        abi = execdriver::ffi::ABI_VERSION
    ));
    let bindings = cbindgen::Builder::new()
        .with_crate(root)
        .with_config(config)
        .generate()
        .expect("cbindgen generates the header");
    let mut out = Vec::new();
    bindings.write(&mut out);
    String::from_utf8(out).expect("header is UTF-8")
}

#[test]
fn header_is_up_to_date() {
    common::committed_is_up_to_date(
        "include/execdriver.h",
        &generate(),
        "UPDATE_HEADER",
        "header",
    );
}

#[test]
fn header_has_every_export_and_status() {
    let h = generate();
    for name in [
        "driver_abi_version",
        "driver_version",
        "driver_free",
        "driver_configure",
        "driver_fingerprint",
        "driver_start",
        "driver_wait",
        "driver_stop",
        "driver_destroy",
        "driver_inspect",
        "driver_stats",
        "driver_signal",
        "driver_recover",
        "driver_exec",
        "driver_exec_wait",
        "driver_exec_resize",
        "driver_logs",
        "driver_set_log_callback",
    ] {
        assert!(
            h.contains(&format!("{name}(")),
            "{name} missing from header"
        );
    }
    for (i, v) in [
        "DRIVER_OK",
        "DRIVER_INVALID",
        "DRIVER_NOT_FOUND",
        "DRIVER_TIMEOUT",
        "DRIVER_UNSUPPORTED",
        "DRIVER_ARTIFACT",
        "DRIVER_START",
        "DRIVER_CONFLICT",
        "DRIVER_INTERNAL",
    ]
    .iter()
    .enumerate()
    {
        assert!(h.contains(&format!("{v} = {i},")), "{v} = {i} missing");
    }
    for (i, v) in ["OFF", "ERROR", "WARN", "INFO", "DEBUG", "TRACE"]
        .iter()
        .enumerate()
    {
        assert!(
            h.contains(&format!("DRIVER_LOG_{v} = {i},")),
            "DRIVER_LOG_{v} missing"
        );
    }
    assert!(h.contains(
        "typedef void (*DriverLogCallback)(void *user_data, int32_t level, const char *message);"
    ));
}

/// The header compiles as strict C11 and as C++ (cpp_compat). Skips a compiler that is
/// missing, except in CI (`.ci/run` installs both).
#[test]
fn header_compiles() {
    let inc = Path::new(env!("CARGO_MANIFEST_DIR")).join("include");
    let probe = std::env::temp_dir().join(format!("execdriver-hdr-{}.c", std::process::id()));
    std::fs::write(
        &probe,
        "#include \"execdriver.h\"\n\
         #if EXECDRIVER_ABI_VERSION != 1 || EXECDRIVER_VERSION_MAJOR < 0\n#error versions\n#endif\n\
         int main(void) { return (int)driver_abi_version() - EXECDRIVER_ABI_VERSION + DRIVER_OK\n\
         + (driver_status_str(DRIVER_OK)[0] != 'o'); }\n",
    )
    .unwrap();
    for (cc, args) in [
        ("gcc", &["-std=c11"][..]),
        ("g++", &["-x", "c++", "-std=c++11"][..]),
    ] {
        let out = match Command::new(cc)
            .args(["-Wall", "-Wextra", "-Werror", "-pedantic", "-fsyntax-only"])
            .args(args)
            .arg("-I")
            .arg(&inc)
            .arg(&probe)
            .output()
        {
            Ok(o) => o,
            Err(e) => {
                common::skip(&format!("{cc} cannot run: {e}"));
                continue;
            }
        };
        assert!(
            out.status.success(),
            "{cc} rejects the header:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _ = std::fs::remove_file(&probe);
}

/// Each `driver_*` function, `Driver*` type, `DRIVER_*` constant and `EXECDRIVER_*`
/// macro of the header is in docs/api.md; so is every error code of src/error.rs, as a
/// row of its table of error codes and under its status in the table of statuses.
#[test]
fn api_md_names_everything_in_the_header() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let h = std::fs::read_to_string(root.join("include/execdriver.h")).unwrap();
    let api = std::fs::read_to_string(root.join("docs/api.md")).unwrap();
    let mut names = std::collections::BTreeSet::new();
    for word in h.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        let declared = word.starts_with("driver_")
            || word.starts_with("DRIVER_")
            || (word.starts_with("Driver") && word.len() > "Driver".len())
            || (word.starts_with("EXECDRIVER_") && word != "EXECDRIVER_H");
        if declared {
            names.insert(word);
        }
    }
    for f in [
        "driver_abi_version",
        "driver_status_str",
        "DriverLogLevel",
        "DRIVER_LOG_OFF",
    ] {
        assert!(names.contains(f), "{f} not found in the header");
    }
    let missing: Vec<_> = names.iter().filter(|n| !api.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "docs/api.md does not mention {missing:?}"
    );
    for f in ["driver_abi_version", "driver_version", "driver_status_str"] {
        assert!(
            api.contains(&format!("\n### {f}\n")),
            "docs/api.md has no section {f}"
        );
    }

    let section = |title: &str| {
        let start = api
            .find(&format!("\n## {title}\n"))
            .unwrap_or_else(|| panic!("docs/api.md has no section {title}"));
        let body = &api[start + title.len() + 5..];
        body[..body.find("\n## ").unwrap_or(body.len())].to_string()
    };
    let (errors, statuses) = (section("Error codes"), section("Status codes"));
    for code in execdriver::Code::ALL {
        let c = code.as_str();
        assert!(
            errors.contains(&format!("\n| `{c}` |")),
            "docs/api.md's error codes have no row for {c}"
        );
        let status = code.status() as i32;
        let row = statuses
            .lines()
            .find(|l| l.starts_with(&format!("| {status} |")))
            .unwrap_or_else(|| panic!("docs/api.md's status table has no row {status}"));
        assert!(row.contains(&format!("`{c}`")), "{c} is not in: {row}");
    }
}

/// The texts of docs/api.md's status table: (value, `driver_status_str()`), from its rows.
fn documented_status_texts() -> Vec<(i32, String)> {
    let api =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/api.md")).unwrap();
    let table = &api[api.find("\n## Status codes\n").unwrap()..];
    let rows: Vec<(i32, String)> = table
        .lines()
        .skip_while(|l| !l.starts_with("| value |"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            let cells: Vec<&str> = l.split(" | ").collect();
            let text = cells.last().unwrap().trim_end_matches(" |");
            (
                cells[0].trim_start_matches("| ").parse().unwrap(),
                text.trim_matches('`').to_string(),
            )
        })
        .collect();
    assert_eq!(rows.len(), 9, "{rows:?}");
    rows
}

/// driver_status_str() from a C program linked against the library (as an install links
/// it: by its SONAME, found through an rpath): every status 0–8 gives the text
/// docs/api.md's table says, and other values "unknown status".
#[test]
fn status_str_from_c() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let d = common::TempDir::new("hdr-status");
    let dir = d.path();
    std::os::unix::fs::symlink(common::built_lib(), dir.join("libexecdriver.so.1")).unwrap();
    std::os::unix::fs::symlink("libexecdriver.so.1", dir.join("libexecdriver.so")).unwrap();
    let src = dir.join("probe.c");
    std::fs::write(
        &src,
        "#include <stdio.h>\n#include <stdint.h>\n#include \"execdriver.h\"\n\
         int main(void) {\n\
             const int32_t s[] = {0, 1, 2, 3, 4, 5, 6, 7, 8, -1, 9, INT32_MIN, INT32_MAX};\n\
             for (unsigned i = 0; i < sizeof s / sizeof s[0]; i++)\n\
                 printf(\"%ld\\t%s\\n\", (long)s[i], driver_status_str(s[i]));\n\
             return 0;\n}\n",
    )
    .unwrap();
    let exe = dir.join("probe");
    let cc = Command::new("gcc")
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-I"])
        .arg(root.join("include"))
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .arg("-L")
        .arg(dir)
        .arg(format!("-Wl,-rpath,{}", dir.display()))
        .arg("-lexecdriver")
        .output();
    let cc = match cc {
        Ok(o) => o,
        Err(e) => {
            common::skip(&format!("gcc cannot run: {e}"));
            return;
        }
    };
    assert!(
        cc.status.success(),
        "{}",
        String::from_utf8_lossy(&cc.stderr)
    );
    let out = Command::new(&exe)
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Vec<(i32, String)> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (n, t) = l.split_once('\t').unwrap();
            (n.parse().unwrap(), t.to_string())
        })
        .collect();
    let mut want = documented_status_texts();
    for n in [-1, 9, i32::MIN, i32::MAX] {
        want.push((n, "unknown status".to_string()));
    }
    assert_eq!(got, want);
}
