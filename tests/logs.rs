//! `driver_logs`: a task's output as one stream across its rotated files, from the start
//! or back from the end, following new output, after the exit until destroy.

mod common;
use common::*;
use serde_json::{Value, json};

fn logs(req: Value) -> Value {
    op(execdriver::driver::logs, req).unwrap()
}

/// Standard base64, decoded.
fn unbase64(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let mut out = vec![];
    for q in s.as_bytes().chunks(4) {
        let n = q
            .iter()
            .take_while(|c| **c != b'=')
            .fold((0u32, 0), |(n, k), c| {
                ((n << 6) | u32::from(val(*c)), k + 1)
            });
        let (bits, k) = (n.0 << (6 * (4 - n.1)), n.1);
        for i in 0..k - 1 {
            out.push((bits >> (16 - 8 * i)) as u8);
        }
    }
    out
}

fn seq(n: u32) -> Vec<u8> {
    (1..=n)
        .map(|i| format!("{i}\n"))
        .collect::<String>()
        .into_bytes()
}

#[test]
fn the_whole_stream_reads_across_rotated_files() {
    init();
    let d = TempDir::new("logs-rot");
    let mut task = raw_task("s", d.path(), "seq 1 400000; echo err >&2");
    task["logs"] = json!({"max_files": 10, "max_file_size_mb": 1});
    let id = start(task).unwrap()["task_id"]
        .as_str()
        .unwrap()
        .to_string();
    wait(&id, 30_000).unwrap();
    let want = seq(400000);
    assert!(
        d.path().join("alloc/logs/s.stdout.2").exists(),
        "not rotated"
    );
    let mut got = vec![];
    let mut offset = 0;
    loop {
        let r = logs(json!({"task_id": id, "offset": offset}));
        assert_eq!(r["start"], offset, "{r}");
        got.extend(unbase64(r["data"].as_str().unwrap()));
        offset = r["offset"].as_u64().unwrap();
        if r["eof"] == true {
            break;
        }
        assert!(got.len() <= want.len());
    }
    assert!(
        got == want,
        "the stream differs ({} bytes, {} wanted)",
        got.len(),
        want.len()
    );
    // Back from the end; text; the other stream.
    let r = logs(json!({"task_id": id, "origin": "end", "offset": 7, "encoding": "text"}));
    assert_eq!(
        (&r["data"], &r["eof"]),
        (&json!("400000\n"), &json!(true)),
        "{r}"
    );
    assert_eq!(r["offset"].as_u64().unwrap(), want.len() as u64);
    let r = logs(json!({"task_id": id, "stream": "stderr", "encoding": "text"}));
    assert_eq!(r["data"], "err\n");
    let r = logs(json!({"task_id": id, "limit_bytes": 3, "encoding": "text"}));
    assert_eq!(
        (&r["data"], &r["offset"], &r["eof"]),
        (&json!("1\n2"), &json!(3), &json!(false))
    );
    destroy(&id);
    let e = op(execdriver::driver::logs, json!({"task_id": id})).unwrap_err();
    assert_eq!(e.code, execdriver::Code::TaskNotFound);
    let e = op(
        execdriver::driver::logs,
        json!({"task_id": "x", "stream": "both"}),
    )
    .unwrap_err();
    assert_eq!(e.code, execdriver::Code::InvalidRequest);
}

/// What rotation deleted is gone: a read from before it starts at the oldest file left.
#[test]
fn a_read_from_rotated_out_bytes_starts_at_the_oldest_kept() {
    init();
    let d = TempDir::new("logs-gone");
    let mut task = raw_task("g", d.path(), "seq 1 400000");
    task["logs"] = json!({"max_files": 2, "max_file_size_mb": 1});
    let id = start(task).unwrap()["task_id"]
        .as_str()
        .unwrap()
        .to_string();
    wait(&id, 30_000).unwrap();
    let r = logs(json!({"task_id": id, "limit_bytes": 6}));
    assert_eq!(r["start"], 1 << 20, "{r}");
    let want = seq(400000);
    assert_eq!(
        unbase64(r["data"].as_str().unwrap()),
        want[1 << 20..(1 << 20) + 6]
    );
    destroy(&id);
}

/// A read at the end waits for what comes next; once the task has ended it says `eof` at
/// once.
#[test]
fn follow_waits_for_new_output_until_the_end() {
    init();
    let d = TempDir::new("logs-follow");
    let id = start(raw_task(
        "f",
        d.path(),
        "echo one; while [ ! -e $NOMAD_TASK_DIR/go ]; do sleep 0.01; done; echo two",
    ))
    .unwrap()["task_id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_for_output(d.path(), "f", "one");
    let r = logs(json!({"task_id": id, "encoding": "text"}));
    assert_eq!((&r["data"], &r["eof"]), (&json!("one\n"), &json!(false)));
    let at = r["offset"].clone();
    let follower = {
        let id = id.clone();
        let at = at.clone();
        std::thread::spawn(move || {
            logs(json!({"task_id": id, "offset": at, "follow_ms": 20_000, "encoding": "text"}))
        })
    };
    std::fs::write(d.path().join("f/local/go"), "").unwrap();
    let t0 = std::time::Instant::now();
    let r = follower.join().unwrap();
    assert_eq!(r["data"], "two\n", "{r}");
    assert!(t0.elapsed().as_secs() < 10, "it waited out follow_ms");
    wait(&id, 10_000).unwrap();
    let r = logs(json!({"task_id": id, "offset": r["offset"], "follow_ms": 20_000}));
    assert_eq!((&r["data"], &r["eof"]), (&json!(""), &json!(true)), "{r}");
    destroy(&id);
}

/// A task nobody waits for: once it has ended a follow says `eof` at once, though its
/// supervisor, kept for reuse, outlives it.
#[test]
fn eof_comes_with_the_exit_not_with_the_supervisor() {
    init();
    let d = TempDir::new("logs-eof");
    let id = start(raw_task("q", d.path(), "echo bye")).unwrap()["task_id"]
        .as_str()
        .unwrap()
        .to_string();
    let t0 = std::time::Instant::now();
    let mut offset = json!(0);
    loop {
        let r = logs(json!({"task_id": id, "offset": offset, "follow_ms": 20_000}));
        offset = r["offset"].clone();
        if r["eof"] == true {
            break;
        }
        assert!(t0.elapsed().as_secs() < 30, "no eof: {r}");
    }
    assert!(t0.elapsed().as_secs() < 5, "eof after {:?}", t0.elapsed());
    assert_eq!(offset, 4);
    destroy(&id);
}
