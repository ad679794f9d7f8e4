#!/usr/bin/env bash
# Start-latency benchmark (issue 2 item 12, issue 3 "Performance"). Not a test.
#
# In one run, interleaved, N iterations each of:
#   - posix_spawn of /bin/true + waitpid (the baseline),
#   - raw_exec through libexecdriver.so: driver_start -> driver_wait (and, reported
#     separately, the full cycle including driver_destroy),
#   - exec with full isolation, the same way, when driver_fingerprint reports
#     driver.exec = "1" (otherwise it prints why it is skipped),
#   - bwrap with read-only binds and pid/ipc/uts namespaces, when installed (as root the
#     script tries `apt-get install -y bubblewrap` when it is missing).
# Prints median and p90 in microseconds and ratios against posix_spawn.
#
# Usage: bench/start.sh [N]   (default 200)
#   START_BENCH_NO_BWRAP=1 bench/start.sh   leaves bwrap out of the rotation.
#   BENCH_DIR=/dev/shm bench/start.sh        work files (alloc/data dirs) on tmpfs.
#   START_BENCH_CONFIG='{"prestart_supervisor":false}' bench/start.sh   driver_configure
#   first (also read by bench/pss.sh).
#   START_BENCH_SKIP=exec (or raw) bench/start.sh   leaves that method out.
#   START_BENCH_GAP_US=50000 bench/start.sh   idles 50 ms (untimed) before every measured
#   start, as on a real node where starts are sparse. On this kernel the first write to a
#   cgroup.procs after an idle spell waits for an RCU grace period (cgroup_threadgroup_rwsem
#   taken for writing, rcu_sync back to idle), which back-to-back starts partly dodge.
set -euo pipefail

N=${1:-200}
. "$(dirname "$0")/setup.sh"

BWRAP=$(command -v bwrap || true)
if [ -n "${START_BENCH_NO_BWRAP:-}" ]; then
    # bwrap's mount-namespace teardown runs on after it exits and slows whatever start
    # comes next in the rotation: this measures the others without it.
    echo "bwrap: skipped (START_BENCH_NO_BWRAP)"
    BWRAP=
elif [ -z "$BWRAP" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "== bwrap missing: apt-get install -y bubblewrap"
        if DEBIAN_FRONTEND=noninteractive apt-get install -y -q bubblewrap >"$WORK/apt.log" 2>&1; then
            BWRAP=$(command -v bwrap || true)
        else
            echo "bwrap: apt-get install failed (last lines follow); bwrap column skipped"
            tail -3 "$WORK/apt.log" | sed 's/^/    /'
        fi
    else
        echo "bwrap: not installed and not root (or no apt-get); bwrap column skipped"
    fi
fi

echo "== host: $(nproc) cpus, load average $(cut -d' ' -f1-3 /proc/loadavg), kernel $(uname -r)"
"$WORK/start_bench" bench "$N" "$WORK" "$BWRAP"
echo "== load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
