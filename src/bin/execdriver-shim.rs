//! The per-task supervisor executable of execdriver. Started by the library (the launch
//! spec arrives on its stdout socket, or `--exec <request>` for
//! `driver_exec`); not meant to be run by hand.
//!
//! `no_main`: the C `main` below skips std's runtime set-up (probing fds 0–2, reading
//! `/proc/self/maps` for the main thread's stack guard, installing SIGSEGV/SIGBUS
//! handlers and an alternate signal stack, ignoring SIGPIPE). None of it is needed here —
//! the supervisor blocks every signal and reads them from a signalfd — and it would cost
//! every task start ~0.3 ms on a 2-core VM. The arguments are read from `argv` here
//! (std's `args_os` is empty under `no_main` with some C libraries, musl's).
#![no_main]
#![warn(clippy::too_many_lines)]

// The C runtime is the only caller, with its own argc/argv.
#[allow(clippy::not_unsafe_ptr_arg_deref)]
#[unsafe(no_mangle)]
pub extern "C" fn main(argc: libc::c_int, argv: *const *const libc::c_char) -> libc::c_int {
    use std::os::unix::ffi::OsStrExt;
    let args: Vec<std::ffi::OsString> = (0..argc.max(0) as usize)
        .map(|i| {
            // SAFETY: the C runtime passes argc valid NUL-terminated strings in argv.
            let s = unsafe { std::ffi::CStr::from_ptr(*argv.add(i)) };
            std::ffi::OsStr::from_bytes(s.to_bytes()).to_owned()
        })
        .collect();
    execdriver::shim_main(&args)
}
