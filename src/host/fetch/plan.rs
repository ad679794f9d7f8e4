//! Everything decided about an artifact before any byte moves: the parsed source, the
//! merged options, the checksum, the archive kind, the destination and the file name.

use super::archive::Kind;
use super::checksum::Checksum;
use super::source::{self, Source};
use super::{FetchSpec, http, safe};
use crate::config::{Artifact, ArtifactMode};
use crate::error::{Code, Error, Result};
use std::collections::BTreeMap;
use std::ffi::OsString;

/// Everything decided before any byte moves.
pub(super) struct Plan {
    pub(super) field: String,
    pub(super) source: Source,
    pub(super) checksum: Option<Checksum>,
    pub(super) kind: Option<Kind>,
    pub(super) mode: ArtifactMode,
    pub(super) dest: Vec<OsString>,
    pub(super) file_name: String,
    pub(super) executable: bool,
}

fn invalid(field: String, msg: String) -> Error {
    Error::field(Code::InvalidConfig, field, msg)
}

fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Plan {
    pub(super) fn new(spec: &FetchSpec) -> Result<Plan> {
        let f = &spec.field;
        let a = &spec.artifact;
        let mut parsed = source::parse_source(&a.source, f)?;
        let opts = merge_options(&mut parsed.source, parsed.query_options.clone(), a);
        http::validate_headers(&a.headers, f)?;
        let checksum = checksum(&opts, a, f)?;
        let path = match &parsed.source {
            Source::Http(u) => source::percent_decode(&u.path),
            Source::File(p) => p.clone(),
        };
        let (kind, suffix) = archive_kind(&opts, &path, f)?;
        if a.mode == ArtifactMode::Dir && kind.is_none_or(|k| k.is_single()) {
            return Err(invalid(
                format!("{f}.mode"),
                format!(
                    "{f}.mode is \"dir\" but the source is not a tar or zip archive (set options.archive or use mode \"any\" or \"file\")"
                ),
            ));
        }
        let dest = destination(a, f)?;
        let file_name = file_name(&opts, &path, (kind, suffix), a.mode, f)?;
        Ok(Plan {
            field: f.clone(),
            source: parsed.source,
            checksum,
            kind,
            mode: a.mode,
            dest,
            file_name,
            executable: spec.executable,
        })
    }
}

/// The getter options: those of the source's query (`opts`) and those given beside the
/// source, which win; unknown ones go to the server as query parameters (as go-getter does
/// with Nomad's options).
fn merge_options(
    source: &mut Source,
    mut opts: BTreeMap<String, String>,
    a: &Artifact,
) -> BTreeMap<String, String> {
    for (k, v) in &a.options {
        if source::GETTER_OPTIONS.contains(&k.as_str()) {
            opts.insert(k.clone(), v.clone());
        } else if let Source::Http(u) = source {
            let pair = format!("{}={}", percent_encode(k), percent_encode(v));
            u.query = Some(match u.query.take() {
                Some(q) => format!("{q}&{pair}"),
                None => pair,
            });
        }
    }
    opts
}

/// The `checksum` option, its errors on the field it was given in.
fn checksum(opts: &BTreeMap<String, String>, a: &Artifact, f: &str) -> Result<Option<Checksum>> {
    let checksum_field = if a.options.contains_key("checksum") {
        if f == "config.artifact_source" {
            "config.checksum".to_string()
        } else {
            format!("{f}.options.checksum")
        }
    } else {
        format!("{f}.source")
    };
    match opts
        .get("checksum")
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
    {
        Some(c) => Ok(Some(Checksum::parse(c, &checksum_field)?)),
        None => Ok(None),
    }
}

/// The archive kind (the `archive` option, else detected from `path`) and the suffix of
/// `path` that names it, if any.
fn archive_kind(
    opts: &BTreeMap<String, String>,
    path: &str,
    f: &str,
) -> Result<(Option<Kind>, Option<&'static str>)> {
    Ok(match opts.get("archive").map(|s| s.trim()) {
        Some("false") => (None, None),
        Some(v) if !v.is_empty() && v != "true" => {
            let k = Kind::from_name(v).ok_or_else(|| {
                invalid(
                    format!("{f}.options.archive"),
                    format!("{f}.options.archive: unknown archive type {v:?}; use tar, tar.gz, tgz, gz, zip, tar.bz2, tar.xz, tar.zst or \"false\""),
                )
            })?;
            (
                Some(k),
                Kind::detect(path).filter(|d| d.0 == k).map(|d| d.1),
            )
        }
        _ => match Kind::detect(path) {
            Some((k, s)) => (Some(k), Some(s)),
            None => (None, None),
        },
    })
}

/// The destination's components, which must stay inside the task dir (and name a file in
/// mode `file`).
fn destination(a: &Artifact, f: &str) -> Result<Vec<OsString>> {
    let dest_raw = a.destination.clone().unwrap_or_else(|| "local/".into());
    let dest = safe::dest_components(&dest_raw).map_err(|why| {
        Error::field(
            Code::ArtifactDenied,
            format!("{f}.destination"),
            format!("{f}.destination {dest_raw:?} {why}: it must stay inside the task directory"),
        )
    })?;
    if a.mode == ArtifactMode::File && dest.is_empty() {
        return Err(invalid(
            format!("{f}.destination"),
            format!("{f}.destination must name a file when mode is \"file\""),
        ));
    }
    Ok(dest)
}

/// The file name of a file artifact: the `filename` option, else the last component of
/// `path` without the suffix of a single-file compression.
fn file_name(
    opts: &BTreeMap<String, String>,
    path: &str,
    (kind, suffix): (Option<Kind>, Option<&str>),
    mode: ArtifactMode,
    f: &str,
) -> Result<String> {
    if let Some(n) = opts.get("filename").filter(|s| !s.is_empty()) {
        if n.contains('/') || n == "." || n == ".." || n.contains('\0') {
            return Err(invalid(
                format!("{f}.options.filename"),
                format!("{f}.options.filename must be a plain file name, without '/'"),
            ));
        }
        return Ok(n.clone());
    }
    let base = path.rsplit('/').next().unwrap_or("").to_string();
    let base = match (kind, suffix) {
        (Some(k), Some(s)) if k.is_single() => base[..base.len() - s.len() - 1].to_string(),
        _ => base,
    };
    if (base.is_empty() || base == "." || base == "..")
        && kind.is_none_or(|k| k.is_single())
        && mode != ArtifactMode::File
    {
        return Err(invalid(
            format!("{f}.source"),
            format!("{f}: cannot derive a file name from the source path; set options.filename"),
        ));
    }
    Ok(base)
}
