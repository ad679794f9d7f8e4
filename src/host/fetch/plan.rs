//! Everything decided about an artifact before any byte moves: the parsed source, the
//! merged options, the checksum, the archive kind, the destination and the file name.

use super::archive::Kind;
use super::checksum::Checksum;
use super::source::{self, Source};
use super::{FetchSpec, http, safe};
use crate::config::ArtifactMode;
use crate::error::{Code, Error, Result};
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
        // Options given beside the source win over the query; unknown ones go to the
        // server as query parameters (as go-getter does with Nomad's options).
        let mut opts = parsed.query_options.clone();
        for (k, v) in &a.options {
            if source::GETTER_OPTIONS.contains(&k.as_str()) {
                opts.insert(k.clone(), v.clone());
            } else if let Source::Http(u) = &mut parsed.source {
                let pair = format!("{}={}", percent_encode(k), percent_encode(v));
                u.query = Some(match u.query.take() {
                    Some(q) => format!("{q}&{pair}"),
                    None => pair,
                });
            }
        }
        http::validate_headers(&a.headers, f)?;
        let checksum_field = if a.options.contains_key("checksum") {
            if f == "config.artifact_source" {
                "config.checksum".to_string()
            } else {
                format!("{f}.options.checksum")
            }
        } else {
            format!("{f}.source")
        };
        let checksum = match opts
            .get("checksum")
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
        {
            Some(c) => Some(Checksum::parse(c, &checksum_field)?),
            None => None,
        };
        let path = match &parsed.source {
            Source::Http(u) => source::percent_decode(&u.path),
            Source::File(p) => p.clone(),
        };
        let (kind, suffix) = match opts.get("archive").map(|s| s.trim()) {
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
                    Kind::detect(&path).filter(|d| d.0 == k).map(|d| d.1),
                )
            }
            _ => match Kind::detect(&path) {
                Some((k, s)) => (Some(k), Some(s)),
                None => (None, None),
            },
        };
        if a.mode == ArtifactMode::Dir && kind.is_none_or(|k| k.is_single()) {
            return Err(invalid(
                format!("{f}.mode"),
                format!(
                    "{f}.mode is \"dir\" but the source is not a tar or zip archive (set options.archive or use mode \"any\" or \"file\")"
                ),
            ));
        }
        let dest_raw = a.destination.clone().unwrap_or_else(|| "local/".into());
        let dest = safe::dest_components(&dest_raw).map_err(|why| {
            Error::field(
                Code::ArtifactDenied,
                format!("{f}.destination"),
                format!(
                    "{f}.destination {dest_raw:?} {why}: it must stay inside the task directory"
                ),
            )
        })?;
        if a.mode == ArtifactMode::File && dest.is_empty() {
            return Err(invalid(
                format!("{f}.destination"),
                format!("{f}.destination must name a file when mode is \"file\""),
            ));
        }
        let file_name = match opts.get("filename").filter(|s| !s.is_empty()) {
            Some(n) => {
                if n.contains('/') || n == "." || n == ".." || n.contains('\0') {
                    return Err(invalid(
                        format!("{f}.options.filename"),
                        format!("{f}.options.filename must be a plain file name, without '/'"),
                    ));
                }
                n.clone()
            }
            None => {
                let base = path.rsplit('/').next().unwrap_or("").to_string();
                let base = match (kind, suffix) {
                    (Some(k), Some(s)) if k.is_single() => {
                        base[..base.len() - s.len() - 1].to_string()
                    }
                    _ => base,
                };
                if (base.is_empty() || base == "." || base == "..")
                    && kind.is_none_or(|k| k.is_single())
                    && a.mode != ArtifactMode::File
                {
                    return Err(invalid(
                        format!("{f}.source"),
                        format!(
                            "{f}: cannot derive a file name from the source path; set options.filename"
                        ),
                    ));
                }
                base
            }
        };
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
