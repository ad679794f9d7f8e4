//! The per-task supervisor executable of execdriver. Started by the library (the launch
//! spec arrives on its stdout socket, or `--exec <state-dir> <request>` for
//! `driver_exec`); not meant to be run by hand.
//!
//! `no_main`: the C `main` below skips std's runtime set-up (probing fds 0–2, reading
//! `/proc/self/maps` for the main thread's stack guard, installing SIGSEGV/SIGBUS
//! handlers and an alternate signal stack, ignoring SIGPIPE). None of it is needed here —
//! the supervisor blocks every signal and reads them from a signalfd — and on these
//! machines it was ~0.3 ms of every task start. `std::env::args_os` still works: glibc
//! hands argv to std through `.init_array`.
#![no_main]

#[unsafe(no_mangle)]
pub extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    match args.as_slice() {
        [_, flag, dir, req] if flag == "--exec" => {
            execdriver::supervisor::exec::main(dir.as_ref(), req.as_ref())
        }
        [_] => execdriver::supervisor::main(None),
        [_, flag, warm] if flag == "--warm" => execdriver::supervisor::main(Some(warm)),
        _ => {
            eprintln!("usage: execdriver-shim (started by libexecdriver)");
            2
        }
    }
}
