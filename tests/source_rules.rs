//! Rules of the source tree that no compiler checks (see docs/design.md): the pool's
//! vocabulary stays in the pool and the launcher, and comments say why the code is as it
//! is, not what it was.

use std::path::{Path, PathBuf};

/// The pool's words: only the host's pool and the supervisor's launcher know about
/// supervisors started ahead.
const POOL_WORDS: &[&str] = &["spare", "spares", "standby", "mother", "recycle", "warm"];

/// Where [`POOL_WORDS`] may appear (relative to `src/`; a directory covers what is below).
const POOL_FILES: &[&str] = &["host/pool.rs", "supervisor/launcher/"];

/// Phrases that narrate history in a comment. Each is a phrase, not a single word ("was",
/// "now" have present-tense uses everywhere).
const HISTORY: &[&str] = &["used to", "no longer", "this session", "previously"];

/// Words before "used to" that make it the present passive ("is used to read"), which is
/// no history.
const PASSIVE: &[&str] = &["is", "are", "be", "been", "being"];

fn word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The byte offsets at which `phrase` occurs in `text` as whole words, case-insensitive.
fn find_words(text: &str, phrase: &str) -> Vec<usize> {
    let hay = text.to_lowercase();
    let needle = phrase.to_lowercase();
    let mut out = vec![];
    let mut from = 0;
    while let Some(i) = hay[from..].find(&needle) {
        let at = from + i;
        let end = at + needle.len();
        let before = hay[..at].chars().next_back().is_none_or(|c| !word_char(c));
        let after = hay[end..].chars().next().is_none_or(|c| !word_char(c));
        if before && after {
            out.push(at);
        }
        from = at + needle.len().max(1);
    }
    out
}

/// The comment of a line of Rust: what follows its first `//`.
fn comment(line: &str) -> Option<&str> {
    line.find("//").map(|i| &line[i + 2..])
}

/// The history phrases of one comment.
fn history_in(comment: &str) -> Vec<&'static str> {
    let lower = comment.to_lowercase();
    HISTORY
        .iter()
        .filter(|p| {
            find_words(comment, p).into_iter().any(|at| {
                let prev = lower[..at].split_whitespace().next_back().unwrap_or("");
                **p != "used to" || !PASSIVE.contains(&prev)
            })
        })
        .copied()
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Every `.rs` file below `src/`, as (path relative to `src/`, text).
fn sources() -> Vec<(String, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = vec![];
    rust_files(&src, &mut files);
    assert!(files.len() > 20, "found only {files:?}");
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(&src).unwrap().to_string_lossy().into_owned();
            (rel, std::fs::read_to_string(&p).unwrap())
        })
        .collect()
}

#[test]
fn the_pool_words_stay_in_the_pool_and_the_launcher() {
    let mut found = vec![];
    for (rel, text) in sources() {
        if POOL_FILES.iter().any(|a| rel.starts_with(a)) {
            continue;
        }
        for (n, line) in text.lines().enumerate() {
            for w in POOL_WORDS {
                if !find_words(line, w).is_empty() {
                    found.push(format!("src/{rel}:{}: {w:?}: {}", n + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "outside {POOL_FILES:?}:\n{}",
        found.join("\n")
    );
}

#[test]
fn comments_do_not_narrate_history() {
    let mut found = vec![];
    for (rel, text) in sources() {
        for (n, line) in text.lines().enumerate() {
            for p in comment(line).map(history_in).unwrap_or_default() {
                found.push(format!("src/{rel}:{}: {p:?}: {}", n + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "history in comments:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_matchers_find_whole_words_only() {
    assert_eq!(find_words("A Spare one; spares", "spare"), vec![2]);
    assert!(find_words("buf.spare_capacity_mut()", "spare").is_empty());
    assert!(find_words("warmth, forewarn", "warm").is_empty());
    assert_eq!(find_words("the WARM one", "warm"), vec![4]);
    assert_eq!(history_in(" it no longer does"), vec!["no longer"]);
    assert_eq!(history_in(" as it Used To"), vec!["used to"]);
    assert!(history_in(" the fd is used to wake the loop").is_empty());
    assert!(history_in(" a cold start").is_empty());
    assert_eq!(comment("let a = 1; // previously b"), Some(" previously b"));
    assert_eq!(comment("let a = 1;"), None);
}
