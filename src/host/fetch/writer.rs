//! Parallel file creation for unpacking. Creating a file costs far more than writing a
//! small one, so small entries (read fully into memory by the unpacking thread, which
//! also did every path check and created every parent directory) are written by a few
//! worker threads. Ordering is kept where it matters: an entry whose path, or a parent
//! of it, is still being written waits until the pool is idle ([`Pool::touches`] and
//! [`Pool::flush`]); hard links flush first so their target is complete.

use super::safe;
use crate::error::{Code, Error, Result};
use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime};

/// Entries up to this size go to the pool; bigger ones are streamed by the caller.
pub const SMALL: usize = 1 << 20;

pub struct Job {
    pub path: PathBuf,
    pub name: String,
    pub data: Vec<u8>,
    pub mode: u32,
    pub mtime: Option<u64>,
}

#[derive(Default)]
struct State {
    outstanding: usize,
    error: Option<Error>,
}

type Shared = Arc<(Mutex<State>, Condvar)>;

pub struct Pool {
    tx: Option<SyncSender<Job>>,
    state: Shared,
    pending: HashSet<PathBuf>,
}

/// Writes one file: created new (never through a symlink), exact mode (setuid, setgid
/// and sticky dropped), mtime.
pub fn write_job(job: &Job) -> Result<()> {
    let err = |e: std::io::Error| {
        Error::new(
            Code::ArtifactUnpack,
            format!("archive entry {:?}: {e}", job.name),
        )
    };
    let mut f = safe::create_file(&job.path, job.mode).map_err(err)?;
    f.write_all(&job.data).map_err(err)?;
    finish_file(&f, job.mode, job.mtime).map_err(err)
}

pub fn finish_file(f: &fs::File, mode: u32, mtime: Option<u64>) -> std::io::Result<()> {
    f.set_permissions(fs::Permissions::from_mode(mode & 0o777))?;
    if let Some(t) = mtime {
        let _ = f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(t));
    }
    Ok(())
}

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, State> {
    s.0.lock().unwrap_or_else(|p| p.into_inner())
}

fn worker(rx: Arc<Mutex<Receiver<Job>>>, state: Shared) {
    loop {
        let job = {
            let g = rx.lock().unwrap_or_else(|p| p.into_inner());
            match g.recv() {
                Ok(j) => j,
                Err(_) => return,
            }
        };
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| write_job(&job)))
            .unwrap_or_else(|_| Err(Error::internal(format!("writing {:?} panicked", job.name))));
        let mut g = lock(&state);
        if let Err(e) = r {
            g.error.get_or_insert(e);
        }
        g.outstanding -= 1;
        state.1.notify_all();
    }
}

/// Runs `f` with a pool of `threads` writers (0: every job written inline), waits for
/// every job, and returns the first writer error before `f`'s own result.
pub fn with_pool<T>(threads: usize, f: impl FnOnce(&mut Pool) -> Result<T>) -> Result<T> {
    let state: Shared = Arc::default();
    if threads == 0 {
        let mut pool = Pool {
            tx: None,
            state,
            pending: HashSet::new(),
        };
        return f(&mut pool);
    }
    let (tx, rx) = sync_channel::<Job>(64);
    let rx = Arc::new(Mutex::new(rx));
    std::thread::scope(|s| {
        for _ in 0..threads {
            let (rx, st) = (rx.clone(), state.clone());
            s.spawn(move || worker(rx, st));
        }
        let mut pool = Pool {
            tx: Some(tx),
            state: state.clone(),
            pending: HashSet::new(),
        };
        let r = f(&mut pool);
        let flushed = pool.flush();
        drop(pool);
        flushed.and(r)
    })
}

impl Pool {
    /// Hands a small file to the writers (or writes it now without a pool).
    pub fn submit(&mut self, job: Job) -> Result<()> {
        let Some(tx) = &self.tx else {
            return write_job(&job);
        };
        {
            let mut g = lock(&self.state);
            if let Some(e) = g.error.take() {
                return Err(e);
            }
            g.outstanding += 1;
        }
        self.pending.insert(job.path.clone());
        if let Err(back) = tx.send(job) {
            // No writer left: write it here.
            lock(&self.state).outstanding -= 1;
            return write_job(&back.0);
        }
        Ok(())
    }

    /// True when `path` or one of its parents is still being written.
    pub fn touches(&self, path: &Path) -> bool {
        !self.pending.is_empty() && path.ancestors().any(|a| self.pending.contains(a))
    }

    /// Waits until every submitted file is written; the first writer error, if any.
    pub fn flush(&mut self) -> Result<()> {
        let mut g = lock(&self.state);
        while g.outstanding > 0 {
            g = self.state.1.wait(g).unwrap_or_else(|p| p.into_inner());
        }
        self.pending.clear();
        match g.error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Number of writer threads for this machine.
pub fn threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(2, 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(tag: &str) -> PathBuf {
        let p =
            std::env::temp_dir().join(format!("execdriver-writer-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        p
    }

    fn job(dir: &Path, name: &str, mode: u32) -> Job {
        Job {
            path: dir.join(name),
            name: name.into(),
            data: name.as_bytes().to_vec(),
            mode,
            mtime: Some(1),
        }
    }

    #[test]
    fn writes_with_and_without_threads_and_reports_errors() {
        for threads in [0, 2] {
            let d = tmp(&format!("ok{threads}"));
            with_pool(threads, |pool| {
                for i in 0..50 {
                    pool.submit(job(&d, &format!("f{i}"), 0o4755))?;
                }
                assert!(threads == 0 || pool.touches(&d.join("f3")));
                pool.flush()?;
                assert!(!pool.touches(&d.join("f3")));
                Ok(())
            })
            .unwrap();
            for i in 0..50 {
                let p = d.join(format!("f{i}"));
                assert_eq!(fs::read(&p).unwrap(), format!("f{i}").as_bytes());
                assert_eq!(
                    fs::metadata(&p).unwrap().permissions().mode() & 0o7777,
                    0o755
                );
            }
            // A job that cannot be written: the error comes back, naming the entry.
            let e = with_pool(threads, |pool| {
                pool.submit(job(&d.join("missing"), "x", 0o644))
            })
            .unwrap_err();
            assert_eq!(e.code, Code::ArtifactUnpack);
            assert!(e.message.contains("\"x\""), "{e}");
            fs::remove_dir_all(&d).unwrap();
        }
    }
}
