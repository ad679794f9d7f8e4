//! Rotating log files `<dir>/<name>.<stream>.N` as Nomad's logmon writes them: the
//! highest index is the live file; when it reaches the size limit the next index opens,
//! and indexes older than `max_files` are deleted.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

pub struct RotatingLog {
    dir: PathBuf,
    prefix: String,
    max_files: u32,
    max_bytes: u64,
    index: u64,
    size: u64,
    file: File,
}

impl RotatingLog {
    /// Opens (appending) the newest existing file of this stream, or index 0.
    #[cfg(test)]
    pub fn open(
        dir: &Path,
        name: &str,
        stream: &str,
        max_files: u32,
        max_bytes: u64,
    ) -> io::Result<RotatingLog> {
        let [log] = Self::open_streams(dir, name, [stream], max_files, max_bytes)?;
        Ok(log)
    }

    /// [`RotatingLog::open`] of several streams of one task, listing `dir` once.
    pub fn open_streams<const N: usize>(
        dir: &Path,
        name: &str,
        streams: [&str; N],
        max_files: u32,
        max_bytes: u64,
    ) -> io::Result<[RotatingLog; N]> {
        let names = list(dir)?;
        let mut out = Vec::with_capacity(N);
        for stream in streams {
            let log = Self::open_in(dir, &names, name, stream, max_files, max_bytes)
                .map_err(|e| io::Error::new(e.kind(), format!("opening {stream} log: {e}")))?;
            out.push(log);
        }
        Ok(out.try_into().unwrap_or_else(|_| unreachable!("N logs")))
    }

    fn open_in(
        dir: &Path,
        names: &[std::ffi::OsString],
        name: &str,
        stream: &str,
        max_files: u32,
        max_bytes: u64,
    ) -> io::Result<RotatingLog> {
        let prefix = crate::proto::spec::log_prefix(name, stream);
        let index = indexes(names, &prefix).max().unwrap_or(0);
        let (file, size) = open_index(dir, &prefix, index)?;
        Ok(RotatingLog {
            dir: dir.to_path_buf(),
            prefix,
            max_files: max_files.max(1),
            max_bytes: max_bytes.max(1),
            index,
            size,
            file,
        })
    }

    /// Appends `data`, rotating at the size limit (a write may be split across files).
    /// What a failed write (a full disk) did write is counted, so that files still rotate
    /// at exactly the limit.
    pub fn write(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            if self.size >= self.max_bytes {
                self.rotate()?;
            }
            let room = (self.max_bytes - self.size) as usize;
            let n = room.min(data.len());
            let (written, r) = write_counted(&mut self.file, &data[..n]);
            self.size += written as u64;
            r?;
            data = &data[n..];
        }
        Ok(())
    }

    /// The next index's file: the index moves on once it is open (a failure leaves this
    /// one current, and the next write tries again).
    fn rotate(&mut self) -> io::Result<()> {
        let index = self.index + 1;
        let (file, size) = open_index(&self.dir, &self.prefix, index)?;
        self.index = index;
        self.file = file;
        self.size = size;
        let keep_from = (self.index + 1).saturating_sub(self.max_files as u64);
        for i in existing_indexes(&self.dir, &self.prefix)? {
            if i < keep_from {
                let _ = std::fs::remove_file(self.dir.join(format!("{}{i}", self.prefix)));
            }
        }
        Ok(())
    }
}

/// `write_all` that says how much it wrote when it fails.
fn write_counted(file: &mut File, data: &[u8]) -> (usize, io::Result<()>) {
    let mut done = 0;
    while done < data.len() {
        match file.write(&data[done..]) {
            Ok(0) => return (done, Err(io::ErrorKind::WriteZero.into())),
            Ok(k) => done += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (done, Err(e)),
        }
    }
    (done, Ok(()))
}

fn open_index(dir: &Path, prefix: &str, index: u64) -> io::Result<(File, u64)> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(dir.join(format!("{prefix}{index}")))?;
    let size = file.metadata()?.len();
    Ok((file, size))
}

fn existing_indexes(dir: &Path, prefix: &str) -> io::Result<Vec<u64>> {
    Ok(indexes(&list(dir)?, prefix).collect())
}

/// The names in `dir`.
fn list(dir: &Path) -> io::Result<Vec<std::ffi::OsString>> {
    std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect()
}

/// The indexes of the files `<prefix><N>` among `names`.
fn indexes<'a>(names: &'a [std::ffi::OsString], prefix: &'a str) -> impl Iterator<Item = u64> + 'a {
    names.iter().filter_map(move |n| {
        n.to_str()
            .and_then(|n| n.strip_prefix(prefix))
            .and_then(|s| s.parse().ok())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_and_keeps_max_files() {
        let dir = std::env::temp_dir().join(format!("execdriver-logs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut log = RotatingLog::open(&dir, "t", "stdout", 3, 10).unwrap();
        for _ in 0..5 {
            log.write(b"0123456789").unwrap();
        }
        log.write(b"abc").unwrap();
        let mut idx = existing_indexes(&dir, "t.stdout.").unwrap();
        idx.sort();
        assert_eq!(idx, vec![3, 4, 5]);
        assert_eq!(std::fs::read(dir.join("t.stdout.5")).unwrap(), b"abc");
        // Reopening appends to the newest file.
        let mut log = RotatingLog::open(&dir, "t", "stdout", 3, 10).unwrap();
        log.write(b"de").unwrap();
        assert_eq!(std::fs::read(dir.join("t.stdout.5")).unwrap(), b"abcde");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A rotation whose next file cannot be opened keeps the current one (and its index):
    /// the next write tries the same next index again.
    #[test]
    fn a_failed_rotation_keeps_the_index() {
        let dir = std::env::temp_dir().join(format!("execdriver-logs3-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut log = RotatingLog::open(&dir, "t", "stdout", 3, 4).unwrap();
        log.write(b"0123").unwrap();
        // A directory where the next file goes: it cannot be opened.
        std::fs::create_dir(dir.join("t.stdout.1")).unwrap();
        assert!(log.write(b"ab").is_err());
        assert_eq!((log.index, log.size), (0, 4));
        std::fs::remove_dir(dir.join("t.stdout.1")).unwrap();
        log.write(b"cd").unwrap();
        assert_eq!(std::fs::read(dir.join("t.stdout.1")).unwrap(), b"cd");
        assert!(!dir.join("t.stdout.2").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A write that fails part way (a full disk) counts what it wrote.
    #[test]
    fn a_partial_write_is_counted() {
        let (r, w) = nix::unistd::pipe().unwrap();
        let mut f = File::from(w);
        nix::fcntl::fcntl(
            &f,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .unwrap();
        // More than the pipe holds: it takes what fits, then EAGAIN.
        let data = vec![0u8; 1 << 20];
        let (n, r2) = write_counted(&mut f, &data);
        assert!(r2.is_err() && n > 0 && n < data.len(), "{n} {r2:?}");
        drop(r);
    }

    #[test]
    fn open_streams_finds_each_streams_newest_file() {
        let dir = std::env::temp_dir().join(format!("execdriver-logs2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("t.stderr.2"), b"old").unwrap();
        std::fs::write(dir.join("u.stdout.7"), b"other task").unwrap();
        let [mut out, mut err] =
            RotatingLog::open_streams(&dir, "t", ["stdout", "stderr"], 3, 100).unwrap();
        out.write(b"o").unwrap();
        err.write(b"e").unwrap();
        assert_eq!(std::fs::read(dir.join("t.stdout.0")).unwrap(), b"o");
        assert_eq!(std::fs::read(dir.join("t.stderr.2")).unwrap(), b"olde");
        assert_eq!(
            std::fs::read(dir.join("u.stdout.7")).unwrap(),
            b"other task"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
