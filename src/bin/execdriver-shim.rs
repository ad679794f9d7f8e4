//! The per-task supervisor executable of execdriver. Started by the library with the
//! task's state dir as its only argument (or `--exec <state-dir> <request>` for
//! `driver_exec`); not meant to be run by hand.

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let code = match args.as_slice() {
        [_, flag, dir, req] if flag == "--exec" => {
            execdriver::supervisor::exec::main(dir.as_ref(), req.as_ref())
        }
        [_, dir] => execdriver::supervisor::main(std::path::Path::new(dir)),
        _ => {
            eprintln!("usage: execdriver-shim <state-dir> (started by libexecdriver)");
            2
        }
    };
    std::process::exit(code);
}
