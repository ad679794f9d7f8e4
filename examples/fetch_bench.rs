//! Benchmark driver for bench/fetch.sh.
//!
//! `fetch_bench fetch URL TASK_DIR` fetches one artifact with `fetch_all` (put the
//! checksum in the URL as `?checksum=sha256:…`) into TASK_DIR/local/ and prints the
//! elapsed milliseconds. `fetch_bench hash FILE` hashes FILE with sha256 through the
//! fetcher's streaming hash reader and prints the hex digest.

use execdriver::config::{Artifact, ArtifactConfig};
use execdriver::fetch::{self, ArtifactProgress, FetchSpec};
use std::io::Read;
use std::path::Path;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("fetch") if args.len() == 4 => {
            let spec = FetchSpec {
                artifact: Artifact {
                    source: args[2].clone(),
                    ..Default::default()
                },
                executable: false,
                field: "artifacts[0]".into(),
            };
            let cfg = ArtifactConfig::default();
            let progress = vec![ArtifactProgress::new(&spec)];
            let t = Instant::now();
            if let Err(e) = fetch::fetch_all(&[spec], Path::new(&args[3]), &cfg, &progress) {
                eprintln!("{e}");
                std::process::exit(1);
            }
            eprintln!(
                "fetched {} bytes, {} entries in {} ms",
                progress[0].bytes.load(std::sync::atomic::Ordering::Relaxed),
                progress[0]
                    .entries
                    .load(std::sync::atomic::Ordering::Relaxed),
                t.elapsed().as_millis()
            );
        }
        Some("hash") if args.len() == 3 => {
            let f = std::fs::File::open(&args[2]).expect("open");
            let mut r = fetch::checksum::HashingReader::new(f, Some(fetch::checksum::Algo::Sha256));
            let mut buf = vec![0u8; 256 * 1024];
            while r.read(&mut buf).expect("read") != 0 {}
            println!("{}", r.hex_digest().unwrap_or_default());
        }
        _ => {
            eprintln!("usage: fetch_bench fetch URL TASK_DIR | fetch_bench hash FILE");
            std::process::exit(2);
        }
    }
}
