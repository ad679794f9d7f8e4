//! Archive detection, decoders, and unpacking that walks every entry itself (tar's own
//! `unpack` is never used): see [`super::safe`] for the path policy. Limits count the
//! real decompressed bytes and the entries seen, never what headers declare.

use super::Fault;
use super::safe;
use super::writer::{self, Job, Pool};
use crate::error::{Code, Error, Result};
use std::collections::HashSet;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Tar,
    TarGz,
    TarBz2,
    TarXz,
    TarZst,
    Zip,
    Gz,
    Bz2,
    Xz,
    Zst,
}

/// Known suffixes, longest first so `x.tar.gz` is a tar.gz, not a gz.
const SUFFIXES: [(&str, Kind); 15] = [
    ("tar.bz2", Kind::TarBz2),
    ("tar.zst", Kind::TarZst),
    ("tar.gz", Kind::TarGz),
    ("tar.xz", Kind::TarXz),
    ("tbz2", Kind::TarBz2),
    ("tzst", Kind::TarZst),
    ("tgz", Kind::TarGz),
    ("txz", Kind::TarXz),
    ("tbz", Kind::TarBz2),
    ("tar", Kind::Tar),
    ("zip", Kind::Zip),
    ("bz2", Kind::Bz2),
    ("zst", Kind::Zst),
    ("gz", Kind::Gz),
    ("xz", Kind::Xz),
];

impl Kind {
    pub fn from_name(s: &str) -> Option<Kind> {
        let s = s.trim().trim_start_matches('.').to_ascii_lowercase();
        SUFFIXES.iter().find(|(n, _)| *n == s).map(|(_, k)| *k)
    }

    /// By the longest known suffix of a path (`a.tar.gz`), if any.
    pub fn detect(path: &str) -> Option<(Kind, &'static str)> {
        let lower = path.to_ascii_lowercase();
        SUFFIXES
            .iter()
            .filter(|(n, _)| lower.ends_with(&format!(".{n}")))
            .max_by_key(|(n, _)| n.len())
            .map(|(n, k)| (*k, *n))
    }

    /// A single compressed file (no directory structure).
    pub fn is_single(self) -> bool {
        matches!(self, Kind::Gz | Kind::Bz2 | Kind::Xz | Kind::Zst)
    }
}

/// Wraps `r` in the decoder the kind needs (identity for tar).
pub fn decoder<'a, R: Read + 'a>(kind: Kind, r: R) -> Box<dyn Read + 'a> {
    match kind {
        Kind::Tar | Kind::Zip => Box::new(r),
        Kind::TarGz | Kind::Gz => Box::new(flate2::read::MultiGzDecoder::new(
            io::BufReader::with_capacity(256 * 1024, r),
        )),
        Kind::TarBz2 | Kind::Bz2 => Box::new(bzip2::read::MultiBzDecoder::new(r)),
        // 512 MiB of dictionary at most, so a hostile header cannot exhaust memory.
        Kind::TarXz | Kind::Xz => Box::new(lzma_rust2::XzReader::new_mem_limit(
            io::BufReader::with_capacity(256 * 1024, r),
            true,
            512 * 1024,
        )),
        Kind::TarZst | Kind::Zst => Box::new(ZstdFrames {
            inner: Some(ZstdState::Idle(io::BufReader::new(r))),
        }),
    }
}

/// zstd with any number of concatenated frames (as `pzstd` writes them).
struct ZstdFrames<R: Read> {
    inner: Option<ZstdState<R>>,
}

enum ZstdState<R: Read> {
    Idle(io::BufReader<R>),
    Frame(
        Box<ruzstd::decoding::StreamingDecoder<io::BufReader<R>, ruzstd::decoding::FrameDecoder>>,
    ),
}

impl<R: Read> Read for ZstdFrames<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use io::BufRead;
        loop {
            match self.inner.take() {
                None => return Ok(0),
                Some(ZstdState::Idle(mut r)) => {
                    if r.fill_buf()?.is_empty() {
                        return Ok(0);
                    }
                    let d = ruzstd::decoding::StreamingDecoder::new(r).map_err(io::Error::other)?;
                    self.inner = Some(ZstdState::Frame(Box::new(d)));
                }
                Some(ZstdState::Frame(mut d)) => {
                    let n = d.read(buf)?;
                    if n == 0 && !buf.is_empty() {
                        self.inner = Some(ZstdState::Idle(d.into_inner()));
                        continue;
                    }
                    self.inner = Some(ZstdState::Frame(d));
                    return Ok(n);
                }
            }
        }
    }
}

/// The unpacking context of one artifact.
pub struct Ctx<'a> {
    pub max_bytes: u64,
    pub max_entries: u64,
    pub entries: &'a AtomicU64,
    pub fault: Fault,
    written: u64,
    count: u64,
    dir_modes: Vec<(PathBuf, u32)>,
    /// Directories checked or created by this unpack: real directories, and nothing
    /// here ever replaces a directory, so they need no second look.
    known: HashSet<PathBuf>,
    buf: Vec<u8>,
}

impl<'a> Ctx<'a> {
    pub fn new(max_bytes: u64, max_entries: u64, entries: &'a AtomicU64, fault: Fault) -> Ctx<'a> {
        Ctx {
            max_bytes,
            max_entries,
            entries,
            fault,
            written: 0,
            count: 0,
            dir_modes: Vec::new(),
            known: HashSet::new(),
            buf: Vec::new(),
        }
    }

    fn limit_bytes(&self) -> Error {
        let e = Error::new(
            Code::ArtifactLimit,
            format!(
                "archive decompresses to more than {} bytes (artifact.decompression_size_limit)",
                self.max_bytes
            ),
        );
        self.fault.set(e.clone(), false);
        e
    }

    fn count_entry(&mut self, name: &str) -> Result<()> {
        self.count += 1;
        self.entries.fetch_add(1, Ordering::Relaxed);
        if self.count > self.max_entries {
            return Err(Error::new(
                Code::ArtifactLimit,
                format!(
                    "archive has more than {} entries (artifact.decompression_file_count_limit), at {name:?}",
                    self.max_entries
                ),
            ));
        }
        Ok(())
    }

    /// Copies `r` into `f`, counting against the size limit.
    fn copy(&mut self, r: &mut dyn Read, f: &mut fs::File) -> std::result::Result<(), CopyError> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.resize(256 * 1024, 0);
        let res = self.copy_with(r, f, &mut buf);
        self.buf = buf;
        res
    }

    fn copy_with(
        &mut self,
        r: &mut dyn Read,
        f: &mut fs::File,
        buf: &mut [u8],
    ) -> std::result::Result<(), CopyError> {
        loop {
            let n = match r.read(buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(CopyError::Read(e)),
            };
            self.written += n as u64;
            if self.written > self.max_bytes {
                return Err(CopyError::Limit(self.limit_bytes()));
            }
            f.write_all(&buf[..n]).map_err(CopyError::Write)?;
        }
    }

    /// Applies directory modes recorded while unpacking (deepest first).
    fn finish_dirs(&mut self) {
        for (p, mode) in self.dir_modes.drain(..).rev() {
            if fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
                let _ = fs::set_permissions(&p, fs::Permissions::from_mode(mode));
            }
        }
    }
}

enum CopyError {
    Read(io::Error),
    Write(io::Error),
    Limit(Error),
}

/// Counts decompressed bytes against the size limit as they come out of a decoder.
pub struct Limited<R> {
    pub inner: R,
    pub count: u64,
    pub max: u64,
    pub fault: Fault,
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        if self.count > self.max {
            let msg = format!(
                "archive decompresses to more than {} bytes (artifact.decompression_size_limit)",
                self.max
            );
            self.fault
                .set(Error::new(Code::ArtifactLimit, msg.clone()), false);
            return Err(io::Error::other(msg));
        }
        Ok(n)
    }
}

fn entry_err(name: &str, why: impl std::fmt::Display) -> Error {
    Error::new(
        Code::ArtifactUnpack,
        format!("archive entry {name:?}: {why}"),
    )
}

fn unpack_err(why: impl std::fmt::Display) -> Error {
    Error::new(Code::ArtifactUnpack, format!("unpacking archive: {why}"))
}

/// Where an entry goes: its parent made safe, the slot cleared. Waits for the writers
/// first when they still work on this path or a parent of it.
fn place(
    ctx: &mut Ctx,
    pool: &mut Pool,
    root: &Path,
    raw: &[u8],
    name: &str,
    is_dir: bool,
) -> Result<Option<PathBuf>> {
    let comps = safe::entry_components(raw).map_err(|e| entry_err(name, e))?;
    let Some((last, parents)) = comps.split_last() else {
        return Ok(None); // the root itself
    };
    let mut target = root.to_path_buf();
    target.extend(&comps);
    if pool.touches(&target) {
        pool.flush()?;
    }
    let parent =
        safe::ensure_dirs_known(root, parents, &mut ctx.known).map_err(|e| entry_err(name, e))?;
    let p = parent.join(last);
    if is_dir {
        safe::ensure_dirs_known(root, &comps, &mut ctx.known).map_err(|e| entry_err(name, e))?;
    } else {
        safe::clear_slot(&p).map_err(|e| entry_err(name, e))?;
    }
    Ok(Some(p))
}

/// Streams one file into a new file at `p` (no pool).
fn write_file(
    ctx: &mut Ctx,
    p: &Path,
    name: &str,
    mode: u32,
    mtime: Option<u64>,
    head: &[u8],
    r: &mut dyn Read,
) -> Result<()> {
    let mut f = safe::create_file(p, mode).map_err(|e| entry_err(name, e))?;
    f.write_all(head)
        .map_err(|e| entry_err(name, format!("writing: {e}")))?;
    match ctx.copy(r, &mut f) {
        Ok(()) => {}
        Err(CopyError::Limit(e)) => return Err(e),
        Err(CopyError::Read(e)) => return Err(entry_err(name, format!("reading: {e}"))),
        Err(CopyError::Write(e)) => return Err(entry_err(name, format!("writing: {e}"))),
    }
    // The exact mode, whatever the umask; setuid, setgid and sticky never survive.
    writer::finish_file(&f, mode, mtime).map_err(|e| entry_err(name, e))
}

/// Reads an entry's data: a small one goes to the writer pool whole, a big one is
/// streamed here. The size limit counts what was really read.
fn write_entry(
    ctx: &mut Ctx,
    pool: &mut Pool,
    p: PathBuf,
    name: &str,
    mode: u32,
    mtime: Option<u64>,
    r: &mut dyn Read,
) -> Result<()> {
    let remaining = ctx.max_bytes.saturating_sub(ctx.written);
    let cap = (writer::SMALL as u64).min(remaining) + 1;
    let mut data = Vec::new();
    r.take(cap)
        .read_to_end(&mut data)
        .map_err(|e| entry_err(name, format!("reading: {e}")))?;
    ctx.written += data.len() as u64;
    if ctx.written > ctx.max_bytes {
        return Err(ctx.limit_bytes());
    }
    if data.len() <= writer::SMALL {
        let name = name.to_string();
        pool.submit(Job {
            path: p,
            name,
            data,
            mode,
            mtime,
        })
    } else {
        write_file(ctx, &p, name, mode, mtime, &data, r)
    }
}

/// Unpacks a tar stream into `root` (an existing, empty real directory).
pub fn unpack_tar(r: &mut dyn Read, root: &Path, ctx: &mut Ctx) -> Result<()> {
    writer::with_pool(writer::threads(), |pool| tar_entries(r, root, ctx, pool))?;
    ctx.finish_dirs();
    Ok(())
}

fn tar_entries(r: &mut dyn Read, root: &Path, ctx: &mut Ctx, pool: &mut Pool) -> Result<()> {
    let mut ar = tar::Archive::new(r);
    let entries = ar.entries().map_err(unpack_err)?;
    for entry in entries {
        let mut entry = entry.map_err(unpack_err)?;
        let raw = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw).into_owned();
        let mut kind = entry.header().entry_type();
        // Global pax headers and GNU volume labels carry no file.
        if matches!(kind, tar::EntryType::XGlobalHeader) || kind.as_byte() == b'V' {
            continue;
        }
        // Old (v7) archives mark directories by a trailing slash only.
        if matches!(kind, tar::EntryType::Regular) && raw.ends_with(b"/") {
            kind = tar::EntryType::Directory;
        }
        ctx.count_entry(&name)?;
        let mode = entry.header().mode().unwrap_or(0o644);
        let mtime = entry.header().mtime().ok();
        use tar::EntryType as T;
        match kind {
            T::Regular | T::Continuous | T::GNUSparse => {
                if let Some(p) = place(ctx, pool, root, &raw, &name, false)? {
                    write_entry(ctx, pool, p, &name, mode, mtime, &mut entry)?;
                }
            }
            T::Directory => {
                if let Some(p) = place(ctx, pool, root, &raw, &name, true)? {
                    ctx.dir_modes.push((p, (mode & 0o777) | 0o700));
                }
            }
            T::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| entry_err(&name, "symlink without a target"))?
                    .into_owned();
                unpack_symlink(ctx, pool, root, &raw, &name, &target)?;
            }
            T::Link => {
                // The target may still be in the writers' hands.
                pool.flush()?;
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| entry_err(&name, "hard link without a target"))?
                    .into_owned();
                unpack_hard_link(ctx, pool, root, &raw, &name, &target)?;
            }
            T::Char | T::Block | T::Fifo => {
                return Err(entry_err(&name, "device nodes and fifos are not allowed"));
            }
            other => {
                return Err(entry_err(
                    &name,
                    format!("unsupported tar entry type {:?}", other.as_byte() as char),
                ));
            }
        }
    }
    Ok(())
}

/// A symlink entry `raw` (shown as `name`) to `target`: relative, and staying inside the
/// destination.
fn unpack_symlink(
    ctx: &mut Ctx,
    pool: &mut Pool,
    root: &Path,
    raw: &[u8],
    name: &str,
    target: &[u8],
) -> Result<()> {
    let comps = safe::entry_components(raw).map_err(|e| entry_err(name, e))?;
    if comps.is_empty() {
        return Err(entry_err(name, "a symlink cannot replace the destination"));
    }
    safe::check_symlink_target(target, comps.len() - 1).map_err(|e| {
        entry_err(
            name,
            format!("{e} (target {:?})", String::from_utf8_lossy(target)),
        )
    })?;
    let p = place(ctx, pool, root, raw, name, false)?.expect("non-empty");
    use std::os::unix::ffi::OsStrExt;
    std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(target), &p)
        .map_err(|e| entry_err(name, e))
}

/// A hard link entry `raw` (shown as `name`) to `target`: a regular file unpacked earlier
/// from the same archive. The writer pool must have been flushed.
fn unpack_hard_link(
    ctx: &mut Ctx,
    pool: &mut Pool,
    root: &Path,
    raw: &[u8],
    name: &str,
    target: &[u8],
) -> Result<()> {
    let tname = String::from_utf8_lossy(target).into_owned();
    let tcomps = safe::entry_components(target)
        .map_err(|e| entry_err(name, format!("hard link target {tname:?}: {e}")))?;
    let Some((tlast, tparents)) = tcomps.split_last() else {
        return Err(entry_err(name, "hard link to the destination itself"));
    };
    let src = safe::ensure_dirs_existing(root, tparents)
        .map_err(|e| entry_err(name, format!("hard link target {tname:?}: {e}")))?
        .join(tlast);
    match fs::symlink_metadata(&src) {
        Ok(m) if m.file_type().is_file() => {}
        _ => {
            return Err(entry_err(
                name,
                format!(
                    "hard link target {tname:?} is not a regular file unpacked earlier from this archive"
                ),
            ));
        }
    }
    let p = place(ctx, pool, root, raw, name, false)?
        .ok_or_else(|| entry_err(name, "a hard link cannot replace the destination"))?;
    fs::hard_link(&src, &p).map_err(|e| entry_err(name, e))
}

/// Unpacks a zip file into `root`.
pub fn unpack_zip(file: fs::File, root: &Path, ctx: &mut Ctx) -> Result<()> {
    writer::with_pool(writer::threads(), |pool| zip_entries(file, root, ctx, pool))?;
    ctx.finish_dirs();
    Ok(())
}

fn zip_entries(file: fs::File, root: &Path, ctx: &mut Ctx, pool: &mut Pool) -> Result<()> {
    let mut ar = zip::ZipArchive::new(io::BufReader::new(file)).map_err(unpack_err)?;
    if ar.len() as u64 > ctx.max_entries {
        return Err(Error::new(
            Code::ArtifactLimit,
            format!(
                "archive has {} entries, more than {} (artifact.decompression_file_count_limit)",
                ar.len(),
                ctx.max_entries
            ),
        ));
    }
    for i in 0..ar.len() {
        let mut f = ar.by_index(i).map_err(unpack_err)?;
        let raw = f.name_raw().to_vec();
        let name = String::from_utf8_lossy(&raw).into_owned();
        ctx.count_entry(&name)?;
        if f.encrypted() {
            return Err(entry_err(&name, "encrypted zip entries are not supported"));
        }
        let mode = f.unix_mode();
        let kind = mode.map(|m| m & 0o170000);
        if kind.is_some_and(|k| matches!(k, 0o020000 | 0o060000 | 0o010000 | 0o140000)) {
            return Err(entry_err(
                &name,
                "device nodes, fifos and sockets are not allowed",
            ));
        }
        if f.is_symlink() {
            let mut target = Vec::new();
            (&mut f)
                .take(4097)
                .read_to_end(&mut target)
                .map_err(|e| entry_err(&name, e))?;
            if target.len() > 4096 {
                return Err(entry_err(&name, "symlink target too long"));
            }
            let comps = safe::entry_components(&raw).map_err(|e| entry_err(&name, e))?;
            if comps.is_empty() {
                return Err(entry_err(&name, "a symlink cannot replace the destination"));
            }
            safe::check_symlink_target(&target, comps.len() - 1).map_err(|e| {
                entry_err(
                    &name,
                    format!("{e} (target {:?})", String::from_utf8_lossy(&target)),
                )
            })?;
            let p = place(ctx, pool, root, &raw, &name, false)?.expect("non-empty");
            use std::os::unix::ffi::OsStrExt;
            std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(&target), &p)
                .map_err(|e| entry_err(&name, e))?;
        } else if f.is_dir() {
            if let Some(p) = place(ctx, pool, root, &raw, &name, true)? {
                ctx.dir_modes
                    .push((p, (mode.unwrap_or(0o755) & 0o777) | 0o700));
            }
        } else if let Some(p) = place(ctx, pool, root, &raw, &name, false)? {
            write_entry(ctx, pool, p, &name, mode.unwrap_or(0o644), None, &mut f)?;
        } else {
            return Err(entry_err(&name, "a file cannot replace the destination"));
        }
    }
    Ok(())
}

/// Decompresses a single-file stream (gz, bz2, xz, zst) into a new file at `p`.
pub fn write_single(r: &mut dyn Read, p: &Path, name: &str, ctx: &mut Ctx) -> Result<()> {
    ctx.count_entry(name)?;
    write_file(ctx, p, name, 0o644, None, &[], r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_longest_suffix() {
        assert_eq!(Kind::detect("/a/b.tar.gz").unwrap().0, Kind::TarGz);
        assert_eq!(Kind::detect("/a/b.TGZ").unwrap().0, Kind::TarGz);
        assert_eq!(Kind::detect("/a/b.gz").unwrap().0, Kind::Gz);
        assert_eq!(Kind::detect("/a/b.tar.zst").unwrap().0, Kind::TarZst);
        assert_eq!(Kind::detect("/a/b.zip").unwrap().0, Kind::Zip);
        assert!(Kind::detect("/a/b.bin").is_none());
        assert!(Kind::detect("/a/tar").is_none());
        assert_eq!(Kind::from_name("tar.xz"), Some(Kind::TarXz));
        assert_eq!(Kind::from_name("rar"), None);
    }

    #[test]
    fn multi_member_gzip() {
        use flate2::write::GzEncoder;
        let mut all = Vec::new();
        for part in [&b"hello "[..], b"world"] {
            let mut e = GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(part).unwrap();
            all.extend(e.finish().unwrap());
        }
        let mut out = String::new();
        decoder(Kind::Gz, &all[..])
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, "hello world");
    }

    #[test]
    fn multi_frame_zstd() {
        use ruzstd::encoding::{CompressionLevel, compress_to_vec};
        let mut all = compress_to_vec(&b"abc"[..], CompressionLevel::Fastest);
        all.extend(compress_to_vec(&b"def"[..], CompressionLevel::Fastest));
        let mut out = String::new();
        decoder(Kind::Zst, &all[..])
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, "abcdef");
    }
}
