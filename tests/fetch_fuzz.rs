//! Property test of the whole unpack path: random archives made of files, directories,
//! symlinks and hard links with hostile names and targets. Whatever happens (success or
//! refusal), nothing lands outside the destination, every symlink in the result resolves
//! inside it, and no setuid/setgid bit survives.

mod fetch_util;

use execdriver::config::ArtifactConfig;
use fetch_util::*;
use proptest::prelude::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

fn name() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            3 => Just("a".to_string()),
            3 => Just("b".to_string()),
            2 => Just("l".to_string()),
            1 => Just("..".to_string()),
            1 => Just(".".to_string()),
            1 => Just("".to_string()),
        ],
        1..4,
    )
    .prop_map(|parts| parts.join("/"))
    .prop_flat_map(|n| prop_oneof![9 => Just(n.clone()), 1 => Just(format!("/{n}"))])
}

#[derive(Debug, Clone)]
enum Op {
    File(String, u32),
    Dir(String),
    Symlink(String, String),
    Hardlink(String, String),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (
            name(),
            prop_oneof![Just(0o644u32), Just(0o4755), Just(0o2755), Just(0o1777)]
        )
            .prop_map(|(n, m)| Op::File(n, m)),
        name().prop_map(Op::Dir),
        (name(), name()).prop_map(|(n, t)| Op::Symlink(n, t)),
        (name(), name()).prop_map(|(n, t)| Op::Hardlink(n, t)),
    ]
}

fn check_tree(dir: &Path, dest: &Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        let m = std::fs::symlink_metadata(&p).unwrap();
        if m.file_type().is_symlink() {
            if let Ok(real) = std::fs::canonicalize(&p) {
                assert!(
                    real.starts_with(dest),
                    "{} -> {} leaves the destination",
                    p.display(),
                    real.display()
                );
            }
        } else if m.is_dir() {
            check_tree(&p, dest);
        } else {
            assert_eq!(
                m.permissions().mode() & 0o7000,
                0,
                "{} kept special bits",
                p.display()
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn hostile_archives_never_escape(ops in prop::collection::vec(op(), 1..7)) {
        let t = Task::new("fuzz");
        std::fs::write(t.outside.join("victim"), b"victim").unwrap();
        let entries: Vec<E> = ops
            .iter()
            .map(|o| match o {
                Op::File(n, m) => E::File(n, b"data", *m),
                Op::Dir(n) => E::Dir(n),
                Op::Symlink(n, l) => E::Symlink(n, l),
                Op::Hardlink(n, l) => E::Hardlink(n, l),
            })
            .collect();
        let src = t.tmp.join("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("a.tar"), tar(&entries)).unwrap();
        let c = ArtifactConfig { file_roots: vec![src.display().to_string()], ..cfg() };
        let s = spec_with(&format!("file://{}", src.join("a.tar").display()), |a| {
            a.destination = Some("local/dest".into());
        });
        let _ = fetch(&[s], &t.task, &c).0;
        // Outside the destination: exactly what was there before.
        let tree = t.tree();
        for p in &tree {
            prop_assert!(
                p.starts_with("alloc/web/local/dest") || ["alloc", "alloc/web", "alloc/web/local", "outside", "outside/victim", "src", "src/a.tar"].contains(&p.as_str()),
                "unexpected {p} in {tree:?}"
            );
        }
        prop_assert_eq!(std::fs::read(t.outside.join("victim")).unwrap(), b"victim");
        prop_assert!(t.no_staging());
        let dest = t.local().join("dest");
        if dest.exists() {
            check_tree(&dest, &std::fs::canonicalize(&dest).unwrap());
        }
    }
}
