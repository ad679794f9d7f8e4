//! What each part of exec's confinement costs a start, measured alone (a benchmark, not a
//! test; root only): installing the seccomp filter, the v1 `devices` allowlist of a new
//! cgroup, attaching the v2 device program to a new cgroup2 directory, masking `/proc`.
//! Each beside a baseline of the same kind in the same run: a bare fork+exit, a bare
//! cgroup mkdir+rmdir, a bare procfs mount.
//!
//! `cargo run --release --example isolation_costs [N]` (default 200).

use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Runs `f` in a forked child (single-threaded: this example has one thread) and returns
/// the microseconds it reported through a pipe.
fn in_child(f: impl FnOnce() -> f64) -> f64 {
    let mut fds = [0i32; 2];
    // SAFETY: a pipe into a valid array; fork in a single-threaded process; the child
    // writes 8 bytes and leaves with _exit.
    unsafe {
        libc::pipe(fds.as_mut_ptr());
        match libc::fork() {
            0 => {
                let us = f();
                libc::write(fds[1], (&us as *const f64).cast(), 8);
                libc::_exit(0);
            }
            pid => {
                libc::close(fds[1]);
                let mut us = 0f64;
                libc::read(fds[0], (&mut us as *mut f64).cast(), 8);
                libc::close(fds[0]);
                let mut st = 0;
                libc::waitpid(pid, &mut st, 0);
                us
            }
        }
    }
}

fn time(f: impl FnOnce()) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_secs_f64() * 1e6
}

fn row(what: &str, us: f64, base: f64, base_name: &str) {
    println!("{what:<44} {us:>8.1} us   (baseline {base_name}: {base:.1} us)");
}

fn main() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("isolation_costs: needs root (cgroups, mounts)");
        std::process::exit(2);
    }
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200);
    let prog = execdriver::supervisor::seccomp::compile().unwrap();
    println!(
        "{n} runs each, medians; the seccomp filter has {} instructions",
        prog.len()
    );

    // seccomp: the install alone, in a fresh child each time (a filter cannot be removed).
    let base = median((0..n).map(|_| in_child(|| time(|| {}))).collect());
    let install = median(
        (0..n)
            .map(|_| {
                in_child(|| {
                    time(|| {
                        execdriver::supervisor::seccomp::install(&prog).unwrap();
                    })
                })
            })
            .collect(),
    );
    row(
        "seccomp filter install",
        install,
        base,
        "nothing, in the same child",
    );
    let small = execdriver::supervisor::seccomp::enosys_filter("clone3").unwrap();
    let small_us = median(
        (0..n)
            .map(|_| {
                in_child(|| {
                    time(|| {
                        execdriver::supervisor::seccomp::install(&small).unwrap();
                    })
                })
            })
            .collect(),
    );
    row(
        &format!("  a {}-instruction filter's install", small.len()),
        small_us,
        base,
        "nothing",
    );

    let layout = execdriver::cgroup::detect().unwrap();
    let tag = format!("execdriver-costs-{}", std::process::id());
    // v1 devices: mkdir, the allowlist, rmdir against mkdir+rmdir.
    if let execdriver::cgroup::Layout::V1 { controllers }
    | execdriver::cgroup::Layout::Hybrid { controllers, .. } = &layout
        && let Some(devices) = controllers.get("devices")
    {
        let dir = devices.join(&tag);
        let bare = median(
            (0..n)
                .map(|_| {
                    time(|| {
                        std::fs::create_dir(&dir).unwrap();
                        std::fs::remove_dir(&dir).unwrap();
                    })
                })
                .collect(),
        );
        let with = median(
            (0..n)
                .map(|_| {
                    time(|| {
                        std::fs::create_dir(&dir).unwrap();
                        execdriver::cgroup::devices::v1_restrict(&dir).unwrap();
                        std::fs::remove_dir(&dir).unwrap();
                    })
                })
                .collect(),
        );
        row(
            "v1 devices allowlist (+mkdir+rmdir)",
            with,
            bare,
            "mkdir+rmdir",
        );
    }
    // v2 device program: attach to a new cgroup2 dir (any cgroup2 dir takes one).
    let unified = match &layout {
        execdriver::cgroup::Layout::V2 { root } => Some(root.clone()),
        execdriver::cgroup::Layout::Hybrid { unified, .. } => Some(unified.clone()),
        _ => None,
    };
    if let Some(u) = unified {
        let dir = u.join(&tag);
        let bare = median(
            (0..n)
                .map(|_| {
                    time(|| {
                        std::fs::create_dir(&dir).unwrap();
                        std::fs::remove_dir(&dir).unwrap();
                    })
                })
                .collect(),
        );
        let first = time(|| {
            std::fs::create_dir(&dir).unwrap();
            execdriver::cgroup::devices::v2_attach(&dir).unwrap();
            std::fs::remove_dir(&dir).unwrap();
        });
        let with = median(
            (0..n)
                .map(|_| {
                    time(|| {
                        std::fs::create_dir(&dir).unwrap();
                        execdriver::cgroup::devices::v2_attach(&dir).unwrap();
                        std::fs::remove_dir(&dir).unwrap();
                    })
                })
                .collect(),
        );
        row(
            "v2 device program attach (+mkdir+rmdir)",
            with,
            bare,
            "mkdir+rmdir",
        );
        row(
            "  the first, with the program's load",
            first,
            bare,
            "mkdir+rmdir",
        );
    }

    // /proc masking: in a child with its own mount namespace, against the procfs mount.
    let proc_run = |mask: bool| {
        in_child(move || {
            use nix::mount::{MsFlags, mount};
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).unwrap();
            mount(
                None::<&str>,
                "/",
                None::<&str>,
                MsFlags::MS_SLAVE | MsFlags::MS_REC,
                None::<&str>,
            )
            .unwrap();
            let root =
                std::env::temp_dir().join(format!("execdriver-costs-proc-{}", std::process::id()));
            let _ = std::fs::create_dir_all(root.join("proc"));
            let _ = std::fs::create_dir_all(root.join("dev"));
            mount(
                Some("tmpfs"),
                &root.join("dev"),
                Some("tmpfs"),
                MsFlags::empty(),
                None::<&str>,
            )
            .unwrap();
            let null = root.join("dev/null");
            nix::sys::stat::mknod(
                &null,
                nix::sys::stat::SFlag::S_IFCHR,
                nix::sys::stat::Mode::from_bits_truncate(0o666),
                nix::sys::stat::makedev(1, 3),
            )
            .unwrap();
            let us = time(|| {
                mount(
                    Some("proc"),
                    &root.join("proc"),
                    Some("proc"),
                    MsFlags::empty(),
                    None::<&str>,
                )
                .unwrap();
                if mask {
                    execdriver::supervisor::rootfs::mask_proc(
                        &root.join("proc"),
                        &root.join("dev"),
                    )
                    .unwrap();
                }
            });
            let _ = nix::mount::umount2(&root.join("proc"), nix::mount::MntFlags::MNT_DETACH);
            let _ = nix::mount::umount2(&root.join("dev"), nix::mount::MntFlags::MNT_DETACH);
            let _ = std::fs::remove_dir(root.join("proc"));
            let _ = std::fs::remove_dir(root.join("dev"));
            let _ = std::fs::remove_dir(&root);
            us
        })
    };
    let bare = median((0..n).map(|_| proc_run(false)).collect());
    let with = median((0..n).map(|_| proc_run(true)).collect());
    row("procfs mount + /proc masks", with, bare, "procfs mount");
}
