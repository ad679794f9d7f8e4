//! Helpers shared by the fetch integration tests: temp dirs, a tiny loopback HTTP
//! server, archive builders (including hostile raw tar headers), and shorthands.
#![allow(dead_code)]

use execdriver::config::{Artifact, ArtifactConfig, ArtifactMode};
use execdriver::fetch::{self, ArtifactProgress, FetchSpec};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

// ---------------------------------------------------------------- temp dirs

pub struct TempDir(pub PathBuf);

static N: AtomicU64 = AtomicU64::new(0);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "execdriver-fetch-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A task dir plus a sibling "outside" dir that hostile archives aim at.
pub struct Task {
    pub tmp: TempDir,
    pub task: PathBuf,
    pub outside: PathBuf,
}

impl Task {
    pub fn new(tag: &str) -> Task {
        let tmp = TempDir::new(tag);
        let task = tmp.join("alloc/web");
        let outside = tmp.join("outside");
        std::fs::create_dir_all(&task).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        Task { tmp, task, outside }
    }
    pub fn local(&self) -> PathBuf {
        self.task.join("local")
    }
    /// Every path under the temp root, relative, sorted (to see what was written).
    pub fn tree(&self) -> Vec<String> {
        let mut out = Vec::new();
        walk(self.tmp.path(), self.tmp.path(), &mut out);
        out.sort();
        out
    }
    /// No staging dir left in the task dir.
    pub fn no_staging(&self) -> bool {
        std::fs::read_dir(&self.task).unwrap().all(|e| {
            !e.unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(".fetch-")
        })
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        out.push(p.strip_prefix(root).unwrap().display().to_string());
        if e.file_type().unwrap().is_dir() {
            walk(root, &p, out);
        }
    }
}

// ---------------------------------------------------------------- HTTP server

#[derive(Clone, Debug)]
pub struct Req {
    pub path: String,
    pub headers: Vec<(String, String)>,
}

impl Req {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub enum Resp {
    Ok(Vec<u8>),
    Status(u16),
    Redirect(u16, String),
    /// Declares `declared` bytes, sends `body`, closes.
    Truncated {
        declared: usize,
        body: Vec<u8>,
    },
    /// No Content-Length; sends bytes until the client goes away (bounded).
    Endless,
    Chunked(Vec<u8>),
    /// Declares the full length, sends `body[..split]`, waits until `gate` opens
    /// (or the client leaves), then sends the rest.
    Gated {
        body: Vec<u8>,
        split: usize,
        gate: Gate,
    },
    /// Declares 1000 bytes, sends 10, then sends nothing more until the client leaves.
    Stall,
}

/// A one-shot gate the test opens to let a server go on.
#[derive(Clone, Default)]
pub struct Gate(Arc<(Mutex<bool>, std::sync::Condvar)>);

impl Gate {
    pub fn open(&self) {
        *self.0.0.lock().unwrap() = true;
        self.0.1.notify_all();
    }
    fn wait(&self) {
        let mut g = self.0.0.lock().unwrap();
        while !*g {
            g = self.0.1.wait(g).unwrap();
        }
    }
}

type Handler = dyn Fn(&Req, usize) -> Resp + Send + Sync;

pub struct Server {
    pub addr: String,
    pub requests: Arc<Mutex<Vec<Req>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    pub fn start(
        ip: &str,
        handler: impl Fn(&Req, usize) -> Resp + Send + Sync + 'static,
    ) -> Server {
        let listener = TcpListener::bind((ip, 0)).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Arc<Handler> = Arc::new(handler);
        let (reqs, st) = (requests.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (reqs, handler) = (reqs.clone(), handler.clone());
                std::thread::spawn(move || serve(conn, reqs, handler));
            }
        });
        Server {
            addr,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    /// Serves fixed bodies by path; anything else is 404.
    pub fn files(files: Vec<(&str, Vec<u8>)>) -> Server {
        let map: BTreeMap<String, Vec<u8>> =
            files.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        Server::start("127.0.0.1", move |r, _| {
            let path = r.path.split('?').next().unwrap();
            match map.get(path) {
                Some(b) => Resp::Ok(b.clone()),
                None => Resp::Status(404),
            }
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn serve(conn: TcpStream, reqs: Arc<Mutex<Vec<Req>>>, handler: Arc<Handler>) {
    let mut r = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if r.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.trim_end().split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let req = Req { path, headers };
    let n = {
        let mut g = reqs.lock().unwrap();
        g.push(req.clone());
        g.len() - 1
    };
    let mut w = conn;
    let resp = handler(&req, n);
    let stall = matches!(resp, Resp::Stall);
    let _ = match resp {
        Resp::Ok(body) => write!(
            w,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .and_then(|_| w.write_all(&body)),
        Resp::Status(s) => write!(
            w,
            "HTTP/1.1 {s} Status\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ),
        Resp::Redirect(s, loc) => write!(
            w,
            "HTTP/1.1 {s} Moved\r\nLocation: {loc}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ),
        Resp::Truncated { declared, body } => write!(
            w,
            "HTTP/1.1 200 OK\r\nContent-Length: {declared}\r\nConnection: close\r\n\r\n"
        )
        .and_then(|_| w.write_all(&body)),
        Resp::Endless => {
            let chunk = vec![b'x'; 64 * 1024];
            let mut res = write!(w, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
            // Bounded: 1 GiB at most, stops as soon as the client hangs up.
            for _ in 0..16 * 1024 {
                if res.is_err() {
                    break;
                }
                res = w.write_all(&chunk);
            }
            res
        }
        Resp::Gated { body, split, gate } => {
            let res = write!(
                w,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )
            .and_then(|_| w.write_all(&body[..split]))
            .and_then(|_| w.flush());
            gate.wait();
            res.and_then(|_| w.write_all(&body[split..]))
        }
        Resp::Stall => write!(
            w,
            "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n"
        )
        .and_then(|_| w.write_all(&[b'z'; 10])),
        Resp::Chunked(body) => {
            let mut res = write!(
                w,
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            );
            for c in body.chunks(1000) {
                res = res
                    .and_then(|_| write!(w, "{:x}\r\n", c.len()))
                    .and_then(|_| w.write_all(c))
                    .and_then(|_| w.write_all(b"\r\n"));
            }
            res.and_then(|_| w.write_all(b"0\r\n\r\n"))
        }
    };
    let _ = w.flush();
    let mut sink = [0u8; 1024];
    if stall {
        // Send nothing more until the client gives up (bounded).
        let _ = r
            .get_mut()
            .set_read_timeout(Some(std::time::Duration::from_secs(30)));
        while matches!(r.read(&mut sink), Ok(n) if n > 0) {}
    }
    let _ = w.shutdown(std::net::Shutdown::Write);
    // Let the client read everything before the socket goes away.
    let _ = r
        .get_mut()
        .set_read_timeout(Some(std::time::Duration::from_secs(5)));
    while matches!(r.read(&mut sink), Ok(n) if n > 0) {}
}

// ---------------------------------------------------------------- specs and config

pub fn spec(source: &str) -> FetchSpec {
    FetchSpec {
        artifact: Artifact {
            source: source.to_string(),
            ..Default::default()
        },
        executable: false,
        field: "artifacts[0]".into(),
    }
}

pub fn spec_with(source: &str, f: impl FnOnce(&mut Artifact)) -> FetchSpec {
    let mut s = spec(source);
    f(&mut s.artifact);
    s
}

pub fn opt(a: &mut Artifact, k: &str, v: &str) {
    a.options.insert(k.into(), v.into());
}

pub fn mode(a: &mut Artifact, m: &str) {
    a.mode = match m {
        "file" => ArtifactMode::File,
        "dir" => ArtifactMode::Dir,
        _ => ArtifactMode::Any,
    };
}

pub fn cfg() -> ArtifactConfig {
    ArtifactConfig {
        retries: 1,
        ..Default::default()
    }
}

pub fn fetch(
    specs: &[FetchSpec],
    task: &Path,
    cfg: &ArtifactConfig,
) -> (execdriver::Result<()>, Vec<Arc<ArtifactProgress>>) {
    let progress: Vec<_> = specs.iter().map(ArtifactProgress::new).collect();
    let r = fetch::fetch_all(specs, task, cfg, &progress);
    (r, progress)
}

pub fn fetch1(s: FetchSpec, task: &Path) -> execdriver::Result<()> {
    fetch(&[s], task, &cfg()).0
}

pub fn mode_of(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

pub fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

pub fn digest_hex(algo: &str, b: &[u8]) -> String {
    use sha2::Digest;
    match algo {
        "md5" => hex::encode(md5::Md5::digest(b)),
        "sha1" => hex::encode(sha1::Sha1::digest(b)),
        "sha256" => hex::encode(sha2::Sha256::digest(b)),
        "sha512" => hex::encode(sha2::Sha512::digest(b)),
        _ => unreachable!(),
    }
}

/// Changes one hex digit.
pub fn flip(hex: &str) -> String {
    let mut c: Vec<char> = hex.chars().collect();
    c[0] = if c[0] == '0' { '1' } else { '0' };
    c.into_iter().collect()
}

// ---------------------------------------------------------------- archives

pub enum E<'a> {
    File(&'a str, &'a [u8], u32),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
    Char(&'a str),
    Fifo(&'a str),
}

/// A tar built with raw GNU headers, so any name (`../x`, `/abs`) can be written.
pub fn tar(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        let (name, kind, link, data, mode): (&str, tar::EntryType, Option<&str>, &[u8], u32) =
            match e {
                E::File(n, d, m) => (n, tar::EntryType::Regular, None, d, *m),
                E::Dir(n) => (n, tar::EntryType::Directory, None, &[], 0o755),
                E::Symlink(n, t) => (n, tar::EntryType::Symlink, Some(t), &[], 0o777),
                E::Hardlink(n, t) => (n, tar::EntryType::Link, Some(t), &[], 0o644),
                E::Char(n) => (n, tar::EntryType::Char, None, &[], 0o644),
                E::Fifo(n) => (n, tar::EntryType::Fifo, None, &[], 0o644),
            };
        {
            let g = h.as_gnu_mut().unwrap();
            g.name = [0; 100];
            g.name[..name.len()].copy_from_slice(name.as_bytes());
            if let Some(l) = link {
                g.linkname = [0; 100];
                g.linkname[..l.len()].copy_from_slice(l.as_bytes());
            }
        }
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(data.len() as u64);
        h.set_mtime(1_600_000_000);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap()
}

pub fn gz(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

pub fn bz2(b: &[u8]) -> Vec<u8> {
    let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

pub fn xz(b: &[u8]) -> Vec<u8> {
    let mut w =
        lzma_rust2::XzWriter::new(Vec::new(), lzma_rust2::XzOptions::with_preset(1)).unwrap();
    w.write_all(b).unwrap();
    w.finish().unwrap()
}

pub fn zst(b: &[u8]) -> Vec<u8> {
    ruzstd::encoding::compress_to_vec(b, ruzstd::encoding::CompressionLevel::Fastest)
}

pub fn zip(entries: &[E]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for e in entries {
        let o = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        match e {
            E::File(n, d, m) => {
                w.start_file(*n, o.unix_permissions(*m)).unwrap();
                w.write_all(d).unwrap();
            }
            E::Dir(n) => w.add_directory(*n, o).unwrap(),
            E::Symlink(n, t) => w.add_symlink(*n, *t, o).unwrap(),
            _ => panic!("not for zip"),
        }
    }
    w.finish().unwrap().into_inner()
}

/// A small tree used by the archive tests.
pub fn sample() -> Vec<E<'static>> {
    vec![
        E::Dir("app/"),
        E::File("app/run.sh", b"#!/bin/sh\necho hi\n", 0o755),
        E::Dir("app/conf/"),
        E::File("app/conf/a.txt", b"alpha", 0o644),
        E::File("top.txt", b"top", 0o600),
    ]
}

pub fn check_sample(dir: &Path) {
    assert_eq!(
        std::fs::read(dir.join("app/run.sh")).unwrap(),
        b"#!/bin/sh\necho hi\n"
    );
    assert_eq!(mode_of(&dir.join("app/run.sh")), 0o755);
    assert_eq!(std::fs::read(dir.join("app/conf/a.txt")).unwrap(), b"alpha");
    assert_eq!(std::fs::read(dir.join("top.txt")).unwrap(), b"top");
    assert_eq!(mode_of(&dir.join("top.txt")), 0o600);
}
