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

. "$(dirname "$0")/setup.sh"

"$WORK/start_bench" pss "$WORK"
ls -l "$ROOT/target/release/execdriver-shim" | awk '{print "supervisor binary size: " $5 " bytes"}'
