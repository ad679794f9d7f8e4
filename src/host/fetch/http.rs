//! HTTP(S) downloads with minreq, closing the gaps minreq leaves to its callers:
//! redirects are followed here (at most [`MAX_REDIRECTS`], never https→http; custom
//! headers, `Authorization` and userinfo only to the first host and port, see
//! [`Url::same_origin`]), a body shorter than its Content-Length is an error, the
//! byte limit holds with or without a Content-Length, and a deadline bounds the whole
//! download. Retries are the caller's (a retry restarts the whole pipeline).

use super::Fault;
use super::source::Url;
use crate::error::{Code, Error};
use std::collections::BTreeMap;
use std::io::{self, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

pub const MAX_REDIRECTS: usize = 10;

/// Why an attempt failed, and whether another attempt may succeed.
#[derive(Debug)]
pub struct Failure {
    pub error: Error,
    pub retryable: bool,
}

impl Failure {
    pub fn fatal(error: Error) -> Failure {
        Failure {
            error,
            retryable: false,
        }
    }
}

fn download_err(msg: String) -> Error {
    Error::new(Code::ArtifactDownload, msg)
}

/// Checks header names and values so nothing can be smuggled into the request;
/// the message never shows a value.
pub fn validate_headers(headers: &BTreeMap<String, String>, field: &str) -> crate::Result<()> {
    for (k, v) in headers {
        let name_ok = !k.is_empty()
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !name_ok {
            return Err(Error::field(
                Code::InvalidConfig,
                format!("{field}.headers"),
                format!("{field}.headers: \"{k}\" is not a valid HTTP header name"),
            ));
        }
        if v.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            return Err(Error::field(
                Code::InvalidConfig,
                format!("{field}.headers.{k}"),
                format!("{field}.headers.{k}: the value must not contain line breaks or NUL"),
            ));
        }
    }
    Ok(())
}

fn base64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for c in input.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn header<'a>(resp: &'a minreq::ResponseLazy, name: &str) -> Option<&'a str> {
    resp.headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// What the body reader enforces.
pub struct Limits {
    pub max_bytes: u64,
    pub deadline: Instant,
    pub timeout_ms: u64,
}

/// Sends GET for `start`, following redirects, and returns the body of the final 2xx
/// response.
pub fn open(
    start: &Url,
    headers: &BTreeMap<String, String>,
    limits: &Limits,
    bytes: Arc<AtomicU64>,
    fault: Fault,
) -> Result<Body<minreq::ResponseLazy>, Failure> {
    let mut url = start.clone();
    let mut redirects = 0usize;
    loop {
        let remaining = limits.deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(Failure::fatal(timeout_error(limits, start)));
        }
        let secs = remaining.as_millis().div_ceil(1000).max(1) as u64;
        let resp = send(request(start, &url, headers, secs), limits, &url)?;
        let status = resp.status_code;
        match status {
            301 | 302 | 303 | 307 | 308 => {
                redirects += 1;
                if redirects > MAX_REDIRECTS {
                    return Err(Failure::fatal(download_err(format!(
                        "GET {}: too many redirects (more than {MAX_REDIRECTS})",
                        start.redacted()
                    ))));
                }
                url = redirect_target(&url, status, header(&resp, "location"))
                    .map_err(Failure::fatal)?;
            }
            200..=299 => return body(resp, &url, limits, bytes, fault),
            _ => return Err(status_failure(&resp, &url, status)),
        }
    }
}

/// The GET of `url`, a step of the redirects from `start`: custom headers, `Authorization`
/// and userinfo only to the origin of `start`.
fn request(
    start: &Url,
    url: &Url,
    headers: &BTreeMap<String, String>,
    secs: u64,
) -> minreq::Request {
    let mut req = minreq::get(url.request_string())
        .with_follow_redirects(false)
        .with_timeout(secs)
        .with_max_headers_size(64 * 1024);
    if !headers.keys().any(|k| k.eq_ignore_ascii_case("user-agent")) {
        req = req.with_header(
            "User-Agent",
            concat!("execdriver/", env!("CARGO_PKG_VERSION")),
        );
    }
    if start.same_origin(url) {
        let userinfo = url.userinfo.as_ref().or(start.userinfo.as_ref());
        if let Some(ui) = userinfo {
            req = req.with_header("Authorization", format!("Basic {}", base64(ui.as_bytes())));
        }
        for (k, v) in headers {
            req = req.with_header(k.as_str(), v.as_str());
        }
    }
    req
}

/// Sends `req` (the GET of `url`): an I/O error other than a timeout is retryable.
fn send(req: minreq::Request, limits: &Limits, url: &Url) -> Result<minreq::ResponseLazy, Failure> {
    req.send_lazy().map_err(|e| {
        let retryable = matches!(e, minreq::Error::IoError(_));
        let msg = match &e {
            minreq::Error::IoError(io) if io.kind() == io::ErrorKind::TimedOut => {
                return Failure::fatal(timeout_error(limits, url));
            }
            minreq::Error::IoError(io) => io.to_string(),
            other => other.to_string(),
        };
        Failure {
            error: download_err(format!("GET {}: {msg}", url.redacted())),
            retryable,
        }
    })
}

/// The body of the 2xx response `resp`, once its Content-Length (unless chunked) is
/// checked: valid, and within the download limit.
fn body(
    resp: minreq::ResponseLazy,
    url: &Url,
    limits: &Limits,
    bytes: Arc<AtomicU64>,
    fault: Fault,
) -> Result<Body<minreq::ResponseLazy>, Failure> {
    let chunked = header(&resp, "transfer-encoding")
        .is_some_and(|t| t.to_ascii_lowercase().contains("chunked"));
    let content_length = if chunked {
        None
    } else {
        match header(&resp, "content-length") {
            Some(v) => Some(v.trim().parse::<u64>().map_err(|_| {
                Failure::fatal(download_err(format!(
                    "GET {}: invalid Content-Length header",
                    url.redacted()
                )))
            })?),
            None => None,
        }
    };
    if let Some(n) = content_length.filter(|&n| n > limits.max_bytes) {
        return Err(Failure::fatal(Error::new(
            Code::ArtifactLimit,
            format!(
                "GET {}: Content-Length {n} exceeds the download limit of {} bytes (artifact.http_max_bytes)",
                url.redacted(),
                limits.max_bytes
            ),
        )));
    }
    Ok(Body {
        inner: resp,
        what: url.redacted(),
        read: 0,
        content_length,
        max_bytes: Some(limits.max_bytes),
        deadline: Some((limits.deadline, limits.timeout_ms)),
        bytes,
        fault,
    })
}

/// The failure of a response that is neither a redirect nor a success: a 5xx is
/// retryable. The reason phrase is shown cut short and without control characters.
fn status_failure(resp: &minreq::ResponseLazy, url: &Url, status: u16) -> Failure {
    let reason: String = resp
        .reason_phrase
        .chars()
        .filter(|c| !c.is_control())
        .take(64)
        .collect();
    let error = download_err(format!(
        "GET {}: HTTP {status} {}",
        url.redacted(),
        reason.trim()
    ));
    Failure {
        error,
        retryable: (500..=599).contains(&status),
    }
}

/// Where a redirect from `url` leads, or why it is not followed (no Location, a
/// location that is not http(s), or a step down from https to http).
pub fn redirect_target(url: &Url, status: u16, location: Option<&str>) -> Result<Url, Error> {
    let Some(loc) = location else {
        return Err(download_err(format!(
            "GET {}: HTTP {status} redirect without a Location header",
            url.redacted()
        )));
    };
    let Some(next) = url.join(loc) else {
        return Err(download_err(format!(
            "GET {}: HTTP {status} redirect to an unsupported location {}",
            url.redacted(),
            super::redact_url(loc)
        )));
    };
    if url.https && !next.https {
        return Err(download_err(format!(
            "GET {}: refusing redirect from https to http ({})",
            url.redacted(),
            next.redacted()
        )));
    }
    Ok(next)
}

fn timeout_error(limits: &Limits, url: &Url) -> Error {
    download_err(format!(
        "GET {}: timed out after {} ms (artifact.http_read_timeout_ms)",
        url.redacted(),
        limits.timeout_ms
    ))
}

/// A download body: counts bytes into the progress, enforces the byte limit, the
/// deadline and the Content-Length. Its errors are also recorded in the shared
/// [`Fault`] so that they are reported as they are, whatever wraps them.
pub struct Body<R> {
    pub inner: R,
    pub what: String,
    pub read: u64,
    pub content_length: Option<u64>,
    pub max_bytes: Option<u64>,
    pub deadline: Option<(Instant, u64)>,
    pub bytes: Arc<AtomicU64>,
    pub fault: Fault,
}

impl<R: Read> Body<R> {
    fn fail(&self, error: Error, retryable: bool) -> io::Error {
        let msg = error.message.clone();
        self.fault.set(error, retryable);
        io::Error::other(msg)
    }
}

impl<R: Read> Read for Body<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some((deadline, ms)) = self.deadline
            && Instant::now() >= deadline
        {
            return Err(self.fail(
                download_err(format!(
                    "GET {}: timed out after {ms} ms (artifact.http_read_timeout_ms)",
                    self.what
                )),
                false,
            ));
        }
        let n = match self.inner.read(buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Err(e),
            Err(e) => {
                let timed_out = e.kind() == io::ErrorKind::TimedOut;
                let msg = if timed_out {
                    format!(
                        "reading {}: timed out (artifact.http_read_timeout_ms)",
                        self.what
                    )
                } else {
                    format!("reading {} after {} bytes: {e}", self.what, self.read)
                };
                return Err(self.fail(download_err(msg), !timed_out));
            }
        };
        self.read += n as u64;
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
        if let Some(max) = self.max_bytes
            && self.read > max
        {
            return Err(self.fail(
                Error::new(
                    Code::ArtifactLimit,
                    format!(
                        "{}: download exceeds the limit of {max} bytes (artifact.http_max_bytes)",
                        self.what
                    ),
                ),
                false,
            ));
        }
        if n == 0
            && !buf.is_empty()
            && let Some(cl) = self.content_length
            && self.read < cl
        {
            return Err(self.fail(
                download_err(format!(
                    "{}: body ended after {} of {cl} bytes (Content-Length)",
                    self.what, self.read
                )),
                true,
            ));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_policy() {
        let https = Url::parse("https://a.example/x/y.tgz").unwrap();
        let e = redirect_target(&https, 302, Some("http://a.example/y.tgz")).unwrap_err();
        assert_eq!(e.code, Code::ArtifactDownload);
        assert!(e.message.contains("https to http"), "{e}");
        assert!(
            redirect_target(&https, 302, Some("//b.example/z"))
                .unwrap()
                .https
        );
        assert_eq!(
            redirect_target(&https, 301, Some("z.tgz"))
                .unwrap()
                .request_string(),
            "https://a.example/x/z.tgz"
        );
        let http = Url::parse("http://a.example/x").unwrap();
        assert!(
            redirect_target(&http, 302, Some("https://b.example/"))
                .unwrap()
                .https
        );
        assert!(redirect_target(&http, 302, None).is_err());
        assert!(redirect_target(&http, 302, Some("ftp://h/x")).is_err());
    }

    #[test]
    fn base64_encodes() {
        assert_eq!(base64(b"user:pass"), "dXNlcjpwYXNz");
        assert_eq!(base64(b"a"), "YQ==");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b""), "");
    }

    #[test]
    fn header_validation() {
        let mut h = BTreeMap::new();
        h.insert("X-Ok".to_string(), "v".to_string());
        assert!(validate_headers(&h, "a").is_ok());
        h.insert("Bad Name".to_string(), "v".to_string());
        assert!(validate_headers(&h, "a").is_err());
        let mut h = BTreeMap::new();
        h.insert("X".to_string(), "secret\r\nEvil: 1".to_string());
        let e = validate_headers(&h, "a").unwrap_err();
        assert!(!e.message.contains("secret"));
    }
}
