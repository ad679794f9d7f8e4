//! Hostile archives: each refused with artifact_unpack naming the entry, nothing written
//! outside the destination, the destination unchanged, no staging left.

mod fetch_util;

use execdriver::Code;
use fetch_util::*;

/// Fetches `body` served as `name` into a fresh task; the destination holds a
/// pre-existing file that must survive untouched.
fn refused(name: &str, body: Vec<u8>, entry: &str) {
    let srv = Server::files(vec![(name, body)]);
    let t = Task::new("hostile");
    std::fs::create_dir_all(t.local()).unwrap();
    std::fs::write(t.local().join("existing"), b"before").unwrap();
    std::fs::write(t.outside.join("passwd"), b"outside").unwrap();
    let before = t.tree();
    let e = fetch1(spec(&srv.url(name)), &t.task).unwrap_err();
    assert_eq!(e.code, Code::ArtifactUnpack, "{name}: {e}");
    assert!(
        e.message.contains(entry),
        "message should name {entry:?}: {e}"
    );
    assert_eq!(t.tree(), before, "{name}: something was written");
    assert_eq!(std::fs::read(t.outside.join("passwd")).unwrap(), b"outside");
    assert_eq!(
        std::fs::read(t.local().join("existing")).unwrap(),
        b"before"
    );
}

#[test]
fn tar_slip() {
    refused(
        "/slip.tgz",
        gz(&tar(&[
            E::File("ok.txt", b"ok", 0o644),
            E::File("../../x", b"evil", 0o644),
        ])),
        "../../x",
    );
    refused(
        "/slip2.tar",
        tar(&[E::File("a/../../../outside/passwd", b"evil", 0o644)]),
        "a/../../../outside/passwd",
    );
}

#[test]
fn absolute_path() {
    refused(
        "/abs.tgz",
        gz(&tar(&[E::File("/tmp/execdriver-abs-evil", b"evil", 0o644)])),
        "/tmp/execdriver-abs-evil",
    );
    assert!(!std::path::Path::new("/tmp/execdriver-abs-evil").exists());
}

#[test]
fn symlink_to_etc_passwd() {
    refused(
        "/sl.tgz",
        gz(&tar(&[E::Symlink("passwd", "/etc/passwd")])),
        "passwd",
    );
    refused(
        "/sl2.tgz",
        gz(&tar(&[E::Symlink("d/up", "../../../outside/passwd")])),
        "d/up",
    );
    refused(
        "/sl3.tgz",
        gz(&tar(&[
            E::Symlink("self", "."),
            E::Symlink("esc", "self/../../outside"),
        ])),
        "esc",
    );
}

#[test]
fn symlinked_dir_then_file_through_it() {
    // Even a symlink that points inside may not be written through.
    refused(
        "/sd.tgz",
        gz(&tar(&[
            E::Dir("real/"),
            E::Symlink("dir", "real"),
            E::File("dir/x.txt", b"via link", 0o644),
        ])),
        "dir/x.txt",
    );
}

#[test]
fn hardlink_to_outside() {
    refused(
        "/hl.tgz",
        gz(&tar(&[E::Hardlink("h", "../../outside/passwd")])),
        "h",
    );
    refused(
        "/hl2.tgz",
        gz(&tar(&[E::Hardlink("h", "/etc/passwd")])),
        "h",
    );
    // A hard link to a symlink could re-aim it: refused too.
    refused(
        "/hl3.tgz",
        gz(&tar(&[
            E::Dir("a/b/"),
            E::Symlink("a/b/l", "../../x"),
            E::Hardlink("h", "a/b/l"),
        ])),
        "h",
    );
}

#[test]
fn device_node_and_fifo() {
    refused("/dev.tgz", gz(&tar(&[E::Char("null")])), "null");
    refused("/fifo.tgz", gz(&tar(&[E::Fifo("pipe")])), "pipe");
}

#[test]
fn zip_slip_and_zip_symlink() {
    refused(
        "/zs.zip",
        zip(&[E::File("../evil.txt", b"evil", 0o644)]),
        "../evil.txt",
    );
    refused("/zl.zip", zip(&[E::Symlink("l", "/etc/passwd")]), "l");
}

#[test]
fn setuid_setgid_sticky_dropped() {
    let body = gz(&tar(&[
        E::File("su", b"x", 0o4755),
        E::File("sg", b"x", 0o2755),
        E::File("st", b"x", 0o1777),
    ]));
    let srv = Server::files(vec![
        ("/su.tgz", body),
        ("/su.zip", zip(&[E::File("zsu", b"x", 0o6755)])),
    ]);
    let t = Task::new("setuid");
    fetch1(spec(&srv.url("/su.tgz")), &t.task).unwrap();
    assert_eq!(mode_of(&t.local().join("su")), 0o755);
    assert_eq!(mode_of(&t.local().join("sg")), 0o755);
    assert_eq!(mode_of(&t.local().join("st")), 0o777);
    fetch1(spec(&srv.url("/su.zip")), &t.task).unwrap();
    assert_eq!(mode_of(&t.local().join("zsu")), 0o755);
}

#[test]
fn destination_symlink_is_not_followed() {
    let srv = Server::files(vec![("/a.tgz", gz(&tar(&sample())))]);
    let t = Task::new("destlink");
    std::os::unix::fs::symlink(&t.outside, t.task.join("local")).unwrap();
    let e = fetch1(spec(&srv.url("/a.tgz")), &t.task).unwrap_err();
    assert_eq!(e.code, Code::ArtifactDenied, "{e}");
    assert_eq!(std::fs::read_dir(&t.outside).unwrap().count(), 0);
}

#[test]
fn refusal_does_not_wait_for_the_rest_of_the_download() {
    let filler = vec![0u8; 1 << 20];
    let body = tar(&[
        E::File("../../x", b"evil", 0o644),
        E::File("filler", &filler, 0o644),
    ]);
    let gate = Gate::default();
    let g2 = gate.clone();
    let srv = Server::start("127.0.0.1", move |_, _| Resp::Gated {
        body: body.clone(),
        split: 4096,
        gate: g2.clone(),
    });
    let t = Task::new("prompt");
    let c = execdriver::config::ArtifactConfig {
        http_read_timeout_ms: 600_000,
        ..cfg()
    };
    let start = std::time::Instant::now();
    let e = fetch(&[spec(&srv.url("/slow.tar"))], &t.task, &c)
        .0
        .unwrap_err();
    assert_eq!(e.code, Code::ArtifactUnpack, "{e}");
    assert!(
        start.elapsed() < std::time::Duration::from_secs(30),
        "{:?}",
        start.elapsed()
    );
    assert!(t.no_staging());
    gate.open();
}
