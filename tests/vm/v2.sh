#!/usr/bin/env bash
# The cgroup v2 suite: builds the tests on this machine, then runs those that touch
# cgroups, isolation, recovery, stats, the hosts and the artifacts as root inside a VM
# with a pure cgroup v2 hierarchy and another kernel (tests/vm/run), and prints a
# summary. Exit status 0 only when every test binary passed there.
#
# usage: tests/vm/v2.sh [TEST_NAME...]   (default: the whole v2 suite)
# Needs what tests/vm/run needs; exits 3 (saying what to install) without it.
set -euo pipefail
cd "$(dirname "$0")/../.."
suite=(lib cgroup fallbacks faults full_disk exec_isolation exec_into exec_interactive chroot_env
       escape_cold escape_prestart escape_host escape_config recover wait_fd
       lifecycle prestart recycle raw_exec trampoline driver_e2e c_harness python_ctypes python_pkg
       fetch_archive fetch_hostile fetch_http fetch_misc fetch_fuzz)
# The tests left to the host, each for a reason: nothing of theirs differs on a v2 host.
host_only=(
    abi_host      # the abi_stable build's exports (test.sh runs it with --features abi)
    header schema readme source_rules  # committed files against the code
    shim_entry    # the shim refuses a multi-threaded start, before any cgroup
    ffi_boundary  # argument checks at the C boundary, before any task
    host_log logs # the library's log and reading log files
    go_host python_wheel  # the Go binding and the wheel's packaging (C and Python hosts run here)
)
# Every test file is in one list or the other.
for f in tests/*.rs; do
    t=$(basename "$f" .rs)
    case " ${suite[*]} ${host_only[*]} " in
        *" $t "*) ;;
        *) echo "v2.sh: tests/$t.rs is in neither the v2 suite nor host_only" >&2; exit 2 ;;
    esac
done
[ $# -gt 0 ] && suite=("$@")
out=target/vm
rm -rf "$out" && mkdir -p "$out"
cargo build --quiet
cargo test --no-run --message-format=json 2>/dev/null | python3 -c '
import json, sys
want = set(sys.argv[1:])
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") != "compiler-artifact" or not m.get("executable"):
        continue
    t = m["target"]
    name = "lib" if t["kind"] == ["lib"] or "cdylib" in t["kind"] else t["name"]
    if m["profile"]["test"] and name in want:
        print(name, m["executable"])
' "${suite[@]}" >"$out/tests.list"
missing=$(for t in "${suite[@]}"; do grep -q "^$t " "$out/tests.list" || echo "$t"; done)
if [ -n "$missing" ]; then
    echo "v2.sh: no test binary for: $missing" >&2
    exit 2
fi
# The suite takes about 13 minutes in CI (the VM emulates its CPU); the limit is for a
# hang.
exec tests/vm/run -t "${VM_TIMEOUT:-1200}" "$out" "$PWD/tests/vm/inside.sh"
