//! `"wait_fd": true`: a file descriptor the host polls (epoll, asyncio, Go's poller)
//! instead of blocking a thread per task in `driver_wait`; readable exactly once the
//! task's exit is known.

mod common;
use common::*;
use serde_json::json;
use std::os::fd::{FromRawFd, OwnedFd};

fn readable(fd: &OwnedFd, ms: u16) -> bool {
    use std::os::fd::AsFd;
    let mut p = [nix::poll::PollFd::new(
        fd.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    nix::poll::poll(&mut p, nix::poll::PollTimeout::from(ms)).unwrap() == 1
}

/// The `pipe:[inode]` names of this process's open fds.
fn open_pipes() -> Vec<String> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|l| l.to_string_lossy().into_owned())
        .filter(|l| l.starts_with("pipe:"))
        .collect()
}

fn pipe_name(fd: &OwnedFd) -> String {
    use std::os::fd::AsRawFd;
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// Starts `req` with a wait fd; returns the task id and the fd (owned: closed on drop).
fn start_with_fd(mut req: serde_json::Value) -> (String, OwnedFd) {
    req["wait_fd"] = json!(true);
    let r = start(req).unwrap();
    let fd = r["wait_fd"].as_i64().expect("a wait_fd") as i32;
    // SAFETY: the library handed this fd over to us.
    (r["task_id"].as_str().unwrap().to_string(), unsafe {
        OwnedFd::from_raw_fd(fd)
    })
}

#[test]
fn the_wait_fd_is_readable_once_the_exit_is_known() {
    init();
    let d = TempDir::new("waitfd");
    let mut drivers = vec!["raw_exec"];
    if exec_available() {
        drivers.push("exec");
    }
    for driver in drivers {
        // Twice each: the second task runs on the first one's supervisor, taken back.
        for round in 0..2 {
            let name = format!("w{round}{}", driver.len());
            let script =
                "echo ready; while [ ! -e $NOMAD_TASK_DIR/go ]; do sleep 0.01; done; exit 5";
            let mut req = raw_task(&name, d.path(), script);
            req["driver"] = json!(driver);
            let (id, fd) = start_with_fd(req);
            wait_for_output(d.path(), &name, "ready");
            assert!(!readable(&fd, 0), "{driver}: readable while the task runs");
            std::fs::write(d.path().join(&name).join("local/go"), "").unwrap();
            assert!(
                readable(&fd, 20_000),
                "{driver}: not readable after the exit"
            );
            // Known by then: a wait that does not block has it.
            let w = wait(&id, 0).unwrap();
            assert_eq!(w["exit_code"], 5, "{w}");
            destroy(&id);
        }
    }
}

/// One thread waits on many tasks: each fd readable when its task ends, in any order.
#[test]
fn one_thread_polls_many_tasks() {
    init();
    let d = TempDir::new("waitfd-many");
    let tasks: Vec<(String, OwnedFd)> = (0..20)
        .map(|i| {
            // Ends in reverse order of start.
            let script = format!("sleep 0.{:02}", 60 - 2 * i);
            start_with_fd(raw_task(&format!("m{i}"), d.path(), &script))
        })
        .collect();
    let mut left: Vec<usize> = (0..tasks.len()).collect();
    let t0 = std::time::Instant::now();
    while !left.is_empty() {
        use std::os::fd::AsFd;
        let mut p: Vec<_> = left
            .iter()
            .map(|&i| nix::poll::PollFd::new(tasks[i].1.as_fd(), nix::poll::PollFlags::POLLIN))
            .collect();
        nix::poll::poll(&mut p, nix::poll::PollTimeout::from(10_000u16)).unwrap();
        let ready: Vec<usize> = left
            .iter()
            .zip(&p)
            .filter(|(_, p)| p.revents().is_some_and(|r| !r.is_empty()))
            .map(|(i, _)| *i)
            .collect();
        assert!(!ready.is_empty(), "nothing ended in 10 s");
        for i in ready {
            let w = wait(&tasks[i].0, 0).unwrap();
            assert_eq!(w["exit_code"], 0, "{w}");
            left.retain(|&j| j != i);
        }
        assert!(t0.elapsed().as_secs() < 30);
    }
    // The library keeps no copy of what it handed over.
    let names: Vec<String> = tasks.iter().map(|(_, fd)| pipe_name(fd)).collect();
    for (id, fd) in tasks {
        destroy(&id);
        drop(fd);
    }
    let open = open_pipes();
    assert!(
        names.iter().all(|n| !open.contains(n)),
        "{names:?} still open: {open:?}"
    );
}

/// `driver_recover` of a running task this process started gives no wait fd (its
/// supervisor may outlive it): the start's is the one.
#[test]
fn recover_of_a_task_started_here_refuses_a_wait_fd() {
    init();
    let d = TempDir::new("waitfd-rec");
    let r = start(raw_task("r", d.path(), "exec sleep 60")).unwrap();
    let id = r["task_id"].as_str().unwrap().to_string();
    let e = op(
        execdriver::driver::recover,
        json!({"handle": r["handle"], "wait_fd": true}),
    )
    .unwrap_err();
    assert_eq!(
        (e.code, e.field.as_deref()),
        (execdriver::Code::InvalidRequest, Some("wait_fd"))
    );
    op(
        execdriver::driver::stop,
        json!({"task_id": id, "timeout_ms": 100}),
    )
    .unwrap();
    destroy(&id);
}
