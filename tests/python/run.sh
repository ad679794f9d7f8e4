#!/bin/sh
# Runs the ctypes tests against an already built library (this script builds nothing).
#   cargo build && tests/python/run.sh
# EXECDRIVER_LIB picks the library (default: target/debug/libexecdriver.so); the
# supervisor is found next to it or via EXECDRIVER_SHIM. EXECDRIVER_DATA_DIR defaults to
# a fresh temporary directory, removed afterwards.
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
: "${EXECDRIVER_LIB:=$root/target/debug/libexecdriver.so}"
export EXECDRIVER_LIB
if [ ! -e "$EXECDRIVER_LIB" ]; then
    echo "run.sh: $EXECDRIVER_LIB not found; run 'cargo build' first" >&2
    exit 2
fi
cleanup=
if [ -z "${EXECDRIVER_DATA_DIR:-}" ]; then
    EXECDRIVER_DATA_DIR=$(mktemp -d "${TMPDIR:-/tmp}/execdriver-py-data.XXXXXX")
    cleanup=$EXECDRIVER_DATA_DIR
    export EXECDRIVER_DATA_DIR
fi
cd "$root"
rc=0
python3 -m unittest discover -s tests/python -v "$@" || rc=$?
[ -n "$cleanup" ] && rm -rf "$cleanup"
exit $rc
