//! N running tasks waited on two ways, side by side in one run (issue 18): one thread
//! polling every task's `wait_fd`, against one thread per task blocked in `driver_wait`.
//! For each: the host's threads and RSS while it waits, and the exit-to-notice latency
//! (from the moment `driver_signal` sent a task its SIGTERM to the moment its waiter has
//! the wait object), median and p99.
//!
//! Run: `bench/waitfd.sh [N]` (a release build; default N 1000), or
//! `cargo run --release --example waitfd_bench -- N fds|threads` (one way per process).

mod common;
use serde_json::{Value, json};
use std::os::fd::{FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

fn op(f: fn(Option<&str>) -> execdriver::Result<Value>, v: Value) -> Value {
    f(Some(&v.to_string())).unwrap_or_else(|e| panic!("{v}: {e}"))
}

/// (threads, RSS in KiB) of this process.
fn threads_and_rss() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |k: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("Threads:"), field("VmRSS:"))
}

/// Starts `n` tasks that sleep until signalled; with their wait fds when `fds`.
fn start_all(
    n: usize,
    dir: &std::path::Path,
    tag: &str,
    fds: bool,
) -> Vec<(String, Option<OwnedFd>)> {
    (0..n)
        .map(|i| {
            let r = op(
                execdriver::driver::start,
                json!({"name": format!("{tag}{i}"), "driver": "raw_exec", "alloc_dir": dir,
                       "kill_signal": "SIGTERM", "wait_fd": fds,
                       "config": {"command": "/bin/sleep", "args": ["3600"]}}),
            );
            let fd = r["wait_fd"]
                .as_i64()
                // SAFETY: the library handed the fd over to us.
                .map(|fd| unsafe { OwnedFd::from_raw_fd(fd as i32) });
            (r["task_id"].as_str().unwrap().to_string(), fd)
        })
        .collect()
}

/// Signals every task, and returns each one's signal time.
fn signal_all(tasks: &[(String, Option<OwnedFd>)]) -> Vec<Instant> {
    tasks
        .iter()
        .map(|(id, _)| {
            let t = Instant::now();
            op(
                execdriver::driver::signal,
                json!({"task_id": id, "signal": "SIGTERM"}),
            );
            t
        })
        .collect()
}

struct Result {
    threads: u64,
    rss_kib: u64,
    latencies: Vec<Duration>,
}

/// One thread waits on every wait fd (epoll); a readable one's wait object is taken at
/// once. The signals go from another thread, as the other way's do.
fn by_fds(n: usize, dir: &std::path::Path) -> Result {
    use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
    let tasks = start_all(n, dir, "fd", true);
    let ep = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).expect("epoll");
    for (i, (_, fd)) in tasks.iter().enumerate() {
        ep.add(
            fd.as_ref().unwrap(),
            EpollEvent::new(EpollFlags::EPOLLIN, i as u64),
        )
        .expect("epoll_ctl");
    }
    let (threads, rss_kib) = threads_and_rss();
    let ids: Vec<(String, Option<OwnedFd>)> =
        tasks.iter().map(|(id, _)| (id.clone(), None)).collect();
    let signaller = std::thread::spawn(move || signal_all(&ids));
    let mut noticed = vec![None; n];
    let mut left = n;
    let mut events = vec![EpollEvent::empty(); 256];
    while left > 0 {
        let got = ep
            .wait(&mut events, EpollTimeout::from(10_000u16))
            .expect("epoll_wait");
        assert!(got > 0, "nothing ended in 10 s");
        for e in &events[..got] {
            let i = e.data() as usize;
            op(
                execdriver::driver::wait,
                json!({"task_id": tasks[i].0, "timeout_ms": 0}),
            );
            noticed[i] = Some(Instant::now());
            ep.delete(tasks[i].1.as_ref().unwrap()).expect("epoll_ctl");
            left -= 1;
        }
    }
    let sent = signaller.join().expect("signaller");
    let latencies = finish(&tasks, &sent, &noticed);
    Result {
        threads,
        rss_kib,
        latencies,
    }
}

/// One thread per task in `driver_wait`.
fn by_threads(n: usize, dir: &std::path::Path) -> Result {
    let tasks = start_all(n, dir, "th", false);
    let (tx, rx) = std::sync::mpsc::channel();
    let ready = std::sync::Arc::new(std::sync::Barrier::new(n + 1));
    for (i, (id, _)) in tasks.iter().enumerate() {
        let (id, tx, ready) = (id.clone(), tx.clone(), ready.clone());
        std::thread::Builder::new()
            .stack_size(64 << 10)
            .spawn(move || {
                ready.wait();
                op(execdriver::driver::wait, json!({"task_id": id}));
                let _ = tx.send((i, Instant::now()));
            })
            .expect("thread");
    }
    ready.wait();
    // Every waiter is in (or about to enter) its driver_wait.
    std::thread::sleep(Duration::from_millis(200));
    let (threads, rss_kib) = threads_and_rss();
    let sent = signal_all(&tasks);
    let mut noticed = vec![None; n];
    for _ in 0..n {
        let (i, t) = rx.recv().expect("a waiter");
        noticed[i] = Some(t);
    }
    let latencies = finish(&tasks, &sent, &noticed);
    Result {
        threads,
        rss_kib,
        latencies,
    }
}

fn finish(
    tasks: &[(String, Option<OwnedFd>)],
    sent: &[Instant],
    noticed: &[Option<Instant>],
) -> Vec<Duration> {
    for (id, _) in tasks {
        op(
            execdriver::driver::destroy,
            json!({"task_id": id, "force": true}),
        );
    }
    let mut l: Vec<Duration> = sent
        .iter()
        .zip(noticed)
        .map(|(s, n)| n.expect("noticed").duration_since(*s))
        .collect();
    l.sort();
    l
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let dir = std::env::temp_dir().join(format!("execdriver-waitfd-bench-{}", std::process::id()));
    // SAFETY: set before any other thread exists.
    unsafe { std::env::set_var("EXECDRIVER_DATA_DIR", dir.join("data")) };
    common::use_build_shim();
    // Spares would only add processes that are not tasks.
    op(
        execdriver::driver::configure,
        json!({"prestart_supervisor": false}),
    );
    // Each way in a process of its own (`bench/waitfd.sh` runs both): neither inherits
    // the other's heap.
    let way = std::env::args().nth(2).unwrap_or_else(|| "fds".into());
    let (base_threads, base_rss) = threads_and_rss();
    let (name, r) = match way.as_str() {
        "threads" => (
            "one thread per task in driver_wait",
            by_threads(n, &dir.join("alloc")),
        ),
        _ => (
            "one thread polling the wait fds",
            by_fds(n, &dir.join("alloc")),
        ),
    };
    let l = &r.latencies;
    println!(
        "{name:<36} {n:>6} {:>8} {:>10} {:>14?} {:>14?}   (before the tasks: {base_threads} threads, {base_rss} KiB)",
        r.threads,
        r.rss_kib,
        l[l.len() / 2],
        l[l.len() * 99 / 100]
    );
    let _ = std::fs::remove_dir_all(&dir);
}
