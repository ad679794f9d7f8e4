//! Parsing of artifact sources: the scheme (and go-getter's forced getters), the
//! go-getter query options (`checksum`, `archive`, `filename`) that are stripped before
//! the request, a minimal URL model for HTTP (host comparison on redirects, userinfo),
//! and redaction for messages and progress.

use crate::error::{Code, Error, Result};
use std::collections::BTreeMap;

/// The go-getter options that live in the query string and never reach the server.
pub const GETTER_OPTIONS: [&str; 3] = ["checksum", "archive", "filename"];

/// A parsed artifact source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Http(Url),
    /// Absolute host path of a `file://` source (not yet checked against the roots).
    File(String),
}

/// A parsed source plus the options taken out of its query string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedSource {
    pub source: Source,
    pub query_options: BTreeMap<String, String>,
}

/// A minimal absolute http(s) URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub https: bool,
    /// `user[:password]`, percent-decoded.
    pub userinfo: Option<String>,
    /// Host as written (brackets kept for IPv6 literals), lower-cased.
    pub host: String,
    pub port: Option<u16>,
    /// Path, starting with `/`.
    pub path: String,
    /// Raw query without the `?`, `None` when absent or empty.
    pub query: Option<String>,
}

impl Url {
    pub fn parse(s: &str) -> Option<Url> {
        let (https, rest) = if let Some(r) = strip_prefix_ci(s, "https://") {
            (true, r)
        } else if let Some(r) = strip_prefix_ci(s, "http://") {
            (false, r)
        } else {
            return None;
        };
        let rest = rest.split('#').next().unwrap_or("");
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        let (userinfo, hostport) = match authority.rfind('@') {
            Some(i) => (Some(percent_decode(&authority[..i])), &authority[i + 1..]),
            None => (None, authority),
        };
        let (host, port) = split_host_port(hostport)?;
        if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c.is_control()) {
            return None;
        }
        let (path, query) = match tail.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (tail, None),
        };
        let path = if path.is_empty() {
            "/".to_string()
        } else {
            path.to_string()
        };
        let query = query.filter(|q| !q.is_empty()).map(str::to_string);
        Some(Url {
            https,
            userinfo,
            host: host.to_ascii_lowercase(),
            port,
            path,
            query,
        })
    }

    pub fn effective_port(&self) -> u16 {
        self.port.unwrap_or(if self.https { 443 } else { 80 })
    }

    /// Whether headers meant for `self` may go to `other`: the same host and port, or
    /// the same host upgraded from http to https on the default ports. (A step down
    /// from https to http is refused before this is asked.)
    pub fn same_origin(&self, other: &Url) -> bool {
        self.host == other.host
            && (self.effective_port() == other.effective_port()
                || (self.port.is_none() && other.port.is_none() && !self.https && other.https))
    }

    /// The URL as sent (no userinfo).
    pub fn request_string(&self) -> String {
        let mut s = format!(
            "{}://{}",
            if self.https { "https" } else { "http" },
            self.host
        );
        if let Some(p) = self.port {
            s.push_str(&format!(":{p}"));
        }
        s.push_str(&self.path);
        if let Some(q) = &self.query {
            s.push('?');
            s.push_str(q);
        }
        s
    }

    /// The URL for messages: no userinfo, query values replaced.
    pub fn redacted(&self) -> String {
        redact_url(&self.request_string())
    }

    /// Resolves a `Location` header against this URL.
    pub fn join(&self, location: &str) -> Option<Url> {
        let location = location.trim();
        if location.contains("://") {
            return Url::parse(location);
        }
        let scheme = if self.https { "https:" } else { "http:" };
        if location.starts_with("//") {
            return Url::parse(&format!("{scheme}{location}"));
        }
        let mut base = format!("{scheme}//{}", self.host);
        if let Some(p) = self.port {
            base.push_str(&format!(":{p}"));
        }
        if location.starts_with('/') {
            return Url::parse(&format!("{base}{location}"));
        }
        if let Some(q) = location.strip_prefix('?') {
            return Url::parse(&format!("{base}{}?{q}", self.path));
        }
        let dir = &self.path[..self.path.rfind('/').map(|i| i + 1).unwrap_or(0)];
        let dir = if dir.is_empty() { "/" } else { dir };
        Url::parse(&format!("{base}{dir}{location}"))
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    if s.len() >= prefix.len()
        && s.is_char_boundary(prefix.len())
        && s[..prefix.len()].eq_ignore_ascii_case(prefix)
    {
        Some(&s[prefix.len()..])
    } else {
        None
    }
}

fn split_host_port(hostport: &str) -> Option<(&str, Option<u16>)> {
    if hostport.starts_with('[') {
        let close = hostport.find(']')?;
        let host = &hostport[..=close];
        let rest = &hostport[close + 1..];
        return match rest.strip_prefix(':') {
            Some(p) if !p.is_empty() => Some((host, Some(p.parse().ok()?))),
            Some(_) => Some((host, None)),
            None if rest.is_empty() => Some((host, None)),
            None => None,
        };
    }
    match hostport.rsplit_once(':') {
        Some((h, "")) => Some((h, None)),
        Some((h, p)) => Some((h, Some(p.parse().ok()?))),
        None => Some((hostport, None)),
    }
}

/// Decodes `%XX` escapes and, when `plus` is set, `+` as a space (query strings).
pub fn percent_decode_with(s: &str, plus: bool) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' && plus { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn percent_decode(s: &str) -> String {
    percent_decode_with(s, false)
}

/// Splits a raw query into the go-getter options (decoded) and the rest (kept raw).
pub fn split_query(query: &str) -> (BTreeMap<String, String>, Option<String>) {
    let mut opts = BTreeMap::new();
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent_decode_with(k, true);
        if GETTER_OPTIONS.contains(&key.as_str()) {
            opts.insert(key, percent_decode_with(v, true));
        } else {
            rest.push(pair);
        }
    }
    let rest = if rest.is_empty() {
        None
    } else {
        Some(rest.join("&"))
    };
    (opts, rest)
}

/// A source shown to people: without userinfo, every query value replaced by
/// `redacted` except the go-getter options `archive`, `filename` and `checksum`
/// (which are not secrets). Unparseable input is cut at the first `?` and `@`.
pub fn redact_url(url: &str) -> String {
    let (prefix, rest) = match url.find("://") {
        Some(i) => (&url[..i + 3], &url[i + 3..]),
        None => ("", url),
    };
    let rest = rest.split('#').next().unwrap_or("");
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let authority = match authority.rfind('@') {
        Some(i) => &authority[i + 1..],
        None => authority,
    };
    let (path, query) = match tail.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (tail, None),
    };
    let mut out = format!("{prefix}{authority}{path}");
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        let parts: Vec<String> = q
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                let key = percent_decode_with(k, true);
                if GETTER_OPTIONS.contains(&key.as_str()) || v.is_empty() {
                    pair.to_string()
                } else {
                    format!("{k}=redacted")
                }
            })
            .collect();
        out.push('?');
        out.push_str(&parts.join("&"));
    }
    out
}

fn unsupported(field: &str, scheme: &str, source: &str) -> Error {
    Error::field(
        Code::ArtifactDownload,
        format!("{field}.source"),
        format!(
            "{field}: unsupported artifact source scheme \"{scheme}\" in {}: only http://, https:// and file:// are supported",
            redact_url(source)
        ),
    )
}

/// Parses a source (already interpolated). `field` is the JSON path of the artifact.
pub fn parse_source(source: &str, field: &str) -> Result<ParsedSource> {
    let s = source.trim();
    if s.is_empty() {
        return Err(Error::field(
            Code::InvalidConfig,
            format!("{field}.source"),
            format!("{field}.source is required"),
        ));
    }
    let s = strip_forced_getter(s, field, source)?;
    if s.starts_with("git@") {
        return Err(unsupported(field, "git", source));
    }
    let Some(colon) = s.find("://") else {
        return Err(Error::field(
            Code::ArtifactDownload,
            format!("{field}.source"),
            format!(
                "{field}: unsupported artifact source {}: it has no scheme; only http://, https:// and file:// are supported",
                redact_url(source)
            ),
        ));
    };
    let scheme = s[..colon].to_ascii_lowercase();
    let after = &s[colon + 3..];
    let (before_q, query) = match after.split_once('?') {
        Some((a, q)) => (a, Some(q)),
        None => (after, None),
    };
    let (query_options, rest_query) = query.map(split_query).unwrap_or_default();
    let parsed = match scheme.as_str() {
        "http" | "https" => {
            let rebuilt = match &rest_query {
                Some(q) => format!("{scheme}://{before_q}?{q}"),
                None => format!("{scheme}://{before_q}"),
            };
            let url = Url::parse(&rebuilt).ok_or_else(|| {
                Error::field(
                    Code::InvalidConfig,
                    format!("{field}.source"),
                    format!("{field}.source is not a valid URL: {}", redact_url(source)),
                )
            })?;
            Source::Http(url)
        }
        "file" => Source::File(file_path(before_q, field)?),
        other => return Err(unsupported(field, other, source)),
    };
    Ok(ParsedSource {
        source: parsed,
        query_options,
    })
}

/// `s` without a go-getter forced getter (`git::https://…`, `s3::…`): only http, https
/// and file are supported (`source` is the whole source, for the error).
fn strip_forced_getter<'a>(s: &'a str, field: &str, source: &str) -> Result<&'a str> {
    if let Some(i) = s.find("::") {
        let forced = &s[..i];
        if !forced.is_empty() && forced.chars().all(|c| c.is_ascii_alphanumeric()) {
            match forced.to_ascii_lowercase().as_str() {
                "http" | "https" | "file" => return Ok(&s[i + 2..]),
                other => return Err(unsupported(field, other, source)),
            }
        }
    }
    Ok(s)
}

/// The local path of a `file://` source (`rest`: after the scheme, without the query):
/// `file:///abs/path` or `file://localhost/abs/path`, percent-decoded.
fn file_path(rest: &str, field: &str) -> Result<String> {
    let rest = rest.split('#').next().unwrap_or("");
    let path = if let Some(p) = rest.strip_prefix("localhost/") {
        format!("/{p}")
    } else if rest.starts_with('/') {
        rest.to_string()
    } else {
        return Err(Error::field(
            Code::ArtifactDenied,
            format!("{field}.source"),
            format!("{field}: file:// sources must name an absolute local path (file:///path)"),
        ));
    };
    Ok(percent_decode(&path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_strips_options() {
        let p = parse_source(
            "https://u:pw@Example.com:8443/a/b.tgz?x=1&checksum=sha256%3Aab&archive=tar.gz&y=2",
            "artifacts[0]",
        )
        .unwrap();
        let Source::Http(u) = p.source else { panic!() };
        assert_eq!(u.host, "example.com");
        assert_eq!(u.port, Some(8443));
        assert_eq!(u.userinfo.as_deref(), Some("u:pw"));
        assert_eq!(u.path, "/a/b.tgz");
        assert_eq!(u.query.as_deref(), Some("x=1&y=2"));
        assert_eq!(p.query_options["checksum"], "sha256:ab");
        assert_eq!(p.query_options["archive"], "tar.gz");
        assert_eq!(
            u.request_string(),
            "https://example.com:8443/a/b.tgz?x=1&y=2"
        );
    }

    #[test]
    fn redacts() {
        assert_eq!(
            redact_url("https://user:secret@h/p?token=abc&archive=zip&k"),
            "https://h/p?token=redacted&archive=zip&k"
        );
        assert_eq!(redact_url("http://h:1/x"), "http://h:1/x");
    }

    #[test]
    fn unsupported_schemes_are_named() {
        for (src, scheme) in [
            ("git::https://github.com/x/y", "git"),
            ("s3::https://s3.amazonaws.com/b/k", "s3"),
            ("gcs::https://www.googleapis.com/storage/v1/b/k", "gcs"),
            ("hg::http://h/r", "hg"),
            ("git@github.com:x/y.git", "git"),
            ("s3://bucket/key", "s3"),
            ("ftp://h/x", "ftp"),
        ] {
            let e = parse_source(src, "artifacts[0]").unwrap_err();
            assert_eq!(e.code, Code::ArtifactDownload, "{src}");
            assert!(e.message.contains("unsupported"), "{e}");
            assert!(e.message.contains(&format!("\"{scheme}\"")), "{e}");
        }
        let e = parse_source("github.com/x/y", "a").unwrap_err();
        assert!(e.message.contains("unsupported"));
    }

    #[test]
    fn joins_locations() {
        let u = Url::parse("http://h:8/a/b?q").unwrap();
        assert_eq!(u.join("c").unwrap().request_string(), "http://h:8/a/c");
        assert_eq!(u.join("/c?d").unwrap().request_string(), "http://h:8/c?d");
        assert_eq!(u.join("//o/x").unwrap().request_string(), "http://o/x");
        assert_eq!(
            u.join("https://o:9/x").unwrap().request_string(),
            "https://o:9/x"
        );
        assert!(u.same_origin(&Url::parse("http://H:8/zz").unwrap()));
        assert!(!u.same_origin(&Url::parse("http://h:9/").unwrap()));
        let plain = Url::parse("http://h/x").unwrap();
        assert!(plain.same_origin(&Url::parse("https://h/y").unwrap()));
        assert!(!plain.same_origin(&Url::parse("https://other/y").unwrap()));
        assert!(!plain.same_origin(&Url::parse("https://h:8443/y").unwrap()));
        assert_eq!(Url::parse("http://[::1]:80/").unwrap().host, "[::1]");
    }

    #[test]
    fn file_sources() {
        let p = parse_source("file:///srv/a%20b.tgz?archive=tar.gz", "a").unwrap();
        assert_eq!(p.source, Source::File("/srv/a b.tgz".into()));
        assert_eq!(p.query_options["archive"], "tar.gz");
        assert_eq!(
            parse_source("file://rel/x", "a").unwrap_err().code,
            Code::ArtifactDenied
        );
    }
}
