#!/usr/bin/env bash
# Benchmark of the artifact fetcher (issue 4), not a test.
#
# 1. Builds a ~50 MB tar.gz with thousands of entries, serves it with
#    `python3 -m http.server --bind 127.0.0.1` (entries stay under the default
#    decompression_file_count_limit of 4096), and times our fetch (fetch_all with
#    ?checksum=sha256:…, via examples/fetch_bench.rs) beside `curl -s URL | tar xz -C dir`,
#    alternating which goes first, RUNS times each. Prints medians and the ratio.
# 2. Times sha256 of a 60 MB file through the fetcher's hashing reader vs
#    `openssl dgst -sha256`.
#
# Usage: bench/fetch.sh [RUNS]   (default 5). Needs python3, curl, tar, openssl.
set -euo pipefail

RUNS=${1:-5}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/execdriver-bench.XXXXXX")
SERVER_PID=""
cleanup() {
    if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

for tool in python3 curl tar openssl; do
    command -v "$tool" >/dev/null || { echo "bench: $tool is required" >&2; exit 1; }
done

echo "== building examples/fetch_bench (release)"
(cd "$ROOT" && cargo build --release --example fetch_bench -q)
BIN="$ROOT/target/release/examples/fetch_bench"

echo "== making the archive"
python3 - "$WORK/src" <<'PY'
import os, random, sys
root = sys.argv[1]
rnd = random.Random(42)
n = 0
for d in range(30):
    for f in range(100):
        p = os.path.join(root, f"dir{d:02d}", f"sub{f % 5}")
        os.makedirs(p, exist_ok=True)
        # Mostly incompressible (like binaries and compressed assets), some text.
        size = rnd.randint(8_000, 25_000)
        with open(os.path.join(p, f"file{f:03d}.bin"), "wb") as fh:
            if f % 10 == 0:
                fh.write((b"line of text %d\n" % f) * (size // 16))
            else:
                fh.write(os.urandom(size))
        n += 1
print(f"{n} files")
PY
mkdir -p "$WORK/www"
tar czf "$WORK/www/app.tar.gz" -C "$WORK/src" .
SUM=$(openssl dgst -sha256 -r "$WORK/www/app.tar.gz" | cut -d' ' -f1)
ENTRIES=$(tar tzf "$WORK/www/app.tar.gz" | wc -l)
echo "archive: $(stat -c %s "$WORK/www/app.tar.gz") bytes, $ENTRIES entries"

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
(cd "$WORK/www" && exec python3 -m http.server --bind 127.0.0.1 "$PORT" >/dev/null 2>&1) &
SERVER_PID=$!
URL="http://127.0.0.1:$PORT/app.tar.gz"
for _ in $(seq 1 100); do
    curl -sf -o /dev/null -r 0-0 "$URL" && break
    sleep 0.1
done

now_ms() { date +%s%3N; }
median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

run_ours() {
    sync
    local s e
    s=$(now_ms); "$BIN" fetch "$URL?checksum=sha256:$SUM" "$WORK/t1.$i" 2>"$WORK/err" || { cat "$WORK/err" >&2; exit 1; }; e=$(now_ms)
    ours+=($((e - s)))
}
run_theirs() {
    sync
    local s e
    s=$(now_ms); curl -s "$URL" | tar xz -C "$WORK/t2.$i/local"; e=$(now_ms)
    theirs+=($((e - s)))
}
ours=(); theirs=()
for i in $(seq 1 "$RUNS"); do
    # Fresh dirs, nothing deleted while measuring (ext4 inode allocation slows down
    # right after mass deletes); alternate which goes first.
    mkdir -p "$WORK/t1.$i" "$WORK/t2.$i/local"
    if [ $((i % 2)) -eq 1 ]; then run_ours; run_theirs; else run_theirs; run_ours; fi
    echo "run $i: ours ${ours[-1]} ms, curl|tar ${theirs[-1]} ms"
done
diff -r "$WORK/t1.1/local" "$WORK/t2.1/local" >/dev/null && echo "trees identical"
MO=$(printf '%s\n' "${ours[@]}" | median)
MT=$(printf '%s\n' "${theirs[@]}" | median)
echo "median fetch: ours ${MO} ms, curl|tar xz ${MT} ms, ratio $(awk -v a="$MO" -v b="$MT" 'BEGIN{printf "%.3f", a/b}')"

echo "== sha256 of a 60 MB file"
head -c $((60 * 1024 * 1024)) /dev/urandom > "$WORK/60m.bin"
cat "$WORK/60m.bin" >/dev/null
h_ours=(); h_ssl=()
for i in $(seq 1 "$RUNS"); do
    s=$(now_ms); A=$("$BIN" hash "$WORK/60m.bin"); e=$(now_ms); h_ours+=($((e - s)))
    s=$(now_ms); B=$(openssl dgst -sha256 -r "$WORK/60m.bin" | cut -d' ' -f1); e=$(now_ms); h_ssl+=($((e - s)))
    [ "$A" = "$B" ] || { echo "digest mismatch: $A vs $B" >&2; exit 1; }
done
HO=$(printf '%s\n' "${h_ours[@]}" | median)
HS=$(printf '%s\n' "${h_ssl[@]}" | median)
echo "median sha256 60 MB: ours ${HO} ms, openssl ${HS} ms, ratio $(awk -v a="$HO" -v b="$HS" 'BEGIN{printf "%.3f", a/b}')"
