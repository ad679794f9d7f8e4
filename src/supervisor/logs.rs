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
    pub fn write(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            if self.size >= self.max_bytes {
                self.rotate()?;
            }
            let room = (self.max_bytes - self.size) as usize;
            let n = room.min(data.len());
            self.file.write_all(&data[..n])?;
            self.size += n as u64;
            data = &data[n..];
        }
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.index += 1;
        let (file, size) = open_index(&self.dir, &self.prefix, self.index)?;
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
