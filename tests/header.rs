//! The committed `include/execdriver.h` must be exactly what cbindgen generates from the
//! crate now (SPEC: the header is generated and committed).
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
