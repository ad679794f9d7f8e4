#!/bin/sh
# Runs inside the VM (tests/vm/v2.sh): each test binary of tests.list in the working
# directory, as root, one at a time, then a summary. Exit status 0 when all passed.
export CI=1 RUST_BACKTRACE=1
echo "== kernel $(uname -r), cgroup: $(cat /sys/fs/cgroup/cgroup.controllers)"
begin=$(date +%s)
failed=""
while read -r name bin; do
    echo "== $name"
    start=$(date +%s)
    if "$bin" --test-threads="${VM_TEST_THREADS:-2}" >"$name.log" 2>&1; then
        echo "   ok ($(($(date +%s) - start)) s): $(grep '^test result' "$name.log" | tail -n 1)"
        # What a test left out here and why (a part that needs v1, say), in the summary.
        grep '^SKIP' "$name.log" | sort | uniq -c | sed 's/^/   /'
    else
        echo "   FAILED ($(($(date +%s) - start)) s):"
        grep -E '^test .* FAILED|panicked at|^test result' -A4 "$name.log" | head -n 60 | sed 's/^/   /'
        failed="$failed $name"
    fi
done <tests.list
echo "== $(($(date +%s) - begin)) s in all"
if [ -n "$failed" ]; then
    echo "== v2 suite FAILED:$failed (logs in target/vm/*.log)"
    exit 1
fi
echo "== v2 suite passed"
