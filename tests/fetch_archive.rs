//! Archive formats, modes and limits.

mod fetch_util;

use execdriver::Code;
use execdriver::config::ArtifactConfig;
use execdriver::fetch;
use fetch_util::*;

fn formats() -> Vec<(&'static str, Vec<u8>)> {
    let t = tar(&sample());
    vec![
        ("tar", t.clone()),
        ("tar.gz", gz(&t)),
        ("tgz", gz(&t)),
        ("tar.bz2", bz2(&t)),
        ("tar.xz", xz(&t)),
        ("tar.zst", zst(&t)),
        ("zip", zip(&sample())),
    ]
}

#[test]
fn every_format_in_any_and_dir_mode() {
    let files: Vec<(String, Vec<u8>)> = formats()
        .into_iter()
        .map(|(s, b)| (format!("/pkg.{s}"), b))
        .collect();
    let srv = Server::files(files.iter().map(|(p, b)| (p.as_str(), b.clone())).collect());
    for (path, body) in &files {
        for m in ["any", "dir"] {
            let t = Task::new("fmt");
            let s = spec_with(&srv.url(path), |a| {
                mode(a, m);
                a.destination = Some("local/out".into());
                opt(a, "checksum", &format!("sha256:{}", sha256_hex(body)));
            });
            let (r, p) = fetch(&[s], &t.task, &cfg());
            r.unwrap_or_else(|e| panic!("{path} {m}: {e}"));
            check_sample(&t.local().join("out"));
            assert!(
                p[0].entries.load(std::sync::atomic::Ordering::Relaxed) >= 4,
                "{path}"
            );
            assert!(t.no_staging());
        }
    }
}

#[test]
fn archive_option_overrides_suffix() {
    let body = gz(&tar(&sample()));
    let srv = Server::files(vec![("/download", body)]);
    let t = Task::new("archopt");
    fetch1(
        spec_with(&srv.url("/download"), |a| opt(a, "archive", "tgz")),
        &t.task,
    )
    .unwrap();
    check_sample(&t.local());
    let t = Task::new("archopt-bad");
    let e = fetch1(
        spec_with(&srv.url("/download"), |a| opt(a, "archive", "rar")),
        &t.task,
    )
    .unwrap_err();
    assert_eq!(e.code, Code::InvalidConfig);
    assert_eq!(e.field.as_deref(), Some("artifacts[0].options.archive"));
}

#[test]
fn multi_member_gzip_tar() {
    let t1 = tar(&[E::File("a.txt", b"first", 0o644)]);
    // Two gzip members: the first holds the tar minus its end blocks.
    let body = [
        gz(&t1[..t1.len() - 1024]),
        gz(&tar(&[E::File("b.txt", b"second", 0o644)])),
    ]
    .concat();
    let srv = Server::files(vec![("/m.tar.gz", body)]);
    let t = Task::new("multigz");
    fetch1(spec(&srv.url("/m.tar.gz")), &t.task).unwrap();
    assert_eq!(std::fs::read(t.local().join("a.txt")).unwrap(), b"first");
    assert_eq!(std::fs::read(t.local().join("b.txt")).unwrap(), b"second");
}

#[test]
fn file_mode_with_one_file_archive_and_single_gz() {
    let one = gz(&tar(&[
        E::Dir("d/"),
        E::File("d/only.bin", b"the one", 0o640),
    ]));
    let srv = Server::files(vec![
        ("/one.tgz", one),
        ("/two.tgz", gz(&tar(&sample()))),
        ("/tool.gz", gz(b"gunzipped")),
    ]);
    let t = Task::new("filemode");
    fetch1(
        spec_with(&srv.url("/one.tgz"), |a| {
            mode(a, "file");
            a.destination = Some("local/bin/tool".into());
        }),
        &t.task,
    )
    .unwrap();
    assert_eq!(
        std::fs::read(t.local().join("bin/tool")).unwrap(),
        b"the one"
    );

    let t = Task::new("filemode-two");
    let e = fetch1(
        spec_with(&srv.url("/two.tgz"), |a| {
            mode(a, "file");
            a.destination = Some("local/x".into());
        }),
        &t.task,
    )
    .unwrap_err();
    assert_eq!(e.code, Code::ArtifactUnpack);
    assert!(!t.local().exists());

    // A single .gz: file mode names the file, any mode strips the suffix.
    let t = Task::new("gz-file");
    fetch1(
        spec_with(&srv.url("/tool.gz"), |a| {
            mode(a, "file");
            a.destination = Some("local/named".into());
        }),
        &t.task,
    )
    .unwrap();
    assert_eq!(
        std::fs::read(t.local().join("named")).unwrap(),
        b"gunzipped"
    );
    let t = Task::new("gz-any");
    fetch1(spec(&srv.url("/tool.gz")), &t.task).unwrap();
    assert_eq!(std::fs::read(t.local().join("tool")).unwrap(), b"gunzipped");
}

#[test]
fn empty_archive() {
    let srv = Server::files(vec![("/e.tar.gz", gz(&tar(&[]))), ("/e.zip", zip(&[]))]);
    for p in ["/e.tar.gz", "/e.zip"] {
        let t = Task::new("empty");
        fetch1(spec(&srv.url(p)), &t.task).unwrap();
        assert!(t.local().is_dir(), "{p}");
        assert_eq!(std::fs::read_dir(t.local()).unwrap().count(), 0);
    }
}

#[test]
fn nested_dirs_and_file_before_its_directory() {
    let body = gz(&tar(&[
        E::File("a/b/c/d/e/deep.txt", b"deep", 0o644),
        E::Dir("a/b/c/"),
        E::Dir("a/"),
        E::Symlink("a/link", "b/c/d/e/deep.txt"),
        E::Symlink("a/b/up", "../../top.txt"),
        E::File("top.txt", b"t", 0o644),
        E::Hardlink("a/hard.txt", "a/b/c/d/e/deep.txt"),
    ]));
    let srv = Server::files(vec![("/n.tgz", body)]);
    let t = Task::new("nested");
    fetch1(spec(&srv.url("/n.tgz")), &t.task).unwrap();
    let l = t.local();
    assert_eq!(
        std::fs::read(l.join("a/b/c/d/e/deep.txt")).unwrap(),
        b"deep"
    );
    assert_eq!(std::fs::read(l.join("a/link")).unwrap(), b"deep");
    assert_eq!(std::fs::read(l.join("a/b/up")).unwrap(), b"t");
    assert_eq!(std::fs::read(l.join("a/hard.txt")).unwrap(), b"deep");
}

#[test]
fn existing_destination_is_merged() {
    let srv = Server::files(vec![("/m.tgz", gz(&tar(&sample())))]);
    let t = Task::new("merge");
    std::fs::create_dir_all(t.local().join("app/conf")).unwrap();
    std::fs::write(t.local().join("keep.txt"), b"keep").unwrap();
    std::fs::write(t.local().join("app/conf/old.txt"), b"old").unwrap();
    std::fs::write(t.local().join("top.txt"), b"replaced soon").unwrap();
    fetch1(spec(&srv.url("/m.tgz")), &t.task).unwrap();
    check_sample(&t.local());
    assert_eq!(std::fs::read(t.local().join("keep.txt")).unwrap(), b"keep");
    assert_eq!(
        std::fs::read(t.local().join("app/conf/old.txt")).unwrap(),
        b"old"
    );
}

#[test]
fn gzip_bomb_stops_at_size_limit() {
    let zeros = vec![0u8; 8 << 20];
    let bomb = gz(&tar(&[E::File("zeros", &zeros, 0o644)]));
    assert!(bomb.len() < 100_000);
    let single = gz(&zeros);
    let srv = Server::files(vec![("/bomb.tgz", bomb), ("/bomb.gz", single)]);
    let c = ArtifactConfig {
        decompression_size_limit: 1 << 20,
        ..cfg()
    };
    for p in ["/bomb.tgz", "/bomb.gz"] {
        let t = Task::new("bomb");
        let e = fetch(&[spec(&srv.url(p))], &t.task, &c).0.unwrap_err();
        assert_eq!(e.code, Code::ArtifactLimit, "{p}: {e}");
        assert!(!t.local().exists());
        assert!(t.no_staging());
    }
}

#[test]
fn zero_limits_mean_no_limit() {
    let srv = Server::files(vec![("/s.tgz", gz(&tar(&sample())))]);
    let t = Task::new("nolimit");
    let c = ArtifactConfig {
        decompression_size_limit: 0,
        decompression_file_count_limit: 0,
        http_max_bytes: 0,
        ..cfg()
    };
    fetch(&[spec(&srv.url("/s.tgz"))], &t.task, &c).0.unwrap();
    check_sample(&t.local());
}

#[test]
fn too_many_files_stop_at_count_limit() {
    let names: Vec<String> = (0..20).map(|i| format!("f{i}")).collect();
    let entries: Vec<E> = names.iter().map(|n| E::File(n, b"x", 0o644)).collect();
    let srv = Server::files(vec![
        ("/many.tgz", gz(&tar(&entries))),
        ("/many.zip", zip(&entries)),
    ]);
    let c = ArtifactConfig {
        decompression_file_count_limit: 10,
        ..cfg()
    };
    for p in ["/many.tgz", "/many.zip"] {
        let t = Task::new("many");
        let e = fetch(&[spec(&srv.url(p))], &t.task, &c).0.unwrap_err();
        assert_eq!(e.code, Code::ArtifactLimit, "{p}: {e}");
        assert!(!t.local().exists());
    }
}

#[test]
fn corrupt_archive_with_checksum_reports_checksum() {
    let mut body = gz(&tar(&sample()));
    let good = sha256_hex(&body);
    let n = body.len();
    body[n / 2] ^= 0xff;
    let srv = Server::files(vec![("/c.tgz", body)]);
    let t = Task::new("corrupt");
    let e = fetch1(
        spec_with(&srv.url("/c.tgz"), |a| {
            opt(a, "checksum", &format!("sha256:{good}"))
        }),
        &t.task,
    )
    .unwrap_err();
    assert_eq!(e.code, Code::ArtifactChecksum, "{e}");
    let t = Task::new("corrupt-nock");
    let e = fetch1(spec(&srv.url("/c.tgz")), &t.task).unwrap_err();
    assert_eq!(e.code, Code::ArtifactUnpack, "{e}");
    assert!(!t.local().exists());
}

#[test]
fn seed_form_lands_executable() {
    let srv = Server::files(vec![("/dl/binary.bin", b"\x7fELF...".to_vec())]);
    let t = Task::new("seed");
    let s = fetch::seed_spec(
        &srv.url("/dl/binary.bin"),
        Some(&format!("sha256:{}", sha256_hex(b"\x7fELF..."))),
    );
    fetch1(s, &t.task).unwrap();
    let p = t.local().join("binary.bin");
    assert_eq!(std::fs::read(&p).unwrap(), b"\x7fELF...");
    assert_eq!(mode_of(&p), 0o755);
}

#[test]
fn dir_mode_needs_an_archive() {
    let t = Task::new("dirmode");
    let e = fetch1(
        spec_with("http://127.0.0.1:9/plain.bin", |a| mode(a, "dir")),
        &t.task,
    )
    .unwrap_err();
    assert_eq!(e.code, Code::InvalidConfig);
    assert_eq!(e.field.as_deref(), Some("artifacts[0].mode"));
}

#[test]
fn later_entries_win_and_conflicts_are_refused() {
    let body = gz(&tar(&[
        E::File("x", b"one", 0o644),
        E::File("x", b"two", 0o644),
        E::Symlink("l", "x"),
        E::File("l", b"a file now", 0o644),
        E::File("big", &vec![7u8; (1 << 20) + 10], 0o644),
        E::File("big", b"small again", 0o644),
        E::Hardlink("h", "x"),
    ]));
    let conflict = gz(&tar(&[
        E::File("a", b"file", 0o644),
        E::File("a/b", b"x", 0o644),
    ]));
    let srv = Server::files(vec![("/dup.tgz", body), ("/conflict.tgz", conflict)]);
    let t = Task::new("dup");
    fetch1(spec(&srv.url("/dup.tgz")), &t.task).unwrap();
    assert_eq!(std::fs::read(t.local().join("x")).unwrap(), b"two");
    assert_eq!(std::fs::read(t.local().join("h")).unwrap(), b"two");
    assert!(
        std::fs::symlink_metadata(t.local().join("l"))
            .unwrap()
            .is_file()
    );
    assert_eq!(std::fs::read(t.local().join("l")).unwrap(), b"a file now");
    assert_eq!(
        std::fs::read(t.local().join("big")).unwrap(),
        b"small again"
    );

    let t = Task::new("conflict");
    let e = fetch1(spec(&srv.url("/conflict.tgz")), &t.task).unwrap_err();
    assert_eq!(e.code, Code::ArtifactUnpack);
    assert!(e.message.contains("a/b"), "{e}");
    assert!(!t.local().exists());
}
