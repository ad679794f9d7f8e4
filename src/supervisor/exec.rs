//! `driver_exec` inside the shim: enter a running task's namespaces, cgroups, root, user
//! and capabilities, run one command with its output captured, and report it as one JSON
//! line on stdout (the host's pipe). In the interactive form stdout is a `SOCK_SEQPACKET`
//! socket instead: the command's pty master or pipes go back to the host on it, resizes
//! come in on it, and the exit report goes back when the command has ended.

use crate::error::{Code, Error, Result};
use crate::proto::exec::{ExecOutput, ExecRequest, ExecResult, Interactive, Resize, SessionEnd, SessionStart};
use crate::proto::spec::LaunchSpec;
use crate::sys::process::Forked;
use nix::sched::CloneFlags;
use nix::sys::signal::{Signal, kill};
use crate::sys::process::Ended;
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

pub const MAX_OUTPUT: usize = 1 << 20;

fn err(step: &str, e: impl std::fmt::Display) -> Error {
    Error::new(Code::Isolation, format!("exec: {step}: {e}"))
}

/// Runs the request, its output captured.
pub fn run(spec: &LaunchSpec, req: &ExecRequest) -> Result<ExecOutput> {
    let procs = open_cgroup_files(spec)?;
    if spec.isolation.is_some() {
        enter_task(req)?;
    }
    let (child, out_r, err_r) = spawn(spec, req, &procs)?;
    let out = collect(child, out_r, err_r, req.timeout_ms);
    let (code, sig) = out.status.map_or((-1, 0), Ended::code_and_signal);
    let [stdout, stderr] = &out.bufs;
    Ok(ExecOutput {
        exit_code: code,
        signal: sig,
        stdout: String::from_utf8_lossy(stdout).into_owned(),
        stderr: String::from_utf8_lossy(stderr).into_owned(),
        truncated: out.cut,
    })
}

/// The task's cgroup files the command joins, opened before the task's mount namespace
/// hides /sys.
fn open_cgroup_files(spec: &LaunchSpec) -> Result<Vec<std::fs::File>> {
    spec.cgroup_procs
        .iter()
        .map(|f| {
            std::fs::OpenOptions::new()
                .write(true)
                .open(f)
                .map_err(|e| err(&format!("opening {}", f.display()), e))
        })
        .collect()
}

/// The interactive form: starts the command on a new pty or on pipes, sends the host's
/// ends with [`SessionStart::Started`] on `sock`, sets the sizes the host forwards until the command
/// exits, and returns the exit report. `None`: the host hung up (it exited, or destroyed
/// the task), and the command was killed with it.
fn run_interactive(
    spec: &LaunchSpec,
    req: &ExecRequest,
    it: &Interactive,
    sock: &OwnedFd,
) -> Result<Option<SessionEnd>> {
    let procs = open_cgroup_files(spec)?;
    if spec.isolation.is_some() {
        enter_task(req)?;
    }
    // Opened after entering the task: the pty is one of the task's devpts, a device of
    // its world (`/dev/pts/N` there), and its `/dev/ptmx` is what it is allowed.
    let mut slave = None;
    let (theirs, child) = if it.tty {
        let (master, s) = crate::sys::pty::open().map_err(|e| err("opening a pty", e))?;
        if let (Some(rows), Some(cols)) = (it.rows, it.cols) {
            crate::sys::pty::set_size(s.as_fd(), rows, cols)
                .map_err(|e| err("setting the window size", e))?;
        }
        let t = s.as_fd();
        let stdio = Stdio {
            stdin: Some(t),
            stdout: t,
            stderr: t,
            tty: Some(t),
        };
        let child = fork_command(spec, req, &procs, &stdio)?;
        // Kept for the resizes: a master closed by the host still hangs the terminal up.
        slave = Some(s);
        (vec![master], child)
    } else {
        let stdin = it.stdin.then(pipe).transpose()?;
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let stdio = Stdio {
            stdin: stdin.as_ref().map(|(r, _)| r.as_fd()),
            stdout: out_w.as_fd(),
            stderr: err_w.as_fd(),
            tty: None,
        };
        let child = fork_command(spec, req, &procs, &stdio)?;
        // Only the command and the host hold the ends: EOF and EPIPE reach each side.
        let mut theirs: Vec<OwnedFd> = stdin.map(|(_, w)| w).into_iter().collect();
        theirs.extend([out_r, err_r]);
        (theirs, child)
    };
    let fds: Vec<BorrowedFd<'_>> = theirs.iter().map(|f| f.as_fd()).collect();
    let started = crate::proto::exec::to_bytes(&SessionStart::Started {
        pid: child.as_raw(),
    });
    if let Err(e) = crate::sys::socket::send_with_fds(sock, &started, &fds) {
        kill_command(child);
        let _ = crate::sys::process::reap(Some(child.as_raw()), true);
        return Err(err("handing the command's fds to the host", e));
    }
    drop(fds);
    drop(theirs);
    let status = serve(child, sock, slave.as_ref(), it.timeout_ms);
    drop(slave);
    Ok(status.map(|st| {
        let (exit_code, signal) = st.map_or((-1, 0), Ended::code_and_signal);
        SessionEnd::Exited { exit_code, signal }
    }))
}

/// A close-on-exec pipe: (read end, write end).
fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| err("pipe", e))
}

/// SIGKILLs the command's process group (it leads its own session) and the command.
fn kill_command(child: Pid) {
    let _ = kill(Pid::from_raw(-child.as_raw()), Signal::SIGKILL);
    let _ = kill(child, Signal::SIGKILL);
}

/// Waits for the command, setting the window sizes the host sends meanwhile, killing
/// it when `timeout_ms` passes. `Some(how it ended)` (`Some(None)`: it could not be
/// reaped), or `None` when the host hung up: the command is killed then.
fn serve(
    child: Pid,
    sock: &OwnedFd,
    slave: Option<&OwnedFd>,
    timeout_ms: Option<u64>,
) -> Option<Option<Ended>> {
    let reap = |block| {
        crate::sys::process::reap(Some(child.as_raw()), block)
            .ok()
            .flatten()
            .map(|(_, how)| how)
    };
    let deadline = timeout_ms.map(|t| Instant::now() + Duration::from_millis(t));
    // Without a pidfd (it cannot fail for our own child, short of fds running out) the
    // command is looked at every 50 ms.
    let pidfd = crate::sys::pidfd_open(child.as_raw()).ok();
    loop {
        let mut wait = deadline.map_or(-1, |d| {
            d.saturating_duration_since(Instant::now()).as_millis() as i64
        });
        let mut fds = vec![sock.as_raw_fd()];
        match &pidfd {
            Some(p) => fds.push(p.as_raw_fd()),
            None => wait = if wait < 0 { 50 } else { wait.min(50) },
        }
        let ready = crate::sys::poll_any(&fds, wait).unwrap_or_default();
        if let Some(how) = reap(false) {
            return Some(Some(how));
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            kill_command(child);
            return Some(reap(true));
        }
        if !ready.first().copied().unwrap_or(false) {
            continue;
        }
        let mut buf = [0u8; 256];
        match crate::sys::socket::recv_with_fds(sock, &mut buf, true) {
            Ok(None) => {}
            Ok(Some((n, ack))) if n > 0 => {
                if let (Some(s), Ok(r)) = (slave, serde_json::from_slice::<Resize>(&buf[..n])) {
                    let _ = crate::sys::pty::set_size(s.as_fd(), r.rows, r.cols);
                }
                drop(ack);
            }
            // EOF or a broken socket: the host is gone, or let the session go.
            Ok(Some(_)) | Err(_) => {
                kill_command(child);
                let _ = reap(true);
                return None;
            }
        }
    }
}

/// Enters the namespaces and the root of the task's command (`req.target_pid`): only
/// while it is still the supervisor's child, every file opened before the first `setns`.
fn enter_task(req: &ExecRequest) -> Result<()> {
    // Never outside the task's isolation: without its command there is nothing to
    // enter.
    let (Some(pid), Some(sup)) = (req.target_pid, req.supervisor_pid) else {
        return Err(err(
            "finding the task's command",
            "it has no running command process; refusing to run outside its isolation",
        ));
    };
    let target = crate::sys::pidfd_open(pid).map_err(|e| err("opening the task's command", e))?;
    if crate::sys::proc_parent(pid) != Some(sup) {
        return Err(err(
            "finding the task's command",
            "its process is gone; refusing to run outside its isolation",
        ));
    }
    // Open every namespace first: after entering the mount namespace /proc is the task's.
    // The command's root too: it is not always its mount namespace's root (a prestarted supervisor's
    // command process `chroot`s into the task root inside an otherwise empty one).
    let root = std::fs::File::open(format!("/proc/{pid}/root"))
        .map_err(|e| err("opening the root of the task", e))?;
    let mut nss = vec![];
    for (name, flag) in [
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("net", CloneFlags::CLONE_NEWNET),
        ("pid", CloneFlags::CLONE_NEWPID),
        ("mnt", CloneFlags::CLONE_NEWNS),
    ] {
        let f = std::fs::File::open(format!("/proc/{pid}/ns/{name}"))
            .map_err(|e| err(&format!("opening {name} namespace of the task"), e))?;
        nss.push((f, flag, name));
    }
    // Still the same process after every file was opened: they are its.
    if crate::sys::poll_readable(target.as_raw_fd(), 0).unwrap_or(true) {
        return Err(err(
            "finding the task's command",
            "it exited meanwhile; refusing to run outside its isolation",
        ));
    }
    for (f, flag, name) in &nss {
        nix::sched::setns(f, *flag).map_err(|e| err(&format!("entering {name} namespace"), e))?;
    }
    nix::unistd::fchdir(&root).map_err(|e| err("entering the root of the task", e))?;
    nix::unistd::chroot(".").map_err(|e| err("chroot to the root of the task", e))?;
    Ok(())
}

/// The command's fds 0-2 (stdin `None`: /dev/null), and the terminal to make its
/// controlling one.
struct Stdio<'a> {
    stdin: Option<BorrowedFd<'a>>,
    stdout: BorrowedFd<'a>,
    stderr: BorrowedFd<'a>,
    tty: Option<BorrowedFd<'a>>,
}

/// Forks the command's process ([`child_exec`]) with its output on pipes; returns it
/// and the read ends once it has exec'd, or the error it reported.
fn spawn(
    spec: &LaunchSpec,
    req: &ExecRequest,
    procs: &[std::fs::File],
) -> Result<(Pid, OwnedFd, OwnedFd)> {
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let stdio = Stdio {
        stdin: None,
        stdout: out_w.as_fd(),
        stderr: err_w.as_fd(),
        tty: None,
    };
    let child = fork_command(spec, req, procs, &stdio)?;
    Ok((child, out_r, err_r))
}

/// Forks the command's process ([`child_exec`]) on `stdio`; returns it once it has
/// exec'd, or the error it reported.
fn fork_command(
    spec: &LaunchSpec,
    req: &ExecRequest,
    procs: &[std::fs::File],
    stdio: &Stdio<'_>,
) -> Result<Pid> {
    let (sync_r, sync_w) = pipe()?;
    // The shim is single-threaded: the child may run any code.
    let child = match crate::sys::process::fork().map_err(|e| err("fork", e))? {
        Forked::Child => {
            drop(sync_r);
            let e = child_exec(spec, req, procs, stdio);
            let msg = serde_json::to_vec(&crate::proto::Failure::from(&e)).unwrap_or_default();
            crate::sys::process::write_raw(sync_w.as_raw_fd(), &msg);
            crate::sys::process::exit_now(127);
        }
        Forked::Parent(child) => Pid::from_raw(child),
    };
    drop(sync_w);
    let mut report = Vec::new();
    let _ = std::fs::File::from(sync_r).read_to_end(&mut report);
    if !report.is_empty() {
        let _ = waitpid(child, None);
        return Err(crate::proto::parse::<crate::proto::Failure>(&report)
            .map(Error::from)
            .unwrap_or_else(|e| err("the command's process failed and said", e)));
    }
    Ok(child)
}

/// `TERM` of a command on a terminal: the request's `term`, else the task's own `TERM`,
/// else `xterm` (what most terminal emulators that run `nomad alloc exec` are).
fn tty_term<'a>(spec: &'a LaunchSpec, req: &'a ExecRequest) -> &'a str {
    let asked = req.interactive.as_ref().and_then(|i| i.term.as_deref());
    let task = spec.env.iter().find(|(k, _)| k == "TERM").map(|(_, v)| v.as_str());
    asked.or(task).unwrap_or("xterm")
}

fn child_exec(spec: &LaunchSpec, req: &ExecRequest, procs: &[std::fs::File], stdio: &Stdio<'_>) -> Error {
    let go = || -> Result<std::convert::Infallible> {
        for mut f in procs {
            std::io::Write::write_all(&mut f, b"0")
                .map_err(|e| err("joining the task's cgroup", e))?;
        }
        nix::unistd::setsid().map_err(|e| err("setsid", e))?;
        if let Some(t) = stdio.tty {
            crate::sys::pty::make_controlling(t).map_err(|e| err("the controlling terminal", e))?;
            // The terminal is the task user's, as a login's is: reopened by its name
            // (`/dev/tty`'s target, a `write` to it) it must let the command in.
            if let Some(iso) = &spec.isolation {
                nix::unistd::fchown(t, Some(iso.uid.into()), Some(iso.gid.into()))
                    .map_err(|e| err("giving the terminal to the task's user", e))?;
            }
        }
        let path = resolve(&req.command, &task_local_dir(spec));
        let mut argv = vec![
            CString::new(path.clone())
                .map_err(|_| Error::field(Code::InvalidRequest, "command", "contains NUL"))?,
        ];
        for a in &req.args {
            argv.push(CString::new(a.as_str()).map_err(|_| {
                Error::field(Code::InvalidRequest, "args", "an argument contains NUL")
            })?);
        }
        let mut envp: Vec<CString> = spec
            .env
            .iter()
            .filter(|(k, _)| stdio.tty.is_none() || k != "TERM")
            .filter_map(|(k, v)| CString::new(format!("{k}={v}")).ok())
            .collect();
        if stdio.tty.is_some() {
            envp.push(CString::new(format!("TERM={}", tty_term(spec, req))).map_err(|_| {
                Error::field(Code::InvalidRequest, "term", "contains NUL")
            })?);
        }
        if let Some(iso) = &spec.isolation {
            crate::supervisor::privs::drop_to(iso, u64::MAX)?;
        }
        let (out, errfd) = (stdio.stdout.as_raw_fd(), stdio.stderr.as_raw_fd());
        match stdio.stdin {
            Some(i) => crate::supervisor::privs::redirect_stdio_from(i.as_raw_fd(), out, errfd),
            None => crate::supervisor::privs::redirect_stdio(out, errfd),
        }
        .map_err(|e| err("stdio", e))?;
        crate::supervisor::privs::reset_signals();
        let _ = nix::unistd::chdir(spec.cwd.as_str());
        if spec.isolation.as_ref().is_some_and(|i| i.seccomp) {
            let prog =
                crate::supervisor::seccomp::default_filter().map_err(|e| err("seccomp", e))?;
            crate::supervisor::seccomp::install(prog).map_err(|e| err("installing seccomp", e))?;
        }
        let e = nix::unistd::execve(&argv[0], &argv, &envp).unwrap_err();
        let code = if e == nix::errno::Errno::ENOENT {
            Code::CommandNotFound
        } else {
            Code::Spawn
        };
        Err(Error::field(
            code,
            "command",
            format!("cannot execute {path}: {e}"),
        ))
    };
    match go() {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

/// The task's `local/` as the command sees it: `/local` in an exec task's root, the
/// host path (`NOMAD_TASK_DIR`, whatever the task's `work_dir`) for raw_exec.
fn task_local_dir(spec: &LaunchSpec) -> String {
    let env = spec.env.iter().find(|(k, _)| k == "NOMAD_TASK_DIR");
    match (&spec.isolation, env.map(|(_, v)| v)) {
        (None, Some(dir)) => dir.clone(),
        _ => "/local".to_string(),
    }
}

/// The command as given when it contains '/', else the first of the task's search dirs
/// (its `local` first) holding it.
fn resolve(cmd: &str, local: &str) -> String {
    if cmd.contains('/') {
        return cmd.to_string();
    }
    for d in [local, "/usr/local/bin", "/usr/bin", "/bin"] {
        let p = format!("{d}/{cmd}");
        if std::path::Path::new(&p).is_file() {
            return p;
        }
    }
    cmd.to_string()
}

/// What [`collect`] gathered.
struct Output {
    /// stdout, stderr: each at most [`MAX_OUTPUT`] bytes.
    bufs: [Vec<u8>; 2],
    /// Some of either was read and dropped.
    cut: bool,
    status: Option<Ended>,
}

/// Collects output (each stream capped at 1 MiB) until the command exits, killing its
/// process group when the timeout passes.
fn collect(child: Pid, out: OwnedFd, errfd: OwnedFd, timeout_ms: u64) -> Output {
    let deadline = Instant::now() + Duration::from_millis(timeout_ms);
    let mut bufs = [Vec::new(), Vec::new()];
    let mut fds = [
        Some(std::fs::File::from(out)),
        Some(std::fs::File::from(errfd)),
    ];
    let mut status = None;
    let mut cut = false;
    loop {
        if status.is_none()
            && let Ok(Some((_, how))) = crate::sys::process::reap(Some(child.as_raw()), false)
        {
            status = Some(how);
        }
        if status.is_some() && fds.iter().all(Option::is_none) {
            break;
        }
        let now = Instant::now();
        if now >= deadline {
            kill_command(child);
            if status.is_none() {
                status = crate::sys::process::reap(Some(child.as_raw()), true)
                    .ok()
                    .flatten()
                    .map(|(_, how)| how);
            }
            break;
        }
        let mut pfds: Vec<libc::pollfd> = fds
            .iter()
            .map(|f| libc::pollfd {
                fd: f.as_ref().map(|f| f.as_raw_fd()).unwrap_or(-1),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let wait = (deadline - now).as_millis().min(50) as i32;
        crate::sys::process::poll(&mut pfds, wait);
        for i in 0..2 {
            if pfds[i].revents == 0 {
                continue;
            }
            let mut chunk = [0u8; 65536];
            match fds[i].as_mut().map(|f| f.read(&mut chunk)) {
                Some(Ok(0)) | Some(Err(_)) => fds[i] = None,
                Some(Ok(n)) => {
                    let room = MAX_OUTPUT.saturating_sub(bufs[i].len());
                    bufs[i].extend_from_slice(&chunk[..n.min(room)]);
                    cut |= n > room;
                }
                None => {}
            }
        }
    }
    Output { bufs, cut, status }
}

/// Entry point: `execdriver-shim --exec <request-file>`.
pub fn main(request: &std::path::Path) -> i32 {
    crate::sys::process::close_fds_above_2();
    crate::sys::reset_ignored_signals();
    let req = std::fs::read(request)
        .map_err(|e| err("reading request", e))
        .and_then(|b| {
            serde_json::from_slice::<ExecRequest>(&b).map_err(|e| err("parsing request", e))
        });
    if let Ok(ExecRequest {
        interactive: Some(_),
        ..
    }) = &req
    {
        return main_interactive(req);
    }
    let result = req.and_then(|mut req| {
        let spec = req
            .spec
            .take()
            .ok_or_else(|| err("reading request", "it carries no launch spec"))?;
        run(&spec, &req)
    });
    let line = serde_json::to_string(&ExecResult::from(result)).unwrap_or_default();
    // The host reads it from a pipe: one that has gone away must not panic us.
    {
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), "{line}");
    }
    0
}

/// [`main`] of the interactive form: stdout is the host's `SOCK_SEQPACKET` socket, which
/// gets the start message (with the fds) or an error, then the exit report.
fn main_interactive(req: Result<ExecRequest>) -> i32 {
    let Ok(sock) = crate::sys::process::take_stdout() else {
        return 1;
    };
    let result = req.and_then(|mut req| {
        let spec = req
            .spec
            .take()
            .ok_or_else(|| err("reading request", "it carries no launch spec"))?;
        let it = req.interactive.clone().unwrap_or_default();
        run_interactive(&spec, &req, &it, &sock)
    });
    let report = match result {
        Ok(Some(end)) => end,
        Ok(None) => return 0,
        Err(e) => SessionEnd::from(&e),
    };
    let _ = crate::sys::socket::send_all(&sock, &crate::proto::exec::to_bytes(&report));
    0
}
