//! The task table: every task this process started or recovered, its state, and the
//! wait logic shared by `driver_wait`, `driver_stop` and `driver_destroy`.

use crate::config::DriverKind;
use crate::error::{Code, Error, Result};
use crate::proto::spec::{self as launch, ExitStatus};
use once_cell::sync::Lazy;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Starting,
    Running,
    Exited,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Running => "running",
            State::Exited => "exited",
        }
    }
}

#[derive(Default)]
pub struct Inner {
    pub state: Option<State>,
    pub pid: Option<i32>,
    pub pidfd: Option<Arc<OwnedFd>>,
    /// The channel to a supervisor this process started: its exit report arrives here.
    pub chan: Option<crate::proto::chan::Channel>,
    /// The launch spec of a task this process started (for `driver_exec`).
    pub spec: Option<crate::proto::spec::LaunchSpec>,
    pub started_at: Option<String>,
    pub exit: Option<Value>,
    pub handle: Option<Value>,
    pub cgroup: Option<crate::cgroup::TaskCgroup>,
    pub artifacts: Vec<Arc<crate::host::fetch::ArtifactProgress>>,
    /// Set when `driver_start` failed: the entry is about to disappear.
    pub failed: bool,
    /// A recovered handle of a task whose state dir is now another task's (the same id,
    /// started later): nothing it names is this task's to touch (see
    /// [`Task::set_superseded`]).
    pub superseded: bool,
    /// A supervisor that may run another task after this one
    /// ([`crate::proto::spec::LaunchSpec::again_ms`]): its channel is kept after the exit
    /// report, for its [`crate::proto::ToHost::Idle`].
    pub reusable: Option<crate::host::pool::Reusable>,
    /// The CPU counters at the previous `driver_stats` (at the start, zeros), whence its
    /// percentages ([`crate::host::stats::rates`]).
    pub cpu_sample: Option<crate::host::stats::Sample>,
    /// What happened to it ([`crate::host::events`]).
    pub events: crate::host::events::Events,
}

pub struct Task {
    pub id: String,
    pub name: String,
    pub driver: DriverKind,
    pub task_dir: PathBuf,
    pub state_dir: PathBuf,
    pub kill_signal: i32,
    pub kill_timeout_ms: u64,
    inner: Mutex<Inner>,
    cv: Condvar,
}

static TABLE: Lazy<Mutex<HashMap<String, Arc<Task>>>> = Lazy::new(|| Mutex::new(HashMap::new()));

fn table() -> MutexGuard<'static, HashMap<String, Arc<Task>>> {
    TABLE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Looks a task up by id.
pub fn get(id: &str) -> Result<Arc<Task>> {
    table().get(id).cloned().ok_or_else(|| {
        Error::field(
            Code::TaskNotFound,
            "task_id",
            format!("no task with id {id:?}"),
        )
    })
}

/// Registers a new task; fails with `task_exists` when the id is taken.
pub fn insert(task: Arc<Task>) -> Result<()> {
    let mut t = table();
    if t.contains_key(&task.id) {
        return Err(Error::field(
            Code::TaskExists,
            "id",
            format!("a task with id {:?} already exists", task.id),
        ));
    }
    t.insert(task.id.clone(), task);
    Ok(())
}

/// Removes a task from the table (only that exact task object).
pub fn remove(task: &Arc<Task>) {
    let mut t = table();
    if t.get(&task.id).is_some_and(|x| Arc::ptr_eq(x, task)) {
        t.remove(&task.id);
    }
}

/// The id of a task of this process but `except` that is starting or running in
/// `task_dir`.
pub fn running_in(task_dir: &std::path::Path, except: &str) -> Option<String> {
    table()
        .values()
        .find(|t| {
            t.id != except
                && t.task_dir == task_dir
                && t.state() != State::Exited
                && !t.lock().failed
        })
        .map(|t| t.id.clone())
}

impl Task {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: String,
        name: String,
        driver: DriverKind,
        task_dir: PathBuf,
        state_dir: PathBuf,
        kill_signal: i32,
        kill_timeout_ms: u64,
    ) -> Arc<Task> {
        Arc::new(Task {
            id,
            name,
            driver,
            task_dir,
            state_dir,
            kill_signal,
            kill_timeout_ms,
            inner: Mutex::new(Inner {
                state: Some(State::Starting),
                ..Default::default()
            }),
            cv: Condvar::new(),
        })
    }

    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn state(&self) -> State {
        self.lock().state.unwrap_or(State::Starting)
    }

    /// Records an event of the task ([`crate::host::events`]).
    pub fn event(&self, kind: crate::host::events::Kind, message: impl Into<String>) {
        self.lock().events.push(&self.state_dir, &self.id, kind, message);
    }

    /// Marks the task running with its supervisor.
    pub fn set_running(
        &self,
        pid: i32,
        pidfd: OwnedFd,
        started_at: String,
        handle: Value,
        cgroup: Option<crate::cgroup::TaskCgroup>,
        chan: Option<crate::proto::chan::Channel>,
    ) {
        let mut g = self.lock();
        g.state = Some(State::Running);
        g.pid = Some(pid);
        g.pidfd = Some(Arc::new(pidfd));
        g.chan = chan;
        g.started_at = Some(started_at);
        g.handle = Some(handle);
        g.cgroup = cgroup;
        drop(g);
        self.cv.notify_all();
    }

    /// A recovered task whose supervisor is gone: its status comes from `exit.json`, if
    /// the supervisor left one.
    pub fn set_gone(
        &self,
        started_at: String,
        handle: Value,
        cgroup: Option<crate::cgroup::TaskCgroup>,
    ) {
        let mut g = self.lock();
        g.state = Some(State::Running);
        g.started_at = Some(started_at);
        g.handle = Some(handle);
        g.cgroup = cgroup;
        drop(g);
        self.finalize();
    }

    /// A recovered task whose id is another, later task's now (its state dir holds that
    /// task's launch record): it is over, and its wait result says so; its state dir and
    /// cgroups are that task's, never read, killed or removed for this one.
    pub fn set_superseded(&self, started_at: String, handle: Value) {
        let mut g = self.lock();
        g.state = Some(State::Exited);
        g.started_at = Some(started_at.clone());
        g.handle = Some(handle);
        g.superseded = true;
        g.exit = Some(
            json!({"task_id": self.id, "exit_code": -1, "signal": 0, "oom_killed": false,
            "err": "the task of this handle is gone: its state dir holds no record of it (it was destroyed, or its id is a later task's now)",
            "started_at": started_at, "finished_at": launch::rfc3339_now()}),
        );
        drop(g);
        self.cv.notify_all();
    }

    /// Whether the task's state dir, cgroups and dirs are its own to remove.
    pub fn owns_its_paths(&self) -> bool {
        !self.lock().superseded
    }

    /// Marks a start as failed and wakes waiters (they then get `task_not_found`).
    pub fn set_failed(&self) {
        self.lock().failed = true;
        self.cv.notify_all();
    }

    /// Waits for the task to leave `starting`. Returns false on timeout.
    fn wait_started(&self, deadline: Option<Instant>) -> Result<bool> {
        let mut g = self.lock();
        while g.state == Some(State::Starting) {
            if g.failed {
                return Err(Error::field(
                    Code::TaskNotFound,
                    "task_id",
                    format!("task {:?} failed to start", self.id),
                ));
            }
            match deadline {
                None => g = self.cv.wait(g).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return Ok(false);
                    }
                    g = self
                        .cv
                        .wait_timeout(g, d - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            }
        }
        Ok(true)
    }

    /// Waits up to `timeout_ms` (negative: forever) for the task to exit; returns its
    /// wait object, or `timeout`.
    pub fn wait(&self, timeout_ms: i64) -> Result<Value> {
        let deadline =
            (timeout_ms >= 0).then(|| Instant::now() + Duration::from_millis(timeout_ms as u64));
        if !self.wait_started(deadline)? {
            return Err(self.timeout_error());
        }
        loop {
            let (pidfd, chan) = {
                let mut g = self.lock();
                if let Some(exit) = self.take_exit_report(&mut g) {
                    return Ok(exit);
                }
                (g.pidfd.clone(), g.chan.as_ref().map(|c| c.fd.clone()))
            };
            let Some(pidfd) = pidfd else {
                return Ok(self.finalize());
            };
            let left = match deadline {
                None => -1,
                Some(d) => d.saturating_duration_since(Instant::now()).as_millis() as i64,
            };
            let mut fds = vec![pidfd.as_raw_fd()];
            fds.extend(chan.as_ref().map(|c| c.as_raw_fd()));
            let ready = crate::sys::poll_any(&fds, left)
                .map_err(|e| Error::internal(format!("poll on pidfd: {e}")))?;
            if ready.first() == Some(&true) {
                return Ok(self.finalize());
            }
            if ready.iter().any(|r| *r) {
                continue; // the channel: taken at the top of the loop
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(self.timeout_error());
            }
        }
    }

    /// The exit status, if known: already recorded, or the supervisor's exit report on
    /// the channel (read without blocking). The supervisor may still be tidying up; it is
    /// reaped later ([`Task::reap_supervisor`]).
    fn take_exit_report(&self, g: &mut Inner) -> Option<Value> {
        if let Some(exit) = &g.exit {
            return Some(exit.clone());
        }
        let chan = g.chan.as_mut()?;
        loop {
            match chan.next(false) {
                Ok(crate::proto::chan::Incoming::Message(crate::proto::ToHost::Exited(s))) => {
                    let v = self.wait_object(&s);
                    let (kind, message) = crate::host::events::of_exit(&v);
                    g.events.push(&self.state_dir, &self.id, kind, message);
                    g.exit = Some(v.clone());
                    g.state = Some(State::Exited);
                    if g.reusable.is_none() {
                        g.chan = None;
                    }
                    self.cv.notify_all();
                    return Some(v);
                }
                Ok(crate::proto::chan::Incoming::Message(_)) => continue,
                Ok(crate::proto::chan::Incoming::Pending) => return None,
                // Gone without a report: the pidfd and exit.json tell the rest.
                Ok(crate::proto::chan::Incoming::Eof) | Err(_) => {
                    g.chan = None;
                    return None;
                }
            }
        }
    }

    fn wait_object(&self, s: &ExitStatus) -> Value {
        json!({"task_id": self.id, "exit_code": s.exit_code, "signal": s.signal, "oom_killed": s.oom_killed,
               "err": s.err, "started_at": s.started_at, "finished_at": s.finished_at})
    }

    /// After the exit (`driver_destroy`): a supervisor that may run another task goes
    /// back to the pool ([`crate::host::pool::release_after_exit`]); any other is waited
    /// for and reaped ([`Task::reap_supervisor`]).
    pub fn release_supervisor(&self) {
        let (reusable, chan) = {
            let mut g = self.lock();
            let chan = if g.exit.is_some() {
                g.chan.take()
            } else {
                None
            };
            (g.reusable.take(), chan)
        };
        if let (Some(reusable), Some(chan)) = (reusable, chan)
            && crate::host::pool::release_after_exit(reusable, chan, || self.take_sole_pidfd())
        {
            return;
        }
        // (A channel dropped here is the supervisor's cue to exit.)
        self.reap_supervisor();
    }

    /// The supervisor's pid and pidfd, taken from the task, when nothing else holds the
    /// pidfd (a concurrent stop or signal of this task): then no signal meant for this
    /// task can reach the supervisor's next one. (Signals sent before now are still
    /// queued; the supervisor drops them with the next spec.)
    fn take_sole_pidfd(&self) -> Option<(i32, OwnedFd)> {
        let mut g = self.lock();
        let pid = g.pid?;
        let fd = g.pidfd.take()?;
        match Arc::try_unwrap(fd) {
            Ok(fd) => Some((pid, fd)),
            Err(fd) => {
                g.pidfd = Some(fd);
                None
            }
        }
    }

    /// Waits for the supervisor process itself to be gone (after its exit report it still
    /// removes the cgroup and writes exit.json), and reaps it. A supervisor that lingers
    /// past 5 s is killed.
    pub fn reap_supervisor(&self) {
        let pidfd = self.lock().pidfd.clone();
        if let Some(fd) = pidfd {
            crate::sys::pidfd_reap_within(&fd, 5000);
            self.lock().pidfd = None;
        }
    }

    fn timeout_error(&self) -> Error {
        Error::new(
            Code::Timeout,
            format!("task {:?} is still running", self.id),
        )
    }

    /// True when the supervisor has exited (without blocking).
    pub fn supervisor_exited(&self) -> bool {
        let g = self.lock();
        if g.exit.is_some() {
            return true;
        }
        match &g.pidfd {
            Some(fd) => crate::sys::poll_readable(fd.as_raw_fd(), 0).unwrap_or(true),
            None => true,
        }
    }

    /// Called once the supervisor has exited: reaps it and reads its status file.
    /// Idempotent; every caller gets the same object.
    pub fn finalize(&self) -> Value {
        self.finalize_with(None)
    }

    /// Like [`Task::finalize`]; `killed_supervisor` says the driver had to SIGKILL the
    /// supervisor itself, so a missing status file means the task died of SIGKILL.
    pub fn finalize_with(&self, killed_supervisor: Option<()>) -> Value {
        let mut g = self.lock();
        if let Some(exit) = &g.exit {
            return exit.clone();
        }
        let mut sup_status = None;
        if let Some(fd) = &g.pidfd {
            sup_status = crate::sys::pidfd_reap(fd).ok().flatten();
        }
        let v = match launch::read_exit(&self.state_dir) {
            Some(Ok(s)) => self.wait_object(&s),
            Some(Err(why)) => {
                json!({"task_id": self.id, "exit_code": -1, "signal": 0, "oom_killed": false,
                "err": format!("the task's exit status cannot be read: {why}"), "started_at": g.started_at, "finished_at": launch::rfc3339_now()})
            }
            None if killed_supervisor.is_some() => {
                json!({"task_id": self.id, "exit_code": 137, "signal": 9, "oom_killed": false,
                "err": "the supervisor did not stop in time and was killed with the task", "started_at": g.started_at, "finished_at": launch::rfc3339_now()})
            }
            None => {
                let why = match sup_status {
                    Some((code, st)) if code == libc::CLD_KILLED || code == libc::CLD_DUMPED => {
                        format!(
                            "the task's supervisor was killed by signal {st} and left no exit status"
                        )
                    }
                    Some((_, st)) => format!(
                        "the task's supervisor exited with status {st} and left no exit status"
                    ),
                    None => "the task's supervisor is gone and left no exit status".to_string(),
                };
                // (The lock is held: the log's path from what it guards.)
                let log = self.state_dir.join(launch::SUPERVISOR_LOG);
                let why = match !g.superseded && log.is_file() {
                    true => format!("{why} (its log: {})", log.display()),
                    false => why,
                };
                json!({"task_id": self.id, "exit_code": -1, "signal": 0, "oom_killed": false, "err": why,
                       "started_at": g.started_at, "finished_at": launch::rfc3339_now()})
            }
        };
        // (A recovered task's earlier host may have recorded its end already.)
        let (kind, message) = crate::host::events::of_exit(&v);
        if g.events.last_kind() != Some(kind.as_str()) {
            g.events.push(&self.state_dir, &self.id, kind, message);
        }
        g.exit = Some(v.clone());
        g.state = Some(State::Exited);
        g.pidfd = None;
        g.chan = None;
        drop(g);
        self.cv.notify_all();
        v
    }
}
