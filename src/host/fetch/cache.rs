//! The artifact cache: verified downloads stored by checksum (`<cache_dir>/<type>-<hex>`).
//! An entry is only written after its checksum verified, through a temporary file and a
//! rename, so a reader never sees a partial or unverified entry. Cache failures never fail
//! a fetch: the network is used instead. Only sha256 and sha512 checksums key the cache
//! (md5 and sha1 have practical collisions, which would let one artifact stand in for
//! another).

use super::checksum::Checksum;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

pub struct Cache {
    dir: PathBuf,
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Cache {
    pub fn open(dir: &str) -> Option<Cache> {
        let dir = PathBuf::from(dir);
        if !dir.is_absolute() {
            return None;
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .ok()?;
        Some(Cache { dir })
    }

    fn path(&self, ck: &Checksum) -> PathBuf {
        self.dir.join(ck.cache_key())
    }

    /// The cached bytes for `ck`, if any (a regular file, never through a symlink).
    pub fn lookup(&self, ck: &Checksum) -> Option<(fs::File, u64)> {
        let f = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(self.path(ck))
            .ok()?;
        let m = f.metadata().ok()?;
        m.is_file().then_some((f, m.len()))
    }

    /// Drops an entry that failed verification.
    pub fn remove(&self, ck: &Checksum) {
        let _ = fs::remove_file(self.path(ck));
    }

    /// A new temporary file in the cache dir to tee a download into.
    pub fn tmp(&self) -> Option<TmpEntry> {
        let name = format!(
            ".tmp-{}-{}",
            std::process::id(),
            TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let path = self.dir.join(name);
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .ok()?;
        Some(TmpEntry {
            path,
            file: Some(io::BufWriter::with_capacity(256 * 1024, file)),
            failed: false,
        })
    }

    /// Publishes a verified temporary entry under its checksum.
    pub fn commit(&self, mut tmp: TmpEntry, ck: &Checksum) {
        let ok = !tmp.failed
            && tmp
                .file
                .take()
                .is_some_and(|w| w.into_inner().ok().is_some_and(|f| f.sync_all().is_ok()));
        if ok && fs::rename(&tmp.path, self.path(ck)).is_ok() {
            return;
        }
        let _ = fs::remove_file(&tmp.path);
    }
}

/// A cache entry being written; removed when dropped without [`Cache::commit`].
pub struct TmpEntry {
    path: PathBuf,
    file: Option<io::BufWriter<fs::File>>,
    failed: bool,
}

impl TmpEntry {
    fn write(&mut self, data: &[u8]) {
        if self.failed {
            return;
        }
        if let Some(f) = &mut self.file
            && f.write_all(data).is_err()
        {
            self.failed = true;
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TmpEntry {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Copies everything read into an optional cache entry.
pub struct Tee<R> {
    pub inner: R,
    pub tmp: Option<TmpEntry>,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(t) = &mut self.tmp {
            t.write(&buf[..n]);
        }
        Ok(n)
    }
}
