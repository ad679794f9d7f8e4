//! A full disk loses nothing: the data dir and the alloc dirs on one small tmpfs, a task
//! that writes its logs until it is full keeps its exit status, with a host and without
//! one (recovered later); and a start on a full disk fails as a start, naming the file and
//! the errno, and leaves nothing. Root only (it mounts the tmpfs); CI is root.

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

/// Unmounts the small disk at the end, whatever happens.
struct Disk(std::path::PathBuf);

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
    init();
    let d = TempDir::new("disk");
    let fs = d.path().join("fs");
    std::fs::create_dir(&fs).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &fs,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=8m"),
    )
    .unwrap();
    let _disk = Disk(fs.clone());
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

        // With no host when the task fills the disk and ends: recovered afterwards.
        let alloc = fs.join(format!("alloc-dead-{driver}"));
        let id = format!("disk-dead-{driver}-{pid}");
        let host = Host::start(&filler(&id, "t", driver, &alloc), false, &[]);
        let handle = host.handle();
        host.kill();
        go(&alloc);
        let sup = handle["pid"].as_i64().unwrap() as i32;
        until("the task never ended", || !alive(sup));
        let r = op(execdriver::driver::recover, json!({"handle": handle})).unwrap();
        assert_eq!(r["state"], "exited", "{r}");
        let w = wait(&id, 0).unwrap();
        eprintln!("{driver} recovered: {w}");
        assert_eq!(
            (w["exit_code"].as_i64(), &w["err"]),
            (Some(7), &Value::Null),
            "{driver}: {w}"
        );
        destroy(&id);
        std::fs::remove_dir_all(&alloc).unwrap();

        // A start on the full disk: refused as a start, naming the file, leaving nothing.
        let filler_file = fs.join("filler");
        let mut f = std::fs::File::create(&filler_file).unwrap();
        let chunk = vec![0u8; 1 << 20];
        while std::io::Write::write_all(&mut f, &chunk).is_ok() {}
        drop(f);
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
        assert!(cgroups_of(&id).is_empty(), "{:?}", cgroups_of(&id));
        assert!(!fs.join("data/tasks").join(&id).exists());
        assert!(!alloc.join("t").exists());
        assert!(
            pids_matching(&id).is_empty(),
            "a process of the refused start"
        );
        std::fs::remove_file(&filler_file).unwrap();
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
