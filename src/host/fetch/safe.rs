//! Path safety: archive entry names, symlink targets, the destination inside the task
//! dir, and creating files and directories without ever following a symlink that an
//! archive (or anyone) put in the way.
//!
//! Policy: absolute entry names are refused (not stripped), as are names with a `..`
//! component. Symlink targets must be relative, may only start with `..` components
//! (`../lib/x`, never `a/../../x`), and must stay inside the unpack root. Writing
//! through a symlinked directory is refused.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Splits an archive entry name into its normal components.
/// `Ok(vec![])` means the root itself (`./`, `.`).
pub fn entry_components(raw: &[u8]) -> Result<Vec<OsString>, String> {
    if raw.is_empty() {
        return Err("empty entry name".into());
    }
    if raw.contains(&0) {
        return Err("entry name contains NUL".into());
    }
    if raw[0] == b'/' {
        return Err("absolute paths are not allowed in archives".into());
    }
    let mut out = Vec::new();
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err("\"..\" is not allowed in archive entry names".into()),
            c => out.push(OsStr::from_bytes(c).to_os_string()),
        }
    }
    Ok(out)
}

/// Checks a symlink target for a link whose parent lies `depth` directories below the
/// unpack root.
pub fn check_symlink_target(target: &[u8], depth: usize) -> Result<(), String> {
    if target.is_empty() {
        return Err("symlink with an empty target".into());
    }
    if target.contains(&0) {
        return Err("symlink target contains NUL".into());
    }
    if target[0] == b'/' {
        return Err("symlink to an absolute path leaves the destination".into());
    }
    let mut ups = 0usize;
    let mut seen_normal = false;
    for c in target.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." if seen_normal => {
                return Err(
                    "symlink target with \"..\" after a directory name is not allowed".into(),
                );
            }
            b".." => ups += 1,
            _ => seen_normal = true,
        }
    }
    if ups > depth {
        return Err("symlink target leaves the destination".into());
    }
    Ok(())
}

/// Makes sure every directory from `root` down to `root/comps…` exists as a real
/// directory (created 0755 where missing), refusing symlinks and non-directories.
/// Returns the full path.
pub fn ensure_dirs(root: &Path, comps: &[OsString]) -> Result<PathBuf, String> {
    let mut p = root.to_path_buf();
    for c in comps {
        p.push(c);
        ensure_dir(&p, root)?;
    }
    Ok(p)
}

/// [`ensure_dirs`] that skips the directories in `known` (checked or created earlier by
/// the same unpack, which never replaces a directory) and records the new ones.
pub fn ensure_dirs_known(
    root: &Path,
    comps: &[OsString],
    known: &mut HashSet<PathBuf>,
) -> Result<PathBuf, String> {
    let mut p = root.to_path_buf();
    for c in comps {
        p.push(c);
        if !known.contains(&p) {
            ensure_dir(&p, root)?;
            known.insert(p.clone());
        }
    }
    Ok(p)
}

/// One level of [`ensure_dirs`]: `p` is a real directory afterwards, or an error.
fn ensure_dir(p: &Path, root: &Path) -> Result<(), String> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(m) if m.file_type().is_symlink() => Err(format!(
            "refusing to write through the symlink {}",
            show(p, root)
        )),
        Ok(_) => Err(format!("{} exists and is not a directory", show(p, root))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            match fs::DirBuilder::new().mode(0o755).create(p) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    // Someone (a parallel artifact) made it: check it again.
                    match fs::symlink_metadata(p) {
                        Ok(m) if m.is_dir() => Ok(()),
                        _ => Err(format!("{} exists and is not a directory", show(p, root))),
                    }
                }
                Err(e) => Err(format!("creating {}: {e}", show(p, root))),
            }
        }
        Err(e) => Err(format!("{}: {e}", show(p, root))),
    }
}

/// Like [`ensure_dirs`] but creates nothing: every component must already be a real
/// directory.
pub fn ensure_dirs_existing(root: &Path, comps: &[OsString]) -> Result<PathBuf, String> {
    let mut p = root.to_path_buf();
    for c in comps {
        p.push(c);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                return Err(format!(
                    "refusing to go through the symlink {}",
                    show(&p, root)
                ));
            }
            _ => return Err(format!("{} is not a directory", show(&p, root))),
        }
    }
    Ok(p)
}

fn show(p: &Path, root: &Path) -> String {
    let rel = p.strip_prefix(root).unwrap_or(p);
    format!("\"{}\"", rel.display())
}

/// Removes whatever non-directory is at `p` (a file or symlink, never followed) so an
/// entry can take its place. A directory there is an error.
pub fn clear_slot(p: &Path) -> Result<(), String> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => Err("a directory of the same name exists".into()),
        Ok(_) => fs::remove_file(p).map_err(|e| e.to_string()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

/// Creates a new file (never following a symlink) with `mode` (umask aside; callers
/// set the exact mode afterwards).
pub fn create_file(p: &Path, mode: u32) -> io::Result<fs::File> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode | 0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(p)
}

/// Lexically normalises a destination relative to the task dir (a leading `/` is taken
/// as the task dir, as Nomad does). `Err` when it leaves the task dir.
pub fn dest_components(dest: &str) -> Result<Vec<OsString>, String> {
    if dest.contains('\0') {
        return Err("contains NUL".into());
    }
    let mut out: Vec<OsString> = Vec::new();
    for c in dest.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if out.pop().is_none() {
                    return Err("leaves the task directory".into());
                }
            }
            c => out.push(c.into()),
        }
    }
    Ok(out)
}

/// Moves everything in `src` into `dst` (an existing real directory): directories are
/// merged, files and symlinks replace what was there. `check_merge` first verifies that
/// nothing would replace a directory, so a failed merge changes nothing.
pub fn check_merge(src: &Path, dst: &Path) -> Result<(), String> {
    for e in fs::read_dir(src).map_err(|e| e.to_string())? {
        let e = e.map_err(|e| e.to_string())?;
        let target = dst.join(e.file_name());
        let src_is_dir = e.file_type().map_err(|e| e.to_string())?.is_dir();
        match fs::symlink_metadata(&target) {
            Ok(m) if m.is_dir() && src_is_dir => check_merge(&e.path(), &target)?,
            Ok(m) if m.is_dir() => {
                return Err(format!(
                    "\"{}\" is a directory in the destination and a file in the artifact",
                    target.display()
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

pub fn merge(src: &Path, dst: &Path) -> io::Result<()> {
    for e in fs::read_dir(src)? {
        let e = e?;
        let target = dst.join(e.file_name());
        let src_is_dir = e.file_type()?.is_dir();
        match fs::symlink_metadata(&target) {
            Ok(m) if m.is_dir() && src_is_dir => merge(&e.path(), &target)?,
            Ok(m) if !m.is_dir() && src_is_dir => {
                fs::remove_file(&target)?;
                fs::rename(e.path(), &target)?;
            }
            _ => fs::rename(e.path(), &target)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn entry_names() {
        assert_eq!(entry_components(b"a/./b//c").unwrap(), vec!["a", "b", "c"]);
        assert!(entry_components(b"./").unwrap().is_empty());
        assert!(entry_components(b"../../x").is_err());
        assert!(entry_components(b"a/../b").is_err());
        assert!(entry_components(b"/etc/passwd").is_err());
        assert!(entry_components(b"").is_err());
    }

    #[test]
    fn symlink_targets() {
        assert!(check_symlink_target(b"x", 0).is_ok());
        assert!(check_symlink_target(b"../x", 1).is_ok());
        assert!(check_symlink_target(b"../x", 0).is_err());
        assert!(check_symlink_target(b"/etc/passwd", 5).is_err());
        assert!(check_symlink_target(b"a/../../x", 5).is_err());
        assert!(check_symlink_target(b"./../x", 1).is_ok());
    }

    #[test]
    fn destinations() {
        assert_eq!(dest_components("local/").unwrap(), vec!["local"]);
        assert_eq!(
            dest_components("/local/a/../b").unwrap(),
            vec!["local", "b"]
        );
        assert!(dest_components("../../etc").is_err());
        assert!(dest_components("local/../../x").is_err());
        assert!(dest_components("").unwrap().is_empty());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn accepted_entry_names_stay_inside(parts in prop::collection::vec(
            prop_oneof![Just("..".to_string()), Just(".".to_string()), Just(String::new()),
                        Just("/".to_string()), "[a-z.]{1,3}", "[^\0]{0,4}"], 0..8)) {
            let raw = parts.join("/");
            if let Ok(comps) = entry_components(raw.as_bytes()) {
                prop_assert!(!raw.starts_with('/'));
                for c in &comps {
                    prop_assert!(c != ".." && c != "." && !c.is_empty());
                    prop_assert!(!c.as_bytes().contains(&b'/'));
                }
            }
        }

        #[test]
        fn accepted_symlinks_stay_inside(depth in 0usize..4, parts in prop::collection::vec(
            prop_oneof![Just("..".to_string()), Just(".".to_string()), Just(String::new()),
                        "[a-z]{1,3}"], 0..8), abs in any::<bool>()) {
            let mut target = parts.join("/");
            if abs { target.insert(0, '/'); }
            if check_symlink_target(target.as_bytes(), depth).is_ok() {
                // Walk it from a link at `depth`: the level never goes below the root.
                prop_assert!(!target.starts_with('/'));
                let mut level = depth as isize;
                for c in target.split('/') {
                    match c {
                        "" | "." => {}
                        ".." => level -= 1,
                        _ => level += 1,
                    }
                    prop_assert!(level >= 0, "{} escapes from depth {}", target, depth);
                }
            }
        }

        #[test]
        fn accepted_destinations_stay_inside(parts in prop::collection::vec(
            prop_oneof![Just("..".to_string()), Just(".".to_string()), "[a-z]{1,3}"], 0..8)) {
            let d = parts.join("/");
            if let Ok(comps) = dest_components(&d) {
                for c in &comps {
                    prop_assert!(c != ".." && c != ".");
                }
            }
        }
    }
}
