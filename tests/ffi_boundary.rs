//! The C ABI boundary: whatever the input, every export returns a status and a JSON
//! object, never panics or aborts, and accepts NULL where the contract says so.

use execdriver::ffi;
use std::ffi::{CStr, CString, c_char};

type Export = unsafe extern "C" fn(*const c_char, *mut *mut c_char) -> i32;

const EXPORTS: &[(&str, Export)] = &[
    ("configure", ffi::driver_configure),
    ("fingerprint", ffi::driver_fingerprint),
    ("start", ffi::driver_start),
    ("wait", ffi::driver_wait),
    ("stop", ffi::driver_stop),
    ("destroy", ffi::driver_destroy),
    ("inspect", ffi::driver_inspect),
    ("stats", ffi::driver_stats),
    ("signal", ffi::driver_signal),
    ("recover", ffi::driver_recover),
    ("exec", ffi::driver_exec),
    ("exec_wait", ffi::driver_exec_wait),
    ("exec_resize", ffi::driver_exec_resize),
    ("logs", ffi::driver_logs),
];

/// Calls `f` and returns (status, response JSON), freeing the response.
fn call(f: Export, req: Option<&[u8]>) -> (i32, serde_json::Value) {
    let c = req.map(|b| CString::new(b.to_vec()).unwrap());
    let mut out: *mut c_char = std::ptr::null_mut();
    // SAFETY: a valid C string or NULL, and a valid out pointer.
    let rc = unsafe {
        f(
            c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
            &mut out,
        )
    };
    assert!(!out.is_null(), "no response");
    // SAFETY: the library returned a NUL-terminated string.
    let text = unsafe { CStr::from_ptr(out) }.to_str().unwrap().to_string();
    // SAFETY: freed exactly once with the library's own function.
    unsafe { ffi::driver_free(out) };
    (
        rc,
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}")),
    )
}

#[test]
fn garbage_never_panics_and_always_answers_json() {
    let inputs: &[&[u8]] = &[
        b"",
        b"{",
        b"[]",
        b"null",
        b"42",
        b"\"x\"",
        b"{}",
        b"{\"task_id\": 5}",
        b"{\"task_id\": \"\"}",
        b"{\"handle\": null}",
        b"{\"handle\": {\"version\": 1}}",
        b"\xff\xfe",
        b"{\"name\": \"\xc3\x28\"}",
        b"{\"task_id\": \"x\", \"signal\": \"SIGNOPE\"}",
        b"{\"name\":\"a\",\"config\":{\"command\":\"x\",\"args\":{}}}",
        b"{\"name\":\"../..\",\"config\":{\"command\":\"x\"}}",
        b"{\"artifact\":{\"retries\":-1}}",
    ];
    for (name, f) in EXPORTS {
        for input in inputs {
            let (rc, v) = call(*f, Some(input));
            if rc != 0 {
                assert!(v["error"]["code"].is_string(), "{name} {input:?}: {v}");
                assert_ne!(rc, 8, "{name} {input:?} hit an internal error: {v}");
            }
        }
    }
}

#[test]
fn null_request_and_null_response_pointer() {
    for (name, f) in EXPORTS {
        let (rc, v) = call(*f, None);
        match *name {
            "configure" | "fingerprint" => assert_eq!(rc, 0, "{name}: {v}"),
            _ => assert_eq!(rc, 1, "{name}: {v}"),
        }
        // SAFETY: NULL response pointer is allowed by the contract.
        let rc2 = unsafe { f(c"{}".as_ptr(), std::ptr::null_mut()) };
        assert!((0..=8).contains(&rc2));
    }
    // SAFETY: NULL is accepted by driver_free.
    unsafe { ffi::driver_free(std::ptr::null_mut()) };
    assert_eq!(ffi::driver_abi_version(), 1);
    // SAFETY: a static string.
    assert_eq!(
        unsafe { CStr::from_ptr(ffi::driver_version()) }
            .to_str()
            .unwrap(),
        env!("CARGO_PKG_VERSION")
    );
}
