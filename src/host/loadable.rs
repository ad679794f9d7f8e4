//! Whether an exec task's command can be loaded in its root: its ELF interpreter and the
//! shared libraries it needs (and they need) are there. Without this the classic
//! exec-driver pitfall (a `chroot_env` without `/lib64`) shows as `cannot execute
//! /usr/bin/id: ENOENT` for a file that is plainly there, or as a task that exits 127.
//!
//! Libraries are looked for where the dynamic loader looks: `DT_RPATH`, the task's
//! `LD_LIBRARY_PATH`, `DT_RUNPATH`, the root's `/etc/ld.so.cache` (any entry of that name)
//! and `/etc/ld.so.conf`, and the default directories. A search path this cannot expand
//! (`$LIB`, `$PLATFORM`) counts as having every library: a start is never refused for a
//! library the loader would have found. A command that passed, with everything it needs
//! found in the root's binds, is remembered (its identity, the root's plan, the search
//! path), so a command started again costs one `stat`; one that needs a file of the task
//! dir is checked at every start (the task dir is each task's own).
//!
//! Every file read here lies in a task's root (artifacts are hostile): only regular files
//! are opened, non-blocking, and every offset and size is bounded.

use crate::proto::mounts::Step;
use std::collections::{HashSet, VecDeque};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// What a command needs that its root lacks.
#[derive(Debug, PartialEq)]
pub enum Missing {
    /// The ELF interpreter (`PT_INTERP`), as the command names it.
    Interpreter(String),
    /// A shared library (`DT_NEEDED`), and the file that needs it (a path in the root).
    Library { name: String, needed_by: String },
}

impl Missing {
    /// The message of a start refused for it.
    pub fn message(&self, command: &str) -> String {
        match self {
            Missing::Interpreter(i) => format!(
                "{command} cannot run in the task's root: its ELF interpreter {i} is not \
                 there; add it (or its directory) to the plugin's chroot_env"
            ),
            Missing::Library { name, needed_by } => format!(
                "{command} cannot run in the task's root: the shared library {name} \
                 (needed by {needed_by}) is not there; add its directory to the plugin's \
                 chroot_env"
            ),
        }
    }
}

/// At most this many files are read for one command (it and its libraries).
const MAX_FILES: usize = 256;

/// A task's root as the loader will see it.
pub struct Root<'a> {
    /// The host path that a path in the root (its links resolved) shows: the bind it
    /// lies in, or the task dir.
    view: &'a dyn Fn(&Path) -> Option<PathBuf>,
    /// The task's `LD_LIBRARY_PATH`, if it has one.
    ld_library_path: Option<&'a str>,
    /// The task dir (what is not bound shows from there).
    task_dir: &'a Path,
    /// The root's mount plan: the directories leading to its mount points are made
    /// when it is built, if the task dir lacks them.
    plan: &'a [Step],
    /// Something was found in the task dir.
    used_task_dir: std::cell::Cell<bool>,
}

impl<'a> Root<'a> {
    pub fn new(
        view: &'a dyn Fn(&Path) -> Option<PathBuf>,
        ld_library_path: Option<&'a str>,
        task_dir: &'a Path,
        plan: &'a [Step],
    ) -> Root<'a> {
        Root {
            view,
            ld_library_path,
            task_dir,
            plan,
            used_task_dir: Default::default(),
        }
    }

    /// The host path of what `inner` (a path in the root) names, its links followed as
    /// they resolve in the root (an absolute target from the root's top), or `None`
    /// when it does not exist there.
    fn locate(&self, inner: &Path) -> Option<PathBuf> {
        use std::path::Component;
        let mut at = PathBuf::from("/");
        let mut rest: VecDeque<std::ffi::OsString> = VecDeque::new();
        let push_front = |rest: &mut VecDeque<_>, p: &Path| {
            for c in p.components().rev() {
                match c {
                    Component::Normal(n) => rest.push_front(n.to_os_string()),
                    Component::ParentDir => rest.push_front("..".into()),
                    _ => {}
                }
            }
        };
        push_front(&mut rest, inner);
        let mut links = 0;
        while let Some(name) = rest.pop_front() {
            if name == ".." {
                at.pop();
                continue;
            }
            let next = at.join(&name);
            let host = (self.view)(&next)?;
            let is_link = match std::fs::symlink_metadata(&host) {
                Ok(m) => m.file_type().is_symlink(),
                Err(_) if self.leads_to_a_mount(&next) => false,
                Err(_) => return None,
            };
            if !is_link {
                at = next;
                continue;
            }
            links += 1;
            if links > 40 {
                return None;
            }
            let target = std::fs::read_link(&host).ok()?;
            if target.is_absolute() {
                at = PathBuf::from("/");
            }
            push_front(&mut rest, &target);
        }
        let found = (self.view)(&at)?;
        if found.starts_with(self.task_dir) {
            self.used_task_dir.set(true);
        }
        Some(found)
    }

    /// Whether `inner` is a directory on the way to one of the plan's mount points.
    fn leads_to_a_mount(&self, inner: &Path) -> bool {
        self.plan.iter().any(|s| match s {
            Step::Bind(b) => b.dst.starts_with(inner) && b.dst != inner,
            s => s.mount_point().is_some_and(|m| m.starts_with(inner)),
        })
    }
}

/// The first thing the command at `inner` needs that `root` lacks, if any.
pub fn check(inner: &str, root: &Root<'_>) -> Option<Missing> {
    let host = root.locate(Path::new(inner))?;
    let key = remember_key(&host, root)?;
    if passed().lock().ok()?.contains(&key) {
        return None;
    }
    let missing = find_missing(inner, &host, root);
    if missing.is_none()
        && !root.used_task_dir.get()
        && let Ok(mut p) = passed().lock()
    {
        if p.len() > 4096 {
            p.clear();
        }
        p.insert(key);
    }
    missing
}

fn passed() -> &'static std::sync::Mutex<HashSet<u64>> {
    static PASSED: once_cell::sync::Lazy<std::sync::Mutex<HashSet<u64>>> =
        once_cell::sync::Lazy::new(Default::default);
    &PASSED
}

/// The command's identity (device, inode, size, change time), the root's plan and the
/// search path, hashed.
fn remember_key(host: &Path, root: &Root<'_>) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let m = std::fs::metadata(host).ok()?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (m.dev(), m.ino(), m.size(), m.ctime(), m.ctime_nsec()).hash(&mut h);
    host.hash(&mut h);
    root.ld_library_path.hash(&mut h);
    format!("{:?}", root.plan).hash(&mut h);
    Some(h.finish())
}

fn find_missing(inner: &str, host: &Path, root: &Root<'_>) -> Option<Missing> {
    let first = Elf::read(host)?;
    if let Some(interp) = &first.interp
        && !exists(root, Path::new(interp))
    {
        return Some(Missing::Interpreter(interp.clone()));
    }
    let defaults = default_dirs(root);
    let mut seen = HashSet::new();
    let mut todo = VecDeque::from([(inner.to_string(), first)]);
    let mut read = 1;
    while let Some((path, elf)) = todo.pop_front() {
        let origin = Path::new(&path).parent().unwrap_or(Path::new("/"));
        for name in &elf.needed {
            if !seen.insert(name.clone()) {
                continue;
            }
            match find_library(name, &elf, origin, root, &defaults) {
                Found::No => {
                    return Some(Missing::Library {
                        name: name.clone(),
                        needed_by: path,
                    });
                }
                Found::Unknown => {}
                Found::At(lib) if read < MAX_FILES => {
                    read += 1;
                    if let Some(e) = root.locate(&lib).and_then(|h| Elf::read(&h)) {
                        todo.push_back((lib.to_string_lossy().into_owned(), e));
                    }
                }
                Found::At(_) => {}
            }
        }
    }
    None
}

enum Found {
    At(PathBuf),
    /// Where the loader would look cannot be told here: taken as found.
    Unknown,
    No,
}

fn find_library(
    name: &str,
    elf: &Elf,
    origin: &Path,
    root: &Root<'_>,
    defaults: &Defaults,
) -> Found {
    if name.contains('/') {
        return Found::Unknown;
    }
    let mut dirs: Vec<String> = vec![];
    let split = |s: &str| s.split(':').map(str::to_string).collect::<Vec<_>>();
    if elf.runpath.is_none()
        && let Some(r) = &elf.rpath
    {
        dirs.extend(split(r));
    }
    if let Some(l) = root.ld_library_path {
        dirs.extend(split(l));
    }
    if let Some(r) = &elf.runpath {
        dirs.extend(split(r));
    }
    dirs.extend(defaults.dirs.iter().cloned());
    for d in dirs.iter().filter(|d| !d.is_empty()) {
        let d = d
            .replace("${ORIGIN}", &origin.to_string_lossy())
            .replace("$ORIGIN", &origin.to_string_lossy());
        if d.contains('$') {
            return Found::Unknown;
        }
        let p = Path::new(&d).join(name);
        if p.is_absolute() && exists(root, &p) {
            return Found::At(p);
        }
    }
    if defaults.cache.contains(name) {
        return Found::Unknown;
    }
    Found::No
}

/// The loader's own places in the root: the names in its `ld.so.cache`, and the
/// directories of `ld.so.conf` and the defaults.
struct Defaults {
    cache: HashSet<String>,
    dirs: Vec<String>,
}

fn default_dirs(root: &Root<'_>) -> Defaults {
    let read = |p: &str| root.locate(Path::new(p)).and_then(|h| read_regular(&h, 1 << 22));
    let cache = read("/etc/ld.so.cache")
        .map(|b| {
            b.split(|c| *c == 0)
                .filter_map(|s| std::str::from_utf8(s).ok())
                .filter(|s| s.contains(".so"))
                .map(|s| s.rsplit('/').next().unwrap_or(s).to_string())
                .collect()
        })
        .unwrap_or_default();
    let mut dirs = vec![];
    let mut confs = VecDeque::from(["/etc/ld.so.conf".to_string()]);
    let mut read_confs = 0;
    while let Some(conf) = confs.pop_front() {
        read_confs += 1;
        if read_confs > 64 {
            break;
        }
        let Some(text) = read(&conf) else { continue };
        for line in String::from_utf8_lossy(&text).lines() {
            let line = line.split('#').next().unwrap_or("").trim();
            if let Some(pattern) = line.strip_prefix("include") {
                confs.extend(include(root, pattern.trim()));
            } else if line.starts_with('/') {
                dirs.push(line.to_string());
            }
        }
    }
    let arch = format!("{}-linux-gnu", std::env::consts::ARCH);
    for d in ["/lib", "/usr/lib", "/lib64", "/usr/lib64"] {
        dirs.push(format!("{d}/{arch}"));
        dirs.push(d.to_string());
    }
    Defaults { cache, dirs }
}

/// The files of an `include` of ld.so.conf: a directory glob of the form `dir/*.conf`
/// (what distributions write), else the one path.
fn include(root: &Root<'_>, pattern: &str) -> Vec<String> {
    let p = Path::new(pattern);
    let (Some(dir), Some(file)) = (p.parent(), p.file_name().and_then(|f| f.to_str())) else {
        return vec![];
    };
    let Some((pre, post)) = file.split_once('*') else {
        return vec![pattern.to_string()];
    };
    let Some(entries) = root.locate(dir).and_then(|h| std::fs::read_dir(h).ok()) else {
        return vec![];
    };
    let mut out: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(pre) && n.ends_with(post))
        .map(|n| dir.join(n).to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

fn exists(root: &Root<'_>, inner: &Path) -> bool {
    root.locate(inner).is_some_and(|h| h.exists())
}

/// The whole of a regular file of at most `max` bytes.
fn read_regular(path: &Path, max: u64) -> Option<Vec<u8>> {
    let f = open_regular(path)?;
    let len = f.metadata().ok()?.len();
    if len > max {
        return None;
    }
    let mut buf = vec![0; len as usize];
    f.read_exact_at(&mut buf, 0).ok()?;
    Some(buf)
}

fn open_regular(path: &Path) -> Option<std::fs::File> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_NOFOLLOW)
        .open(path)
        .ok()?;
    f.metadata().ok()?.is_file().then_some(f)
}

/// What the loader reads of an ELF file.
#[derive(Debug, Default)]
struct Elf {
    interp: Option<String>,
    needed: Vec<String>,
    rpath: Option<String>,
    runpath: Option<String>,
}

/// Little-endian ELF32 or ELF64 fields, read from a bounded buffer.
struct Reader<'a> {
    b: &'a [u8],
    wide: bool,
}

impl Reader<'_> {
    fn u(&self, at: usize, n: usize) -> Option<u64> {
        let s = self.b.get(at..at.checked_add(n)?)?;
        Some(s.iter().rev().fold(0, |v, b| (v << 8) | u64::from(*b)))
    }
    /// A word: 8 bytes in ELF64, 4 in ELF32.
    fn w(&self, at: usize) -> Option<u64> {
        self.u(at, if self.wide { 8 } else { 4 })
    }
}

impl Elf {
    /// `None` for anything that is not a little-endian ELF file of this machine's sizes
    /// (a script, say: its interpreter is the kernel's business and found at exec).
    fn read(path: &Path) -> Option<Elf> {
        let f = open_regular(path)?;
        let len = f.metadata().ok()?.len();
        let at = |off: u64, n: u64| -> Option<Vec<u8>> {
            if n > 1 << 20 || off.checked_add(n)? > len {
                return None;
            }
            let mut buf = vec![0; n as usize];
            f.read_exact_at(&mut buf, off).ok()?;
            Some(buf)
        };
        let head = at(0, 64.min(len))?;
        if head.get(..4)? != b"\x7fELF" || head.get(5) != Some(&1) {
            return None;
        }
        let wide = match head.get(4) {
            Some(2) => true,
            Some(1) => false,
            _ => return None,
        };
        let r = Reader { b: &head, wide };
        let (phoff, phentsize, phnum) = if wide {
            (r.w(32)?, r.u(54, 2)?, r.u(56, 2)?)
        } else {
            (r.w(28)?, r.u(42, 2)?, r.u(44, 2)?)
        };
        if phnum > 512 || phentsize < if wide { 56 } else { 32 } {
            return None;
        }
        let table = at(phoff, phentsize * phnum)?;
        let t = Reader { b: &table, wide };
        // (type, offset, vaddr, filesz) of each program header.
        let headers: Vec<(u64, u64, u64, u64)> = (0..phnum as usize)
            .filter_map(|i| {
                let p = i * phentsize as usize;
                Some(if wide {
                    (t.u(p, 4)?, t.w(p + 8)?, t.w(p + 16)?, t.w(p + 32)?)
                } else {
                    (t.u(p, 4)?, t.w(p + 4)?, t.w(p + 8)?, t.w(p + 16)?)
                })
            })
            .collect();
        let mut elf = Elf::default();
        for &(kind, off, _, size) in &headers {
            match kind {
                PT_INTERP => {
                    let b = at(off, size.min(4096))?;
                    let s = b.split(|c| *c == 0).next()?;
                    elf.interp = Some(String::from_utf8_lossy(s).into_owned());
                }
                PT_DYNAMIC => elf.dynamic(&at(off, size)?, wide, &headers, &at),
                _ => {}
            }
        }
        Some(elf)
    }

    /// The `DT_NEEDED`, `DT_RPATH` and `DT_RUNPATH` strings of the dynamic section `dynamic`.
    fn dynamic(
        &mut self,
        dynamic: &[u8],
        wide: bool,
        headers: &[(u64, u64, u64, u64)],
        at: &dyn Fn(u64, u64) -> Option<Vec<u8>>,
    ) {
        let d = Reader { b: dynamic, wide };
        let step = if wide { 16 } else { 8 };
        let mut entries = vec![];
        let (mut strtab, mut strsz) = (None, None);
        for i in (0..dynamic.len() / step).map(|i| i * step) {
            let (Some(tag), Some(val)) = (d.w(i), d.w(i + step / 2)) else {
                break;
            };
            match tag {
                0 => break,
                5 => strtab = Some(val),
                10 => strsz = Some(val),
                1 | 15 | 29 => entries.push((tag, val)),
                _ => {}
            }
        }
        let (Some(addr), Some(size)) = (strtab, strsz) else {
            return;
        };
        // The string table's address, as a file offset (the PT_LOAD that holds it).
        let Some(off) = headers.iter().find_map(|&(kind, off, vaddr, filesz)| {
            (kind == PT_LOAD && addr >= vaddr && addr - vaddr < filesz).then(|| off + addr - vaddr)
        }) else {
            return;
        };
        let Some(strings) = at(off, size) else {
            return;
        };
        let string = |i: u64| -> Option<String> {
            let s = strings.get(usize::try_from(i).ok()?..)?;
            let s = s.split(|c| *c == 0).next()?;
            Some(String::from_utf8_lossy(s).into_owned())
        };
        for (tag, val) in entries {
            let Some(s) = string(val) else { continue };
            match tag {
                1 => self.needed.push(s),
                15 => self.rpath = Some(s),
                _ => self.runpath = Some(s),
            }
        }
    }
}

const PT_LOAD: u64 = 1;
const PT_DYNAMIC: u64 = 2;
const PT_INTERP: u64 = 3;

#[cfg(test)]
mod tests {
    use super::*;

    fn host_root() -> Root<'static> {
        Root::new(&|p: &Path| Some(p.to_path_buf()), None, Path::new("/"), &[])
    }

    #[test]
    fn a_host_binary_reads_as_elf_with_an_interpreter_and_libc() {
        let sh = host_root().locate(Path::new("/bin/sh")).expect("/bin/sh");
        let elf = Elf::read(&sh).expect("/bin/sh is ELF");
        assert!(elf.interp.as_deref().is_some_and(|i| i.contains("ld-")), "{elf:?}");
        assert!(elf.needed.iter().any(|n| n.starts_with("libc.so")), "{elf:?}");
        assert_eq!(check("/bin/sh", &host_root()), None);
    }

    #[test]
    fn what_the_root_lacks_is_named() {
        // A root of /bin only: no interpreter.
        let only_usr_bin = |p: &Path| {
            (p == Path::new("/bin") || p.starts_with("/usr/bin") || p == Path::new("/usr"))
                .then(|| p.to_path_buf())
        };
        let root = Root::new(&only_usr_bin, None, Path::new("/only-usr-bin"), &[]);
        match check("/bin/sh", &root) {
            Some(Missing::Interpreter(i)) => assert!(i.contains("ld-"), "{i}"),
            other => panic!("{other:?}"),
        }
        // The interpreter but no libc.
        let no_libc = |p: &Path| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            (!name.starts_with("libc.so") && name != "ld.so.cache").then(|| p.to_path_buf())
        };
        let root = Root::new(&no_libc, None, Path::new("/no-libc"), &[]);
        match check("/bin/sh", &root) {
            Some(Missing::Library { name, needed_by }) => {
                assert!(name.starts_with("libc.so"), "{name}");
                assert_eq!(needed_by, "/bin/sh");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn scripts_and_garbage_are_not_elf() {
        let d = std::env::temp_dir().join(format!("ed-loadable-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let cases: [&[u8]; 4] = [
            b"#!/bin/sh\necho hi\n",
            b"\x7fELF",
            b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x02\0\x3e\0\x01\0\0\0\0\0\0\0\0\0\0\0\xff\xff\xff\xff\xff\xff\xff\x7f",
            &[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0x3e, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 64, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 64, 0, 56, 0, 0xff, 0xff, 0, 0, 0, 0, 0, 0],
        ];
        for (i, bytes) in cases.iter().enumerate() {
            let f = d.join(format!("f{i}"));
            std::fs::write(&f, bytes).unwrap();
            let e = Elf::read(&f);
            assert!(e.as_ref().is_none_or(|e| e.interp.is_none() && e.needed.is_empty()), "{i}: {e:?}");
        }
        std::fs::remove_dir_all(&d).unwrap();
    }
}
