#!/usr/bin/env bash
# N running tasks waited on two ways, each in a process of its own, side by side: one
# thread polling the tasks' wait fds, and one thread per task blocked in driver_wait.
# Prints the host's threads and RSS while it waits, and the latency from each task's
# SIGTERM (driver_signal) to its waiter having the wait object. Not a test.
#
# Usage: bench/waitfd.sh [N]   (default 1000)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000}
cargo build --release --quiet --example waitfd_bench --bin execdriver-shim
ulimit -n 65536 2>/dev/null || true
printf '%-36s %6s %8s %10s %14s %14s\n' "" tasks threads "RSS KiB" "notice median" "notice p99"
for way in fds threads; do
    target/release/examples/waitfd_bench "$N" "$way"
done
