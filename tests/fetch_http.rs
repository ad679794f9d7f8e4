//! HTTP behaviour of the fetcher against loopback servers.

mod fetch_util;

use execdriver::Code;
use execdriver::fetch::{self, ArtifactProgress};
use fetch_util::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

#[test]
fn plain_file_bytes_identical_and_progress() {
    let body: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let srv = Server::files(vec![("/dl/binary.bin", body.clone())]);
    let t = Task::new("plain");
    let s = spec(&srv.url("/dl/binary.bin"));
    let (r, p) = fetch(&[s], &t.task, &cfg());
    r.unwrap();
    let out = t.local().join("binary.bin");
    assert_eq!(std::fs::read(&out).unwrap(), body);
    assert_eq!(mode_of(&out), 0o644);
    let j = p[0].to_json();
    assert_eq!(j["state"], "done");
    assert_eq!(j["bytes"], body.len() as u64);
    assert_eq!(j["destination"], "local/");
    assert!(t.no_staging());
}

#[test]
fn header_reaches_server_and_progress_source_is_redacted() {
    let srv = Server::files(vec![("/f.txt", b"hi".to_vec())]);
    let t = Task::new("hdr");
    let url = srv.url("/f.txt").replace("http://", "http://user:pw@") + "?token=s3cr3t";
    let s = spec_with(&url, |a| {
        a.headers.insert("X-Api-Key".into(), "k-123".into());
    });
    let (r, p) = fetch(&[s], &t.task, &cfg());
    r.unwrap();
    let reqs = srv.requests.lock().unwrap();
    assert_eq!(reqs[0].header("X-Api-Key"), Some("k-123"));
    assert_eq!(reqs[0].header("Authorization"), Some("Basic dXNlcjpwdw=="));
    assert!(reqs[0].path.contains("token=s3cr3t"));
    let src = p[0].to_json()["source"].as_str().unwrap().to_string();
    assert!(!src.contains("s3cr3t") && !src.contains("pw@"), "{src}");
}

#[test]
fn every_checksum_type_passes_and_one_digit_off_fails() {
    let body = b"checksummed content".to_vec();
    let srv = Server::files(vec![("/c.bin", body.clone())]);
    for algo in ["md5", "sha1", "sha256", "sha512"] {
        let t = Task::new("ck");
        let good = format!("{algo}:{}", digest_hex(algo, &body));
        fetch1(
            spec_with(&srv.url("/c.bin"), |a| opt(a, "checksum", &good)),
            &t.task,
        )
        .unwrap();
        assert_eq!(std::fs::read(t.local().join("c.bin")).unwrap(), body);

        let t = Task::new("ckbad");
        let bad = format!("{algo}:{}", flip(&digest_hex(algo, &body)));
        let e = fetch1(
            spec_with(&srv.url("/c.bin"), |a| opt(a, "checksum", &bad)),
            &t.task,
        )
        .unwrap_err();
        assert_eq!(e.code, Code::ArtifactChecksum, "{algo}: {e}");
        assert!(!t.local().exists(), "nothing may remain after a mismatch");
        assert!(t.no_staging());
    }
}

#[test]
fn checksum_in_url_query_is_used_and_not_sent() {
    let body = b"query checksum".to_vec();
    let srv = Server::files(vec![("/q.bin", body.clone())]);
    let t = Task::new("qck");
    let url = format!(
        "{}?checksum=sha256:{}",
        srv.url("/q.bin"),
        sha256_hex(&body)
    );
    fetch1(spec(&url), &t.task).unwrap();
    assert_eq!(srv.requests.lock().unwrap()[0].path, "/q.bin");
    let t = Task::new("qckbad");
    let url = format!(
        "{}?checksum=sha256:{}",
        srv.url("/q.bin"),
        flip(&sha256_hex(&body))
    );
    assert_eq!(
        fetch1(spec(&url), &t.task).unwrap_err().code,
        Code::ArtifactChecksum
    );
}

#[test]
fn invalid_checksum_is_invalid_config_with_field() {
    let t = Task::new("ckfmt");
    for bad in [
        "sha256:abc",
        "crc32:1234",
        "sha256",
        &format!("md5:{}", "g".repeat(32)),
    ] {
        let e = fetch1(
            spec_with("http://127.0.0.1:9/x", |a| opt(a, "checksum", bad)),
            &t.task,
        )
        .unwrap_err();
        assert_eq!(e.code, Code::InvalidConfig, "{bad}");
        assert_eq!(e.field.as_deref(), Some("artifacts[0].options.checksum"));
    }
    let e = fetch1(
        fetch::seed_spec("http://127.0.0.1:9/x", Some("md5:00")),
        &t.task,
    )
    .unwrap_err();
    assert_eq!(e.field.as_deref(), Some("config.checksum"));
}

#[test]
fn not_found_fails_without_retry() {
    let srv = Server::files(vec![]);
    let t = Task::new("404");
    let cfg = execdriver::config::ArtifactConfig {
        retries: 3,
        ..cfg()
    };
    let (r, p) = fetch(&[spec(&srv.url("/missing.bin"))], &t.task, &cfg);
    let e = r.unwrap_err();
    assert_eq!(e.code, Code::ArtifactDownload);
    assert!(e.message.contains("404"), "{e}");
    assert_eq!(e.field.as_deref(), Some("artifacts[0]"));
    assert_eq!(srv.count(), 1, "4xx is never retried");
    assert_eq!(p[0].to_json()["state"], "failed");
}

#[test]
fn server_error_then_success_through_retry() {
    let srv = Server::start("127.0.0.1", |_, n| {
        if n == 0 {
            Resp::Status(500)
        } else {
            Resp::Ok(b"ok".to_vec())
        }
    });
    let t = Task::new("retry");
    fetch1(spec(&srv.url("/r.bin")), &t.task).unwrap();
    assert_eq!(std::fs::read(t.local().join("r.bin")).unwrap(), b"ok");
    assert_eq!(srv.count(), 2);
}

#[test]
fn retries_run_out() {
    let srv = Server::start("127.0.0.1", |_, _| Resp::Status(503));
    let t = Task::new("retry-out");
    let cfg = execdriver::config::ArtifactConfig {
        retries: 2,
        ..cfg()
    };
    let e = fetch(&[spec(&srv.url("/r.bin"))], &t.task, &cfg)
        .0
        .unwrap_err();
    assert_eq!(e.code, Code::ArtifactDownload);
    assert!(e.message.contains("503"), "{e}");
    assert_eq!(srv.count(), 3);
}

#[test]
fn connection_refused_is_a_download_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let t = Task::new("refused");
    let cfg = execdriver::config::ArtifactConfig {
        retries: 0,
        ..cfg()
    };
    let e = fetch(
        &[spec(&format!("http://127.0.0.1:{port}/x"))],
        &t.task,
        &cfg,
    )
    .0
    .unwrap_err();
    assert_eq!(e.code, Code::ArtifactDownload, "{e}");
}

#[test]
fn truncated_body_fails_and_leaves_no_file() {
    let srv = Server::start("127.0.0.1", |_, _| Resp::Truncated {
        declared: 10_000,
        body: vec![b'a'; 4000],
    });
    let t = Task::new("trunc");
    let e = fetch1(spec(&srv.url("/t.bin")), &t.task).unwrap_err();
    assert_eq!(e.code, Code::ArtifactDownload, "{e}");
    assert!(e.message.contains("4000 of 10000"), "{e}");
    assert!(!t.local().join("t.bin").exists());
    assert!(t.no_staging());
    // Also through the archive path: a real tgz cut short.
    let noise: Vec<u8> = (0..200_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let tgz = gz(&tar(&[E::File("noise.bin", &noise, 0o644)]));
    let half = tgz[..tgz.len() / 2].to_vec();
    let srv = Server::start("127.0.0.1", move |_, _| Resp::Truncated {
        declared: tgz.len(),
        body: half.clone(),
    });
    let t = Task::new("trunc-tgz");
    let e = fetch1(spec(&srv.url("/t.tar.gz")), &t.task).unwrap_err();
    assert_eq!(e.code, Code::ArtifactDownload, "{e}");
    assert!(!t.local().exists());
}

#[test]
fn endless_body_stops_at_limit() {
    let srv = Server::start("127.0.0.1", |_, _| Resp::Endless);
    let t = Task::new("endless");
    let cfg = execdriver::config::ArtifactConfig {
        http_max_bytes: 1 << 20,
        ..cfg()
    };
    let (r, p) = fetch(&[spec(&srv.url("/e.bin"))], &t.task, &cfg);
    let e = r.unwrap_err();
    assert_eq!(e.code, Code::ArtifactLimit, "{e}");
    assert!(p[0].bytes.load(Ordering::Relaxed) <= (1 << 20) + 256 * 1024);
    assert!(!t.local().exists());
    assert_eq!(srv.count(), 1, "limits are not retried");
}

#[test]
fn declared_length_over_limit_fails_early() {
    let srv = Server::files(vec![("/big.bin", vec![0u8; 5000])]);
    let t = Task::new("cl-limit");
    let cfg = execdriver::config::ArtifactConfig {
        http_max_bytes: 4000,
        ..cfg()
    };
    let e = fetch(&[spec(&srv.url("/big.bin"))], &t.task, &cfg)
        .0
        .unwrap_err();
    assert_eq!(e.code, Code::ArtifactLimit);
}

#[test]
fn chunked_body_is_read() {
    let body: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
    let b2 = body.clone();
    let srv = Server::start("127.0.0.1", move |_, _| Resp::Chunked(b2.clone()));
    let t = Task::new("chunked");
    fetch1(spec(&srv.url("/c.bin")), &t.task).unwrap();
    assert_eq!(std::fs::read(t.local().join("c.bin")).unwrap(), body);
}

fn redirector(final_at: usize) -> Server {
    Server::start("127.0.0.1", move |r, _| {
        let k: usize = r
            .path
            .trim_start_matches("/r/")
            .split(['/', '?'])
            .next()
            .unwrap()
            .parse()
            .unwrap_or(0);
        if k >= final_at {
            Resp::Ok(b"landed".to_vec())
        } else {
            Resp::Redirect(302, format!("/r/{}/f.bin", k + 1))
        }
    })
}

#[test]
fn ten_redirects_are_followed_eleven_are_not() {
    let srv = redirector(10);
    let t = Task::new("redir10");
    fetch1(spec(&srv.url("/r/0/f.bin")), &t.task).unwrap();
    assert_eq!(std::fs::read(t.local().join("f.bin")).unwrap(), b"landed");

    let srv = redirector(usize::MAX);
    let t = Task::new("redir-inf");
    let e = fetch1(spec(&srv.url("/r/0/f.bin")), &t.task).unwrap_err();
    assert_eq!(e.code, Code::ArtifactDownload);
    assert!(e.message.contains("redirect"), "{e}");
    assert_eq!(srv.count(), 11);
}

#[test]
fn authorization_and_headers_not_forwarded_to_another_host() {
    let other = Server::start("127.0.0.2", |_, _| Resp::Ok(b"from b".to_vec()));
    let target = other.url("/b/file.bin");
    let first = Server::start("127.0.0.1", move |_, _| Resp::Redirect(307, target.clone()));
    let t = Task::new("authhop");
    let s = spec_with(&first.url("/a/file.bin"), |a| {
        a.headers
            .insert("Authorization".into(), "Bearer top-secret".into());
        a.headers.insert("X-Custom".into(), "c".into());
    });
    fetch1(s, &t.task).unwrap();
    assert_eq!(
        std::fs::read(t.local().join("file.bin")).unwrap(),
        b"from b"
    );
    let a = first.requests.lock().unwrap()[0].clone();
    assert_eq!(a.header("Authorization"), Some("Bearer top-secret"));
    let b = other.requests.lock().unwrap()[0].clone();
    assert_eq!(b.header("Authorization"), None);
    assert_eq!(b.header("X-Custom"), None);
}

#[test]
fn errors_never_show_secrets() {
    let srv = Server::start("127.0.0.1", |_, _| Resp::Status(403));
    let t = Task::new("secrets");
    let url = srv
        .url("/x.bin?sig=SIGSECRET")
        .replace("http://", "http://me:PWSECRET@");
    let s = spec_with(&url, |a| {
        a.headers
            .insert("Authorization".into(), "Bearer HDRSECRET".into());
    });
    let e = fetch1(s, &t.task).unwrap_err();
    let text = e.to_json().to_string();
    for secret in ["SIGSECRET", "PWSECRET", "HDRSECRET"] {
        assert!(!text.contains(secret), "{text}");
    }
}

#[test]
fn filename_and_archive_false() {
    let data = gz(b"not unpacked");
    let srv = Server::files(vec![("/pkg/thing.gz", data.clone())]);
    let t = Task::new("fname");
    let s = spec_with(&srv.url("/pkg/thing.gz"), |a| {
        opt(a, "archive", "false");
        opt(a, "filename", "renamed.gz");
    });
    fetch1(s, &t.task).unwrap();
    assert_eq!(std::fs::read(t.local().join("renamed.gz")).unwrap(), data);
    // Query form, then the server sees neither option.
    let t = Task::new("fname-q");
    fetch1(
        spec(&(srv.url("/pkg/thing.gz") + "?archive=false&filename=q.bin")),
        &t.task,
    )
    .unwrap();
    assert_eq!(std::fs::read(t.local().join("q.bin")).unwrap(), data);
    assert_eq!(srv.requests.lock().unwrap()[1].path, "/pkg/thing.gz");
}

#[test]
fn parallel_fetches_and_first_error_by_order() {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let srv = Server::start("127.0.0.1", move |r, _| {
        h.fetch_add(1, Ordering::SeqCst);
        if r.path.contains("bad") {
            Resp::Status(404)
        } else {
            Resp::Ok(r.path.clone().into_bytes())
        }
    });
    let t = Task::new("par");
    let specs: Vec<_> = (0..6)
        .map(|i| {
            let mut s = spec(&srv.url(&format!("/f{i}.txt")));
            s.field = format!("artifacts[{i}]");
            s
        })
        .collect();
    let cfg = execdriver::config::ArtifactConfig {
        concurrency: 3,
        ..cfg()
    };
    let (r, p) = fetch(&specs, &t.task, &cfg);
    r.unwrap();
    for (i, pi) in p.iter().enumerate() {
        assert_eq!(
            std::fs::read(t.local().join(format!("f{i}.txt"))).unwrap(),
            format!("/f{i}.txt").into_bytes()
        );
        assert_eq!(pi.to_json()["state"], "done");
    }
    let mut specs = specs;
    specs[2] = spec(&srv.url("/bad2.txt"));
    specs[2].field = "artifacts[2]".into();
    specs[4] = spec(&srv.url("/bad4.txt"));
    specs[4].field = "artifacts[4]".into();
    let t = Task::new("par-err");
    let progress: Vec<_> = specs.iter().map(ArtifactProgress::new).collect();
    let e = fetch::fetch_all(&specs, &t.task, &cfg, &progress).unwrap_err();
    assert_eq!(e.field.as_deref(), Some("artifacts[2]"), "{e}");
}

#[test]
fn stalled_server_times_out() {
    let srv = Server::start("127.0.0.1", |_, _| Resp::Stall);
    let t = Task::new("stall");
    let c = execdriver::config::ArtifactConfig {
        http_read_timeout_ms: 1000,
        retries: 3,
        ..cfg()
    };
    let start = std::time::Instant::now();
    let e = fetch(&[spec(&srv.url("/s.bin"))], &t.task, &c)
        .0
        .unwrap_err();
    assert_eq!(e.code, Code::ArtifactDownload, "{e}");
    assert!(e.message.contains("timed out"), "{e}");
    assert!(start.elapsed() < std::time::Duration::from_secs(10));
    assert_eq!(srv.count(), 1, "the timeout is total: no retry after it");
    assert!(!t.local().exists());
}

#[test]
fn progress_is_visible_while_fetching() {
    let body: Vec<u8> = (0..400_000u32).map(|i| (i % 253) as u8).collect();
    let gate = Gate::default();
    let (b2, g2) = (body.clone(), gate.clone());
    let srv = Server::start("127.0.0.1", move |_, _| Resp::Gated {
        body: b2.clone(),
        split: 100_000,
        gate: g2.clone(),
    });
    let t = Task::new("progress");
    let s = spec(&(srv.url("/p.bin") + "?token=hidden"));
    let progress = vec![ArtifactProgress::new(&s)];
    let p2 = progress.clone();
    let task = t.task.clone();
    let h = std::thread::spawn(move || fetch::fetch_all(&[s], &task, &cfg(), &p2));
    // Poll (no sleeps) until the first part arrived.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while progress[0].bytes.load(Ordering::Relaxed) < 100_000 {
        assert!(std::time::Instant::now() < deadline, "no progress seen");
        std::thread::yield_now();
    }
    let j = progress[0].to_json();
    assert_eq!(j["state"], "fetching");
    assert_eq!(j["bytes"], 100_000);
    assert!(!j["source"].as_str().unwrap().contains("hidden"));
    gate.open();
    h.join().unwrap().unwrap();
    assert_eq!(progress[0].to_json()["state"], "done");
    assert_eq!(progress[0].to_json()["bytes"], body.len() as u64);
    assert_eq!(std::fs::read(t.local().join("p.bin")).unwrap(), body);
}

#[test]
fn https_to_a_plain_server_fails_cleanly() {
    // Exercises the TLS client set-up (system trust store); the handshake must fail.
    let srv = Server::start("127.0.0.1", |_, _| Resp::Status(400));
    let t = Task::new("tls");
    let c = execdriver::config::ArtifactConfig {
        retries: 0,
        ..cfg()
    };
    let url = format!("https://{}/x.bin", srv.addr);
    let e = fetch(&[spec(&url)], &t.task, &c).0.unwrap_err();
    assert_eq!(e.code, Code::ArtifactDownload, "{e}");
    assert!(!t.local().exists());
}

#[test]
fn forced_http_getter_and_extra_options_go_to_the_server() {
    let srv = Server::files(vec![("/o.bin", b"opts".to_vec())]);
    let t = Task::new("opts");
    let s = spec_with(&format!("http::{}?a=1", srv.url("/o.bin")), |a| {
        opt(a, "version", "2 beta");
        opt(a, "filename", "named.bin");
    });
    fetch1(s, &t.task).unwrap();
    assert_eq!(std::fs::read(t.local().join("named.bin")).unwrap(), b"opts");
    assert_eq!(
        srv.requests.lock().unwrap()[0].path,
        "/o.bin?a=1&version=2%20beta"
    );
}
