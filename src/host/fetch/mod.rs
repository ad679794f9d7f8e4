//! Artifact fetching (docs/task.md "Artifacts"): http(s) and `file://` sources, checksums computed while
//! the bytes stream in, archives unpacked entry by entry under a strict path policy
//! (see [`safe`]), a staging directory inside the task dir so a failure leaves the
//! destination as it was, bounded parallelism, retries, and a cache keyed by checksum.
//!
//! One pass per artifact where the format allows: body → (cache tee) → hash on a
//! read-ahead thread (`pipe.rs`), then decompress → tar entries → staging on the fetching
//! thread, with small files created by a few writer threads (`writer.rs`); the checksum
//! is checked at the end of the stream and only then is the staging tree moved into the
//! destination. Zip needs random access, so it is spooled to the staging dir and
//! verified before it is opened. Retries (connection errors, 5xx, a body cut short)
//! restart the whole pass in a fresh staging dir; `http_read_timeout_ms` bounds all of
//! it, retries and backoff included.
//!
//! Archive policy: entries with `..` and absolute entry names are refused (never
//! stripped); symlinks must be relative and stay inside the destination; hard links must
//! point at a regular file unpacked earlier from the same archive; device nodes and fifos
//! are refused; setuid, setgid and sticky bits are dropped.

pub mod archive;
pub mod cache;
pub mod checksum;
pub mod http;
mod pipe;
mod place;
mod plan;
pub mod safe;
pub mod source;
mod writer;

pub use source::redact_url;

use crate::config::{Artifact, ArtifactConfig, ArtifactMode};
use crate::error::{Code, Error, Result};
use archive::{Ctx, Kind, Limited};
use checksum::{HashingReader, VerifyError};
use http::{Body, Failure};
use place::{Staged, Staging, commit, mkdir};
use plan::Plan;
use serde_json::json;
use source::Source;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One artifact to fetch.
#[derive(Debug, Clone)]
pub struct FetchSpec {
    /// Already interpolated by the caller.
    pub artifact: Artifact,
    /// The seed's `config.artifact_source` form: a plain file lands 0755.
    pub executable: bool,
    /// JSON path for errors, e.g. `artifacts[1]` or `config.artifact_source`.
    pub field: String,
}

/// The seed form: `config.artifact_source` + `config.checksum`.
pub fn seed_spec(source: &str, checksum: Option<&str>) -> FetchSpec {
    let mut options = std::collections::BTreeMap::new();
    if let Some(c) = checksum {
        options.insert("checksum".to_string(), c.to_string());
    }
    FetchSpec {
        artifact: Artifact {
            source: source.to_string(),
            destination: Some("local/".to_string()),
            mode: ArtifactMode::Any,
            options,
            headers: Default::default(),
        },
        executable: true,
        field: "config.artifact_source".to_string(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum State {
    Pending = 0,
    Fetching = 1,
    Done = 2,
    Cached = 3,
    Failed = 4,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Fetching => "fetching",
            State::Done => "done",
            State::Cached => "cached",
            State::Failed => "failed",
        }
    }
    fn from_u8(v: u8) -> State {
        match v {
            1 => State::Fetching,
            2 => State::Done,
            3 => State::Cached,
            4 => State::Failed,
            _ => State::Pending,
        }
    }
}

/// Progress of one artifact, readable from any thread while it is fetched.
#[derive(Debug)]
pub struct ArtifactProgress {
    /// Redacted: no userinfo, no query secrets.
    pub source: String,
    pub destination: String,
    /// Bytes downloaded (or read from the cache) so far.
    pub bytes: Arc<AtomicU64>,
    /// Archive entries unpacked so far.
    pub entries: AtomicU64,
    state: AtomicU8,
}

impl ArtifactProgress {
    pub fn new(spec: &FetchSpec) -> Arc<ArtifactProgress> {
        Arc::new(ArtifactProgress {
            source: redact_url(&spec.artifact.source),
            destination: spec
                .artifact
                .destination
                .clone()
                .unwrap_or_else(|| "local/".into()),
            bytes: Arc::new(AtomicU64::new(0)),
            entries: AtomicU64::new(0),
            state: AtomicU8::new(State::Pending as u8),
        })
    }

    pub fn state(&self) -> State {
        State::from_u8(self.state.load(Ordering::Acquire))
    }

    fn set_state(&self, s: State) {
        self.state.store(s as u8, Ordering::Release);
    }

    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "source": self.source,
            "destination": self.destination,
            "bytes": self.bytes.load(Ordering::Relaxed),
            "entries": self.entries.load(Ordering::Relaxed),
            "state": self.state().as_str(),
        })
    }
}

/// The first error seen by a reader deep in the pipeline (download, limit), kept so it
/// is reported as itself even after a decoder or the tar reader wrapped it.
#[derive(Clone, Default, Debug)]
pub struct Fault(Arc<Mutex<Option<(Error, bool)>>>);

impl Fault {
    pub fn set(&self, e: Error, retryable: bool) {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if g.is_none() {
            *g = Some((e, retryable));
        }
    }
    pub fn take(&self) -> Option<(Error, bool)> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// Fetches every artifact into `task_dir`, at most `cfg.concurrency` at once, updating
/// `progress` (one per spec, same order). Returns the first error by artifact order;
/// artifacts after a failure that have not started are not started.
pub fn fetch_all(
    specs: &[FetchSpec],
    task_dir: &Path,
    cfg: &ArtifactConfig,
    progress: &[Arc<ArtifactProgress>],
) -> Result<()> {
    if specs.is_empty() {
        return Ok(());
    }
    let progress: Vec<Arc<ArtifactProgress>> = specs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            progress
                .get(i)
                .cloned()
                .unwrap_or_else(|| ArtifactProgress::new(s))
        })
        .collect();
    let workers = (cfg.concurrency.max(1) as usize).min(specs.len());
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let results: Vec<Mutex<Option<Result<()>>>> = specs.iter().map(|_| Mutex::new(None)).collect();
    let work = || {
        while !stop.load(Ordering::Acquire) {
            let i = next.fetch_add(1, Ordering::AcqRel);
            if i >= specs.len() {
                break;
            }
            let p = &progress[i];
            p.set_state(State::Fetching);
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                fetch_one(&specs[i], task_dir, cfg, p)
            }))
            .unwrap_or_else(|_| Err(Error::internal("artifact fetch panicked")));
            let r = r.map_err(|e| with_field(e, &specs[i].field));
            match &r {
                Ok(cached) => p.set_state(if *cached { State::Cached } else { State::Done }),
                Err(_) => {
                    p.set_state(State::Failed);
                    stop.store(true, Ordering::Release);
                }
            }
            *results[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(r.map(|_| ()));
        }
    };
    if workers == 1 {
        work();
    } else {
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(work);
            }
        });
    }
    for r in results {
        if let Some(Err(e)) = r.into_inner().unwrap_or_else(|e| e.into_inner()) {
            return Err(e);
        }
    }
    Ok(())
}

fn with_field(mut e: Error, field: &str) -> Error {
    if !e.message.starts_with(field) {
        e.message = format!("{field}: {}", e.message);
    }
    if e.field.is_none() {
        e.field = Some(field.to_string());
    }
    e
}

/// Fetches one artifact; `Ok(true)` when it came from the cache.
fn fetch_one(
    spec: &FetchSpec,
    task_dir: &Path,
    cfg: &ArtifactConfig,
    p: &ArtifactProgress,
) -> Result<bool> {
    let plan = Plan::new(spec)?;
    let file_source = match &plan.source {
        Source::File(path) => Some(check_file_source(path, cfg, &plan.field)?),
        Source::Http(_) => None,
    };
    // Only collision-resistant digests key the cache: with md5 or sha1 someone able to
    // make two colliding files could plant one under the other's key.
    let cache = match (&cfg.cache_dir, &plan.checksum) {
        (Some(d), Some(ck)) if ck.algo.collision_resistant() => cache::Cache::open(d),
        _ => None,
    };
    if let (Some(cache), Some(ck)) = (&cache, &plan.checksum)
        && from_cache(&plan, cfg, task_dir, p, cache, ck)?
    {
        return Ok(true);
    }
    from_source(
        &plan,
        spec,
        cfg,
        task_dir,
        file_source.as_deref(),
        cache.as_ref(),
        p,
    )?;
    Ok(false)
}

/// Unpacks the artifact from the cache's entry for `ck` and commits it. `Ok(false)` when
/// there is none, or it was corrupt (it is dropped then).
fn from_cache(
    plan: &Plan,
    cfg: &ArtifactConfig,
    task_dir: &Path,
    p: &ArtifactProgress,
    cache: &cache::Cache,
    ck: &checksum::Checksum,
) -> Result<bool> {
    let Some((file, len)) = cache.lookup(ck) else {
        return Ok(false);
    };
    let staging = Staging::new(task_dir)?;
    let fault = Fault::default();
    let body = local_body(
        file,
        format!("cache entry {}", ck.cache_key()),
        len,
        p,
        &fault,
    );
    match attempt(plan, cfg, &staging, body, None, fault, p) {
        Ok(staged) => {
            commit(plan, task_dir, staged)?;
            Ok(true)
        }
        // A corrupt entry: drop it and fetch from the source.
        Err(f) if f.error.code == Code::ArtifactChecksum => {
            cache.remove(ck);
            Ok(false)
        }
        Err(f) => Err(f.error),
    }
}

/// Fetches the artifact from its source (`file_source`: a `file://` one resolved) and
/// commits it, each attempt in a fresh staging dir; what may succeed again is retried
/// with backoff while `http_read_timeout_ms` allows.
fn from_source(
    plan: &Plan,
    spec: &FetchSpec,
    cfg: &ArtifactConfig,
    task_dir: &Path,
    file_source: Option<&Path>,
    cache: Option<&cache::Cache>,
    p: &ArtifactProgress,
) -> Result<()> {
    let deadline = deadline(cfg);
    let mut tries = 0u32;
    loop {
        p.bytes.store(0, Ordering::Relaxed);
        p.entries.store(0, Ordering::Relaxed);
        let staging = Staging::new(task_dir)?;
        let fault = Fault::default();
        let tmp = match (cache, &plan.checksum) {
            (Some(c), Some(_)) => c.tmp(),
            _ => None,
        };
        let result = match &plan.source {
            Source::Http(url) => {
                let limits = http::Limits {
                    max_bytes: limit(cfg.http_max_bytes),
                    deadline,
                    timeout_ms: cfg.http_read_timeout_ms,
                };
                http::open(
                    url,
                    &spec.artifact.headers,
                    &limits,
                    p.bytes.clone(),
                    fault.clone(),
                )
                .and_then(|body| attempt(plan, cfg, &staging, body, tmp, fault, p))
            }
            Source::File(path) => {
                let real = file_source.expect("checked above");
                let (file, len) = open_file_source(real, path)?;
                let body = local_body(file, format!("file://{path}"), len, p, &fault);
                attempt(plan, cfg, &staging, body, tmp, fault, p)
                    .map_err(|f| Failure::fatal(f.error))
            }
        };
        match result {
            Ok(staged) => return commit(plan, task_dir, staged),
            Err(f) if f.retryable && tries < cfg.retries => {
                let delay = Duration::from_millis(200u64 << tries.min(6));
                if Instant::now() + delay >= deadline {
                    return Err(f.error);
                }
                tries += 1;
                drop(staging);
                std::thread::sleep(delay);
            }
            Err(f) => return Err(f.error),
        }
    }
}

/// When a fetch from the source gives up: `http_read_timeout_ms` from now, retries and
/// backoff included.
fn deadline(cfg: &ArtifactConfig) -> Instant {
    // 0 means no timeout.
    let now = Instant::now();
    Some(cfg.http_read_timeout_ms)
        .filter(|&ms| ms > 0)
        .and_then(|ms| now.checked_add(Duration::from_millis(ms)))
        .unwrap_or_else(|| now + Duration::from_secs(10 * 365 * 24 * 3600))
}

/// The body of a local file (a cache entry, a `file://` source) of `len` bytes, shown as
/// `what`: no byte limit or deadline of its own.
fn local_body(
    file: fs::File,
    what: String,
    len: u64,
    p: &ArtifactProgress,
    fault: &Fault,
) -> Body<fs::File> {
    Body {
        inner: file,
        what,
        read: 0,
        content_length: Some(len),
        max_bytes: None,
        deadline: None,
        bytes: p.bytes.clone(),
        fault: fault.clone(),
    }
}

/// Resolves a `file://` source, which must lie under one of `cfg.file_roots` once every
/// symlink is resolved. Checked before the cache is consulted, so a denied source is
/// denied whatever the cache holds.
fn check_file_source(path: &str, cfg: &ArtifactConfig, field: &str) -> Result<PathBuf> {
    let denied = || {
        Error::field(
            Code::ArtifactDenied,
            format!("{field}.source"),
            if cfg.file_roots.is_empty() {
                format!(
                    "file://{path}: file:// sources are not allowed (artifact.file_roots is empty)"
                )
            } else {
                format!("file://{path} is outside the directories allowed by artifact.file_roots")
            },
        )
    };
    let roots: Vec<PathBuf> = cfg
        .file_roots
        .iter()
        .filter_map(|r| fs::canonicalize(r).ok())
        .collect();
    let real = match fs::canonicalize(path) {
        Ok(real) => real,
        // Only say "not found" for paths that would be allowed.
        Err(e) => {
            let lexical = safe::dest_components(path).map(|c| c.iter().collect::<PathBuf>());
            let inside =
                lexical.is_ok_and(|l| roots.iter().any(|r| Path::new("/").join(&l).starts_with(r)));
            return Err(if inside {
                Error::field(
                    Code::ArtifactDownload,
                    format!("{field}.source"),
                    format!("file://{path}: {e}"),
                )
            } else {
                denied()
            });
        }
    };
    if !roots.iter().any(|root| real.starts_with(root)) {
        return Err(denied());
    }
    Ok(real)
}

fn open_file_source(real: &Path, shown: &str) -> Result<(fs::File, u64)> {
    let err = |e: io::Error| Error::new(Code::ArtifactDownload, format!("file://{shown}: {e}"));
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(real)
        .map_err(err)?;
    let m = file.metadata().map_err(err)?;
    if !m.is_file() {
        return Err(Error::new(
            Code::ArtifactDownload,
            format!("file://{shown} is not a regular file (directories are not supported)"),
        ));
    }
    Ok((file, m.len()))
}

/// A configured limit; 0 disables it (as in Nomad's artifact configuration).
fn limit(v: u64) -> u64 {
    if v == 0 { u64::MAX } else { v }
}

fn copy_big(r: &mut dyn Read, w: &mut dyn Write) -> io::Result<u64> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        w.write_all(&buf[..n])?;
        total += n as u64;
    }
}

/// One pass: a reader thread streams `raw` through the cache tee and the hasher
/// ([`pipe`]) while this thread decompresses and unpacks into the staging dir; then the
/// checksum is verified. Zip is spooled, verified, and only then opened.
fn attempt<R: Read + Send + 'static>(
    plan: &Plan,
    cfg: &ArtifactConfig,
    staging: &Staging,
    raw: Body<R>,
    tmp: Option<cache::TmpEntry>,
    fault: Fault,
    p: &ArtifactProgress,
) -> Result<Staged, Failure> {
    let what = raw.what.clone();
    let tee = cache::Tee { inner: raw, tmp };
    let hr = HashingReader::new(tee, plan.checksum.as_ref().map(|c| c.algo));
    let mut ctx = Ctx::new(
        limit(cfg.decompression_size_limit),
        limit(cfg.decompression_file_count_limit),
        &p.entries,
        fault.clone(),
    );
    let (tx, rx) = std::sync::mpsc::sync_channel(16);
    // Not scoped: after a refusal the reader may sit in a read until the timeout, and
    // nobody needs to wait for it (it stops at its next chunk and cleans up after itself).
    let pump = std::thread::Builder::new()
        .name("artifact-read".into())
        .spawn(move || pipe::pump(hr, tx))
        .map_err(|e| Failure::fatal(Error::internal(format!("starting the reader: {e}"))))?;
    let join = |pump: std::thread::JoinHandle<_>| match pump.join() {
        Ok(hr) => hr,
        Err(panic) => std::panic::resume_unwind(panic),
    };
    let mut input = pipe::Prefetched::new(rx);
    let result = stage(plan, &mut input, staging, &mut ctx, &fault).and_then(|st| {
        input
            .finish()
            .map(|_| st)
            .map_err(|e| Error::new(Code::ArtifactDownload, format!("{what}: {e}")))
    });
    drop(input);
    match result {
        Ok(staged) => {
            let mut hr = join(pump);
            verify(&mut hr, plan, &fault, &what)?;
            finish_cache(hr, plan);
            match staged {
                Staged::Spool(file) => {
                    let root = staging.path.join("root");
                    mkdir(&root)
                        .and_then(|_| archive::unpack_zip(file, &root, &mut ctx))
                        .map(|_| Staged::Dir(root))
                        .map_err(|e| fault_or(&fault, e))
                }
                other => Ok(other),
            }
        }
        Err(e) => {
            if let Some((fe, retryable)) = fault.take() {
                return Err(Failure {
                    error: fe,
                    retryable,
                });
            }
            // A corrupt download shows as a broken archive: say it is the checksum.
            if plan.checksum.is_some() && e.code == Code::ArtifactUnpack {
                let mut hr = join(pump);
                if let Err(VerifyError::Mismatch(ce)) = hr.verify(plan.checksum.as_ref(), &what) {
                    return Err(Failure::fatal(ce));
                }
            }
            Err(Failure::fatal(e))
        }
    }
}

/// Decompresses and unpacks `input` into the staging dir (a zip is only spooled).
fn stage(
    plan: &Plan,
    input: &mut dyn Read,
    staging: &Staging,
    ctx: &mut Ctx,
    fault: &Fault,
) -> Result<Staged> {
    match plan.kind {
        None => {
            let path = staging.path.join("file");
            let mut plain = Ctx::new(u64::MAX, u64::MAX, ctx.entries, fault.clone());
            archive::write_single(input, &path, &plan.file_name, &mut plain)
                .map(|_| Staged::File(path))
        }
        Some(k) if k.is_single() => {
            let path = staging.path.join("file");
            let mut dec = Limited {
                inner: archive::decoder(k, input),
                count: 0,
                max: ctx.max_bytes,
                fault: fault.clone(),
            };
            archive::write_single(&mut dec, &path, &plan.file_name, ctx).map(|_| Staged::File(path))
        }
        Some(Kind::Zip) => {
            let spool = staging.path.join("archive.zip");
            let mut f = fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&spool)
                .map_err(|e| Error::internal(format!("spooling zip: {e}")))?;
            copy_big(input, &mut f)
                .map_err(|e| Error::new(Code::ArtifactDownload, format!("spooling zip: {e}")))?;
            Ok(Staged::Spool(f))
        }
        Some(k) => {
            let root = staging.path.join("root");
            mkdir(&root)?;
            let mut dec = Limited {
                inner: archive::decoder(k, input),
                count: 0,
                max: ctx.max_bytes,
                fault: fault.clone(),
            };
            archive::unpack_tar(&mut dec, &root, ctx).map(|_| Staged::Dir(root))
        }
    }
}

fn fault_or(fault: &Fault, e: Error) -> Failure {
    match fault.take() {
        Some((fe, retryable)) => Failure {
            error: fe,
            retryable,
        },
        None => Failure::fatal(e),
    }
}

fn verify<R: Read>(
    hr: &mut HashingReader<R>,
    plan: &Plan,
    fault: &Fault,
    what: &str,
) -> Result<(), Failure> {
    match hr.verify(plan.checksum.as_ref(), what) {
        Ok(()) => Ok(()),
        Err(VerifyError::Mismatch(e)) => Err(Failure::fatal(e)),
        Err(VerifyError::Io(e)) => Err(fault_or(
            fault,
            Error::new(Code::ArtifactDownload, format!("{what}: {e}")),
        )),
    }
}

/// Publishes the tee'd bytes to the cache: only called after the checksum verified.
fn finish_cache<R: Read>(mut hr: HashingReader<cache::Tee<R>>, plan: &Plan) {
    if let (Some(tmp), Some(ck)) = (hr.get_mut().tmp.take(), &plan.checksum)
        && let Some(dir) = tmp
            .path()
            .parent()
            .and_then(|d| d.to_str())
            .map(str::to_string)
        && let Some(c) = cache::Cache::open(&dir)
    {
        c.commit(tmp, ck);
    }
}
