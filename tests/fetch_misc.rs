//! Sources other than plain http, destinations, and the cache.

mod fetch_util;

use execdriver::Code;
use execdriver::config::ArtifactConfig;
use fetch_util::*;

#[test]
fn file_source_inside_roots_only() {
    let roots = TempDir::new("roots");
    std::fs::create_dir_all(roots.join("allowed")).unwrap();
    std::fs::write(roots.join("allowed/tool.bin"), b"tool").unwrap();
    std::fs::write(roots.join("secret.bin"), b"secret").unwrap();
    std::os::unix::fs::symlink(roots.join("secret.bin"), roots.join("allowed/sneaky.bin")).unwrap();
    let c = ArtifactConfig {
        file_roots: vec![roots.join("allowed").display().to_string()],
        ..cfg()
    };

    let t = Task::new("file-ok");
    let src = format!("file://{}", roots.join("allowed/tool.bin").display());
    fetch(&[spec(&src)], &t.task, &c).0.unwrap();
    assert_eq!(std::fs::read(t.local().join("tool.bin")).unwrap(), b"tool");

    for (path, tag) in [
        ("secret.bin", "outside"),
        ("allowed/sneaky.bin", "symlink out"),
        ("allowed/../secret.bin", "dotdot"),
    ] {
        let t = Task::new("file-denied");
        let src = format!("file://{}", roots.join(path).display());
        let e = fetch(&[spec(&src)], &t.task, &c).0.unwrap_err();
        assert_eq!(e.code, Code::ArtifactDenied, "{tag}: {e}");
        assert!(!t.local().exists());
    }
    // Missing files: "not found" only inside the roots, denied outside.
    let t = Task::new("file-missing");
    let src = format!("file://{}", roots.join("allowed/nope.bin").display());
    assert_eq!(
        fetch(&[spec(&src)], &t.task, &c).0.unwrap_err().code,
        Code::ArtifactDownload
    );
    let src = format!("file://{}", roots.join("nope.bin").display());
    assert_eq!(
        fetch(&[spec(&src)], &t.task, &c).0.unwrap_err().code,
        Code::ArtifactDenied
    );

    // A cached copy does not make a denied source allowed.
    let cache = TempDir::new("file-cache");
    let cc = ArtifactConfig {
        cache_dir: Some(cache.path().display().to_string()),
        ..c.clone()
    };
    let ck = format!("sha256:{}", sha256_hex(b"secret"));
    std::fs::write(roots.join("allowed/copy.bin"), b"secret").unwrap();
    let t = Task::new("file-cache-ok");
    let ok = format!("file://{}", roots.join("allowed/copy.bin").display());
    fetch(&[spec_with(&ok, |a| opt(a, "checksum", &ck))], &t.task, &cc)
        .0
        .unwrap();
    let t = Task::new("file-cache-denied");
    let out = format!("file://{}", roots.join("secret.bin").display());
    let e = fetch(
        &[spec_with(&out, |a| opt(a, "checksum", &ck))],
        &t.task,
        &cc,
    )
    .0
    .unwrap_err();
    assert_eq!(e.code, Code::ArtifactDenied);

    // No roots configured: every file:// is denied.
    let t = Task::new("file-noroots");
    let e = fetch1(
        spec(&format!(
            "file://{}",
            roots.join("allowed/tool.bin").display()
        )),
        &t.task,
    )
    .unwrap_err();
    assert_eq!(e.code, Code::ArtifactDenied);
}

#[test]
fn file_source_archive_is_unpacked() {
    let roots = TempDir::new("roots-arch");
    std::fs::write(roots.join("a.tar.xz"), xz(&tar(&sample()))).unwrap();
    let c = ArtifactConfig {
        file_roots: vec![roots.path().display().to_string()],
        ..cfg()
    };
    let t = Task::new("file-arch");
    fetch(
        &[spec(&format!(
            "file://{}",
            roots.join("a.tar.xz").display()
        ))],
        &t.task,
        &c,
    )
    .0
    .unwrap();
    check_sample(&t.local());
}

#[test]
fn unsupported_getters_are_named() {
    for (src, scheme) in [
        ("git::https://github.com/hashicorp/go-getter", "git"),
        ("git@github.com:hashicorp/go-getter.git", "git"),
        ("s3::https://s3.amazonaws.com/bucket/foo", "s3"),
        (
            "gcs::https://www.googleapis.com/storage/v1/bucket/foo",
            "gcs",
        ),
        ("hg::http://example.com/repo", "hg"),
        ("ftp://example.com/x", "ftp"),
    ] {
        let t = Task::new("unsupported");
        let e = fetch1(spec(src), &t.task).unwrap_err();
        assert_eq!(e.code, Code::ArtifactDownload, "{src}");
        assert_eq!(e.status() as i32, 5);
        assert!(
            e.message.contains("unsupported") && e.message.contains(scheme),
            "{e}"
        );
    }
}

#[test]
fn destination_cannot_escape() {
    for d in ["../../etc", "local/../../x", "../web2"] {
        let t = Task::new("dest");
        let e = fetch1(
            spec_with("http://127.0.0.1:9/x.bin", |a| {
                a.destination = Some(d.into())
            }),
            &t.task,
        )
        .unwrap_err();
        assert_eq!(e.code, Code::ArtifactDenied, "{d}: {e}");
        assert_eq!(e.field.as_deref(), Some("artifacts[0].destination"));
    }
    // An absolute destination is taken inside the task dir, as Nomad does.
    let srv = Server::files(vec![("/x.bin", b"x".to_vec())]);
    let t = Task::new("dest-abs");
    fetch1(
        spec_with(&srv.url("/x.bin"), |a| {
            a.destination = Some("/local/sub".into())
        }),
        &t.task,
    )
    .unwrap();
    assert_eq!(std::fs::read(t.local().join("sub/x.bin")).unwrap(), b"x");
}

#[test]
fn cached_artifact_served_with_server_stopped() {
    let body = gz(&tar(&sample()));
    let ck = format!("sha256:{}", sha256_hex(&body));
    let cache = TempDir::new("cache");
    let c = ArtifactConfig {
        cache_dir: Some(cache.join("c").display().to_string()),
        ..cfg()
    };
    let srv = Server::files(vec![("/app.tgz", body.clone())]);
    let url = srv.url("/app.tgz");
    let s = spec_with(&url, |a| opt(a, "checksum", &ck));

    let t1 = Task::new("cache1");
    let (r, p) = fetch(std::slice::from_ref(&s), &t1.task, &c);
    r.unwrap();
    assert_eq!(p[0].to_json()["state"], "done");
    check_sample(&t1.local());
    srv.stop();

    let t2 = Task::new("cache2");
    let (r, p) = fetch(&[s], &t2.task, &c);
    r.unwrap();
    assert_eq!(p[0].to_json()["state"], "cached");
    assert_eq!(p[0].to_json()["bytes"], body.len() as u64);
    check_sample(&t2.local());
    // Only the verified entry is in the cache, nothing temporary.
    let names: Vec<String> = std::fs::read_dir(cache.join("c"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec![format!("sha256-{}", sha256_hex(&body))]);
}

#[test]
fn cache_is_never_written_with_unverified_bytes() {
    let body = b"real bytes".to_vec();
    let cache = TempDir::new("cache-bad");
    let c = ArtifactConfig {
        cache_dir: Some(cache.path().display().to_string()),
        ..cfg()
    };
    let srv = Server::files(vec![("/p.bin", body.clone())]);
    let wrong = format!("sha256:{}", flip(&sha256_hex(&body)));
    let t = Task::new("cache-bad");
    let e = fetch(
        &[spec_with(&srv.url("/p.bin"), |a| {
            opt(a, "checksum", &wrong)
        })],
        &t.task,
        &c,
    )
    .0
    .unwrap_err();
    assert_eq!(e.code, Code::ArtifactChecksum);
    assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 0);

    // A poisoned entry (written by someone else) is detected, dropped and refetched.
    let good = format!("sha256:{}", sha256_hex(&body));
    std::fs::write(
        cache.join(&format!("sha256-{}", sha256_hex(&body))),
        b"poison",
    )
    .unwrap();
    let t = Task::new("cache-poison");
    let (r, p) = fetch(
        &[spec_with(&srv.url("/p.bin"), |a| opt(a, "checksum", &good))],
        &t.task,
        &c,
    );
    r.unwrap();
    assert_eq!(p[0].to_json()["state"], "done");
    assert_eq!(std::fs::read(t.local().join("p.bin")).unwrap(), body);
    assert_eq!(
        std::fs::read(cache.join(&format!("sha256-{}", sha256_hex(&body)))).unwrap(),
        body
    );
}

#[test]
fn redact_url_hides_userinfo_and_query_values() {
    let r = execdriver::fetch::redact_url(
        "https://alice:hunter2@h.example/p/a.tgz?X-Amz-Signature=abc&archive=tgz",
    );
    assert_eq!(
        r,
        "https://h.example/p/a.tgz?X-Amz-Signature=redacted&archive=tgz"
    );
}

#[test]
fn weak_checksums_do_not_use_the_cache() {
    let body = b"md5 only".to_vec();
    let cache = TempDir::new("cache-md5");
    let c = ArtifactConfig {
        cache_dir: Some(cache.path().display().to_string()),
        ..cfg()
    };
    let srv = Server::files(vec![("/m.bin", body.clone())]);
    for algo in ["md5", "sha1"] {
        let t = Task::new("cache-md5");
        let ck = format!("{algo}:{}", digest_hex(algo, &body));
        fetch(
            &[spec_with(&srv.url("/m.bin"), |a| opt(a, "checksum", &ck))],
            &t.task,
            &c,
        )
        .0
        .unwrap();
    }
    assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 0);
    let t = Task::new("cache-512");
    let ck = format!("sha512:{}", digest_hex("sha512", &body));
    fetch(
        &[spec_with(&srv.url("/m.bin"), |a| opt(a, "checksum", &ck))],
        &t.task,
        &c,
    )
    .0
    .unwrap();
    assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 1);
}
