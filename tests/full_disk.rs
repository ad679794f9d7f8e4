//! A full disk loses nothing: the data dir and the alloc dirs on one small tmpfs, a task
//! that writes its logs until it is full keeps its exit status, with a host and without
//! one (recovered later by a new host, which configures on the full disk); a start on a
//! full disk fails as a start, naming the file and the errno, and leaves nothing; with a
//! few pages free a start either fails so or runs and reports its exit code (the
//! supervisor's own log may not fit). A read-only or missing data dir fails the start the
//! same way. Root only (it mounts the tmpfs); CI is root. The tests configure the data dir
//! of this process: they run one at a time.

mod common;
mod fault_host;
use common::*;
use fault_host::*;
use serde_json::{Value, json};
use std::path::Path;

#[test]
fn fault_child_host() {
    child_host_main();
}

/// One test at a time: each configures the process's data dir.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Unmounts the small disk at the end, whatever happens.
struct Disk(std::path::PathBuf);

/// A tmpfs of `size` (`8m`) mounted at `dir` (made), unmounted when dropped.
fn small_disk(dir: &Path, size: &str) -> Disk {
    std::fs::create_dir(dir).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some(format!("size={size}").as_str()),
    )
    .unwrap();
    Disk(dir.to_path_buf())
}

/// Fills the disk at `fs`: a big file, then one-page files until not one more fits.
/// Returns the one-page files (removing N of them frees N pages).
fn fill(fs: &Path) -> Vec<std::path::PathBuf> {
    let mut f = std::fs::File::create(fs.join("filler")).unwrap();
    let chunk = vec![0u8; 1 << 20];
    while std::io::Write::write_all(&mut f, &chunk).is_ok() {}
    // 16 pages back, filled one by one.
    let len = f.metadata().unwrap().len();
    f.set_len(len.saturating_sub(16 * 4096)).unwrap();
    drop(f);
    let mut pages = vec![];
    loop {
        let p = fs.join(format!("page-{}", pages.len()));
        if std::fs::write(&p, [0u8; 4096]).is_err() {
            let _ = std::fs::remove_file(&p);
            assert_eq!(free_blocks(fs), 0, "the disk is not full");
            return pages;
        }
        pages.push(p);
    }
}

/// The free blocks of the filesystem at `fs`.
fn free_blocks(fs: &Path) -> u64 {
    nix::sys::statvfs::statvfs(fs).unwrap().blocks_free() as u64
}

/// Removes what [`fill`] made.
fn unfill(fs: &Path, pages: &[std::path::PathBuf]) {
    let _ = std::fs::remove_file(fs.join("filler"));
    for p in pages {
        let _ = std::fs::remove_file(p);
    }
}

/// Nothing of the refused start of task `id` (named `t`) in `alloc` is left.
fn nothing_of(id: &str, alloc: &Path, data: &Path) {
    assert!(cgroups_of(id).is_empty(), "{:?}", cgroups_of(id));
    assert!(!data.join("tasks").join(id).exists(), "{id}: its state dir");
    assert!(claims_of(id).is_empty(), "{id}: its claim");
    assert!(!alloc.join("t").exists(), "{id}: its task dir");
    assert!(
        pids_matching(id).is_empty(),
        "{id}: a process of the refused start"
    );
}

impl Drop for Disk {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// A task that waits for `<alloc>/data/go`, then writes 16 MB to stdout and exits 7.
fn filler(id: &str, name: &str, driver: &str, alloc: &Path) -> Value {
    let alloc_in = if driver == "exec" {
        "/alloc".to_string()
    } else {
        alloc.join("alloc").to_str().unwrap().to_string()
    };
    json!({"id": id, "name": name, "driver": driver, "alloc_dir": alloc,
           "logs": {"max_files": 2, "max_file_size_mb": 100},
           "config": {"command": "/bin/sh", "args": ["-c", format!(
               "while [ ! -e {alloc_in}/data/go ]; do sleep 0.05; done; head -c 16000000 /dev/zero; exit 7")]}})
}

fn go(alloc: &Path) {
    std::fs::write(alloc.join("alloc/data/go"), b"").unwrap();
}

#[test]
fn a_full_disk_loses_no_exit_status() {
    if !is_root() {
        skip("mounting the small disk needs root");
        return;
    }
    let _serial = serial();
    init();
    let d = TempDir::new("disk");
    let fs = d.path().join("fs");
    let _disk = small_disk(&fs, "8m");
    op(
        execdriver::driver::configure,
        json!({"data_dir": fs.join("data")}),
    )
    .unwrap();
    let pid = std::process::id();
    for driver in drivers() {
        // With the host alive.
        let alloc = fs.join(format!("alloc-live-{driver}"));
        let id = format!("disk-live-{driver}-{pid}");
        start(filler(&id, "t", driver, &alloc)).unwrap();
        go(&alloc);
        let w = wait(&id, 60_000).unwrap();
        eprintln!("{driver} live: {w}");
        assert_eq!(
            (w["exit_code"].as_i64(), &w["err"]),
            (Some(7), &Value::Null),
            "{driver}: {w}"
        );
        destroy(&id);
        std::fs::remove_dir_all(&alloc).unwrap();

        // With no host when the task fills the disk and ends: recovered afterwards by a
        // new host, which configures on the full disk.
        let alloc = fs.join(format!("alloc-dead-{driver}"));
        let id = format!("disk-dead-{driver}-{pid}");
        let host = Host::start(&filler(&id, "t", driver, &alloc), false, &[]);
        let handle = host.handle();
        host.kill();
        go(&alloc);
        let sup = handle["pid"].as_i64().unwrap() as i32;
        until("the task never ended", || !alive(sup));
        assert_eq!(
            free_blocks(&fs),
            0,
            "{driver}: the logs did not fill the disk"
        );
        let w = recovered_in_a_new_host(&handle);
        eprintln!("{driver} recovered: {w}");
        assert_eq!(
            (w["exit_code"].as_i64(), &w["err"]),
            (Some(7), &Value::Null),
            "{driver}: {w}"
        );
        std::fs::remove_dir_all(&alloc).unwrap();

        // A start on the full disk: refused as a start, naming the file, leaving nothing.
        let pages = fill(&fs);
        let alloc = fs.join(format!("alloc-full-{driver}"));
        let id = format!("disk-full-{driver}-{pid}");
        let e = start(
            json!({"id": id, "name": "t", "driver": driver, "alloc_dir": alloc,
                             "config": {"command": "/bin/true"}}),
        )
        .unwrap_err();
        assert_eq!(e.status() as i32, 6, "{driver}: {e}");
        assert!(
            e.message.contains("No space left") && e.message.contains(fs.to_str().unwrap()),
            "{driver}: {e}"
        );
        nothing_of(&id, &alloc, &fs.join("data"));
        unfill(&fs, &pages);
        std::fs::remove_dir_all(&alloc).unwrap();
    }
    // A data dir that cannot hold state is refused at configure, naming it.
    let ro = d.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &ro,
        Some("tmpfs"),
        nix::mount::MsFlags::MS_RDONLY,
        Some("size=1m"),
    )
    .unwrap();
    let _ro = Disk(ro.clone());
    for bad in [
        ro.join("data"),
        ro.clone(),
        Path::new("/proc/execdriver-data").into(),
    ] {
        let e = op(execdriver::driver::configure, json!({"data_dir": bad})).unwrap_err();
        assert_eq!(
            (e.code, e.field.as_deref()),
            (execdriver::Code::InvalidConfig, Some("data_dir")),
            "{}: {e}",
            bad.display()
        );
    }
    op(execdriver::driver::configure, json!({})).unwrap();
}

/// With 0 to 7 pages free, a start either fails as a start (`DRIVER_START`, naming the
/// errno) and leaves nothing, or runs and its wait reports the command's exit code: the
/// supervisor, whose own log (`supervisor.log`) is then on a full disk, carries on.
#[test]
fn a_start_with_a_few_pages_free_runs_or_fails_as_a_start() {
    if !is_root() {
        skip("mounting the small disk needs root");
        return;
    }
    let _serial = serial();
    init();
    let d = TempDir::new("pages");
    let fs = d.path().join("fs");
    let _disk = small_disk(&fs, "8m");
    let data = fs.join("data");
    op(execdriver::driver::configure, json!({"data_dir": data})).unwrap();
    let pid = std::process::id();
    for driver in drivers() {
        let (mut failed, mut ran) = (vec![], vec![]);
        for n in 0..8 {
            let pages = fill(&fs);
            assert!(pages.len() >= n, "{pages:?}");
            for p in &pages[..n] {
                std::fs::remove_file(p).unwrap();
            }
            let alloc = fs.join(format!("alloc-{driver}-{n}"));
            let id = format!("disk-pages-{driver}-{n}-{pid}");
            let task = json!({"id": id, "name": "t", "driver": driver, "alloc_dir": alloc,
                "config": {"command": "/bin/sh", "args": ["-c", "echo out; echo err >&2; exit 7"]}});
            match start(task) {
                Err(e) => {
                    assert_eq!(e.status() as i32, 6, "{driver} {n} pages: {e}");
                    assert!(e.message.contains("No space left"), "{driver} {n}: {e}");
                    nothing_of(&id, &alloc, &data);
                    failed.push(n);
                }
                Ok(_) => {
                    let w = wait(&id, 30_000).unwrap();
                    assert_eq!(
                        (w["exit_code"].as_i64(), &w["err"]),
                        (Some(7), &Value::Null),
                        "{driver} {n} pages: {w}"
                    );
                    destroy(&id);
                    ran.push(n);
                }
            }
            unfill(&fs, &pages);
            let _ = std::fs::remove_dir_all(&alloc);
        }
        eprintln!("{driver}: refused with {failed:?} pages free, ran with {ran:?}");
        assert!(failed.contains(&0) && !ran.is_empty(), "{driver}");
    }
    op(execdriver::driver::configure, json!({})).unwrap();
}

/// A data dir that is read-only (a tmpfs remounted so after `driver_configure`, with and
/// without its handle key made) or missing (removed after `driver_configure`) fails a
/// start with `DRIVER_START` naming the path and the errno, and leaves nothing; a missing
/// one is not made again (with a new handle key).
#[test]
fn a_read_only_or_missing_data_dir_fails_the_start() {
    let _serial = serial();
    init();
    let d = TempDir::new("data-dir");
    let pid = std::process::id();
    let task = |id: &str, alloc: &Path| {
        json!({"id": id, "name": "t", "driver": "raw_exec", "alloc_dir": alloc,
               "config": {"command": "/bin/true"}})
    };
    let gone = d.path().join("gone");
    op(execdriver::driver::configure, json!({"data_dir": gone})).unwrap();
    std::fs::remove_dir(&gone).unwrap();
    let alloc = d.path().join("alloc-gone");
    let id = format!("gone-{pid}");
    let e = start(task(&id, &alloc)).unwrap_err();
    assert_eq!(e.status() as i32, 6, "{e}");
    assert!(
        e.message.contains(gone.to_str().unwrap()) && e.message.contains("No such file"),
        "{e}"
    );
    assert!(!gone.exists(), "the data dir was made again");
    nothing_of(&id, &alloc, &gone);
    if !is_root() {
        skip("mounting the read-only disk needs root");
        op(execdriver::driver::configure, json!({})).unwrap();
        return;
    }
    let ro = d.path().join("ro");
    let _disk = small_disk(&ro, "1m");
    let data = ro.join("data");
    op(execdriver::driver::configure, json!({"data_dir": data})).unwrap();
    let remount = |flags: nix::mount::MsFlags| {
        nix::mount::mount(
            None::<&str>,
            &ro,
            None::<&str>,
            nix::mount::MsFlags::MS_REMOUNT | flags,
            None::<&str>,
        )
        .unwrap()
    };
    for keyed in [false, true] {
        let alloc = d.path().join(format!("alloc-ro-{keyed}"));
        if keyed {
            // A start that runs makes the key and the state's directories.
            run(task(&format!("ro-ok-{pid}"), &d.path().join("alloc-ok")));
        }
        remount(nix::mount::MsFlags::MS_RDONLY);
        let id = format!("ro-{keyed}-{pid}");
        let e = start(task(&id, &alloc)).unwrap_err();
        remount(nix::mount::MsFlags::empty());
        assert_eq!(e.status() as i32, 6, "keyed {keyed}: {e}");
        assert!(
            e.message.contains(data.to_str().unwrap()) && e.message.contains("Read-only"),
            "keyed {keyed}: {e}"
        );
        nothing_of(&id, &alloc, &data);
    }
    op(execdriver::driver::configure, json!({})).unwrap();
}
