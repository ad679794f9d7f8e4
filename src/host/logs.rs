//! `driver_logs`: a task's stdout or stderr as one stream across its rotated files, as
//! `nomad alloc logs [-f]` reads it.
//!
//! The supervisor writes `<name>.<stream>.<N>` and rotates at exactly `max_file_size`
//! bytes (`supervisor::logs`), so byte `P` of the stream is byte `P mod size` of file
//! `P div size`. Files rotated out are gone, and reading from before the oldest one left
//! starts at that one (the response's `start` says where). A read that finds nothing new
//! waits up to `follow_ms` for more (inotify on the log dir), while the task runs.

use crate::config;
use crate::error::{Code, Error, Result};
use crate::host::task::{self, State};
use serde::Deserialize;
use serde_json::{Value, json};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The most a call returns, and what it returns unless asked for less.
const MAX_LIMIT: u64 = 1 << 20;
const DEFAULT_LIMIT: u64 = 64 << 10;
/// The longest a call waits for output.
const MAX_FOLLOW_MS: u64 = 60_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Req {
    task_id: String,
    #[serde(default)]
    stream: Stream,
    #[serde(default)]
    offset: u64,
    #[serde(default)]
    origin: Origin,
    #[serde(default)]
    limit_bytes: Option<u64>,
    #[serde(default)]
    follow_ms: u64,
    #[serde(default)]
    encoding: Encoding,
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum Stream {
    #[default]
    Stdout,
    Stderr,
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq)]
#[serde(rename_all = "lowercase")]
enum Origin {
    #[default]
    Start,
    End,
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq)]
#[serde(rename_all = "lowercase")]
enum Encoding {
    #[default]
    Base64,
    Text,
}

/// Where a task's stream lies: its files are `<dir>/<prefix><N>`, each `size` bytes but
/// the newest.
struct Files {
    dir: PathBuf,
    prefix: String,
    size: u64,
}

impl Files {
    /// The indexes of the stream's files, oldest first.
    fn indexes(&self) -> Vec<u64> {
        let mut v: Vec<u64> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_prefix(&self.prefix)?
                    .parse()
                    .ok()
            })
            .collect();
        v.sort_unstable();
        v
    }

    fn open(&self, index: u64) -> Option<std::fs::File> {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(self.dir.join(format!("{}{index}", self.prefix)))
            .ok()?;
        f.metadata().ok()?.is_file().then_some(f)
    }

    /// (first, end): the stream's first byte still kept and its end.
    fn span(&self, indexes: &[u64]) -> (u64, u64) {
        let (Some(first), Some(last)) = (indexes.first(), indexes.last()) else {
            return (0, 0);
        };
        let live = self
            .open(*last)
            .and_then(|f| f.metadata().ok())
            .map_or(0, |m| m.len().min(self.size));
        (first * self.size, last * self.size + live)
    }

    /// Up to `limit` bytes from stream position `at` (at or after the first kept byte).
    fn read(&self, at: u64, limit: u64) -> Vec<u8> {
        let mut out = vec![];
        let mut at = at;
        while (out.len() as u64) < limit {
            let (index, pos) = (at / self.size, at % self.size);
            let Some(f) = self.open(index) else { break };
            let want = (limit - out.len() as u64).min(self.size - pos) as usize;
            let start = out.len();
            out.resize(start + want, 0);
            let n = f.read_at(&mut out[start..], pos).unwrap_or(0);
            out.truncate(start + n);
            at += n as u64;
            if n < want {
                // The live file's end, or a file shorter than it should be: no further.
                break;
            }
        }
        out
    }
}

/// `driver_logs`.
pub fn logs(text: &str) -> Result<Value> {
    let r: Req = config::parse(text, Code::InvalidRequest, "")?;
    let limit = r.limit_bytes.unwrap_or(DEFAULT_LIMIT).min(MAX_LIMIT);
    let t = task::get(&r.task_id)?;
    let files = files_of(&t, r.stream)?;
    let deadline = Instant::now() + Duration::from_millis(r.follow_ms.min(MAX_FOLLOW_MS));
    let watch = (r.follow_ms > 0).then(|| watch(&files.dir)).flatten();
    let mut at = None;
    loop {
        // Whether it has ended, before the read: output written before the end is then
        // all there.
        // (A supervisor kept for reuse outlives its task: its exit report says it.)
        let ended = t.state() == State::Exited || t.supervisor_exited() || t.wait(0).is_ok();
        let indexes = files.indexes();
        let (first, end) = files.span(&indexes);
        let from = *at.get_or_insert(match r.origin {
            Origin::Start => r.offset,
            Origin::End => end.saturating_sub(r.offset),
        });
        let from = from.max(first);
        let data = if from < end {
            files.read(from, limit)
        } else {
            vec![]
        };
        let next = from + data.len() as u64;
        let now = Instant::now();
        if !data.is_empty() || ended || now >= deadline {
            return Ok(json!({
                "data": encode(&data, r.encoding),
                "encoding": if r.encoding == Encoding::Text { "text" } else { "base64" },
                "start": from, "offset": next, "eof": ended && next >= end,
            }));
        }
        // Nothing yet: wait for a change in the log dir (or the task's end, seen within
        // 100 ms).
        let wait = (deadline - now).min(Duration::from_millis(100));
        match &watch {
            Some(w) => w.wait(wait),
            None => std::thread::sleep(wait.min(Duration::from_millis(20))),
        }
    }
}

/// The task's `stream` files, from its launch spec (this host's, or the one in its
/// state dir).
fn files_of(t: &task::Task, stream: Stream) -> Result<Files> {
    let spec = t.lock().spec.clone();
    let spec = match spec {
        Some(s) => s,
        None if t.owns_its_paths() => crate::proto::spec::read_launch(&t.state_dir)
            .map_err(|e| Error::new(Code::TaskNotFound, format!("the task's logs: {e}")))?,
        None => {
            return Err(Error::field(
                Code::TaskNotFound,
                "task_id",
                "the task of this handle is gone: its logs are another task's now",
            ));
        }
    };
    let name = match stream {
        Stream::Stdout => "stdout",
        Stream::Stderr => "stderr",
    };
    Ok(Files {
        dir: spec.log_dir.clone(),
        prefix: crate::proto::spec::log_prefix(&spec.log_name, name),
        size: spec.log_max_bytes.max(1),
    })
}

/// An inotify watch of the log dir: files made, written, closed.
struct Watch(nix::sys::inotify::Inotify);

fn watch(dir: &Path) -> Option<Watch> {
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
    let i = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK).ok()?;
    i.add_watch(
        dir,
        AddWatchFlags::IN_MODIFY | AddWatchFlags::IN_CREATE | AddWatchFlags::IN_CLOSE_WRITE,
    )
    .ok()?;
    Some(Watch(i))
}

impl Watch {
    /// Until something changed in the dir, or `d` passed.
    fn wait(&self, d: Duration) {
        use std::os::fd::AsFd;
        let mut fds = [nix::poll::PollFd::new(
            self.0.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        let ms = u16::try_from(d.as_millis()).unwrap_or(u16::MAX);
        let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms));
        // Drained: the next wait waits for the next change.
        let _ = self.0.read_events();
    }
}

fn encode(data: &[u8], e: Encoding) -> String {
    match e {
        Encoding::Text => String::from_utf8_lossy(data).into_owned(),
        Encoding::Base64 => base64(data),
    }
}

/// Standard base64 (RFC 4648, with padding).
fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    #[test]
    fn a_stream_reads_across_rotated_files() {
        let dir = std::env::temp_dir().join(format!("ed-hostlogs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // Files 2..=4 of size 4: bytes 8..18 of the stream (0..8 rotated out).
        for (i, s) in [(2, "89ab"), (3, "cdef"), (4, "gh")] {
            std::fs::write(dir.join(format!("t.stdout.{i}")), s).unwrap();
        }
        let f = Files {
            dir: dir.clone(),
            prefix: "t.stdout.".into(),
            size: 4,
        };
        let idx = f.indexes();
        assert_eq!(f.span(&idx), (8, 18));
        assert_eq!(f.read(8, 100), b"89abcdefgh");
        assert_eq!(f.read(10, 5), b"abcde");
        assert_eq!(f.read(17, 5), b"h");
        assert_eq!(f.read(18, 5), b"");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
