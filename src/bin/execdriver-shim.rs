//! The per-task supervisor executable of execdriver. Started by the library with the
//! task's state dir as its only argument; not meant to be run by hand.

fn main() {
    let Some(dir) = std::env::args_os().nth(1) else {
        eprintln!("usage: execdriver-shim <state-dir> (started by libexecdriver)");
        std::process::exit(2);
    };
    std::process::exit(execdriver::supervisor::main(std::path::Path::new(&dir)));
}
