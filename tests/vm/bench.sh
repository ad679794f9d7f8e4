#!/usr/bin/env bash
# The start benchmark (bench/start.sh) inside the VM of tests/vm/run, once on a pure
# cgroup v2 hierarchy and once on v1 controllers with an empty cgroup2 (hybrid), in one
# run, each against posix_spawn in the same VM. A benchmark, not a test.
#
# usage: tests/vm/bench.sh [N]   (default 100 iterations per method)
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:-100}
bench/build-release.sh
out=target/vm-bench
rm -rf "$out" && mkdir -p "$out"
for c in v2 hybrid; do
    echo "== cgroups: $c"
    tests/vm/run -c "$c" "$out" /bin/sh -c \
        "cd $PWD && BENCH_NO_BUILD=1 BENCH_DIR=/tmp START_BENCH_NO_BWRAP=1 bench/start.sh $n" \
        | grep -v '^\['
done
