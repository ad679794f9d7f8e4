#!/usr/bin/env bash
# Memory of the per-task supervisor (issue 2 item 12). Not a test.
#
# Starts one raw_exec task (and one exec task when driver_fingerprint reports
# driver.exec = "1") running `sleep 30` through the C timer (`start_bench pss`), reads
# Pss/Rss of the supervisor (the `pid` of driver_start's response) from
# /proc/<pid>/smaps_rollup, prints it beside the 1024 KiB target, and stops the task.
#
# Usage: bench/pss.sh
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "${BENCH_DIR:=$ROOT/target}"
WORK=$(mktemp -d "$BENCH_DIR/execdriver-pssbench.XXXXXX")
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT

echo "== cargo build --release, and the supervisor again as a static binary"
"$ROOT/bench/build-release.sh"
echo "== gcc -O2 bench/start_bench.c"
gcc -O2 -Wall -Wextra -Werror -o "$WORK/start_bench" "$ROOT/bench/start_bench.c" -ldl

mkdir -p "$WORK/data"
export EXECDRIVER_DATA_DIR="$WORK/data"
export EXECDRIVER_LIB="$ROOT/target/release/libexecdriver.so"
"$WORK/start_bench" pss "$WORK"
ls -l "$ROOT/target/release/execdriver-shim" | awk '{print "supervisor binary size: " $5 " bytes"}'
