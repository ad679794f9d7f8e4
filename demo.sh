#!/usr/bin/env bash
# Builds everything and runs one real job end to end through the C harness: a loopback
# HTTP server serves a tar.gz artifact; the job fetches it (checksum verified), unpacks it
# into /local and runs its script isolated (driver "exec": namespaces, read-only bind-mount
# root, cgroups, user nobody). Without root or cgroups it runs the same job as raw_exec and
# says so.
set -euo pipefail
cd "$(dirname "$0")"
# gcc builds the harness (and links the library), python3 serves the artifact, curl
# checks it is served (scripts/prereqs.sh: installed as root, else the command to run).
. scripts/prereqs.sh
prereqs demo.sh gcc:gcc python3:python3 curl:curl

cargo build --release --quiet
mkdir -p target/demo
gcc -Wall -Wextra -Werror -O2 -Iinclude -o target/demo/harness examples-c/harness.c -ldl

work=$(mktemp -d /tmp/execdriver-demo.XXXXXX)
server_pid=
cleanup() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

# The artifact: a script in a tar.gz.
mkdir -p "$work/src/app" "$work/www"
cat > "$work/src/app/hello.sh" <<'SCRIPT'
#!/bin/sh
echo "hello from $NOMAD_TASK_NAME as $(id -un) (uid $(id -u)), pid $$ in its namespace"
echo "root holds: $(ls / | tr '\n' ' ')"
echo "artifact in /local: $(ls /local/app)"
SCRIPT
chmod 755 "$work/src/app/hello.sh"
tar -czf "$work/www/app.tar.gz" -C "$work/src" app
sum=$(sha256sum "$work/www/app.tar.gz" | cut -d' ' -f1)

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 -m http.server --bind 127.0.0.1 --directory "$work/www" "$port" >/dev/null 2>&1 &
server_pid=$!
for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$port/app.tar.gz" && break; sleep 0.05; done

export EXECDRIVER_LIB=$PWD/target/release/libexecdriver.so
export EXECDRIVER_DATA_DIR=$work/data
driver=exec
if ! target/demo/harness fingerprint | grep -q '"driver.exec":"1"'; then
  echo "note: exec isolation is not available here (needs root and cgroups); running as raw_exec" >&2
  target/demo/harness fingerprint >&2 || true
  driver=raw_exec
fi
cat > "$work/job.json" <<JOB
{"name": "demo", "driver": "$driver",
 "artifacts": [{"source": "http://127.0.0.1:$port/app.tar.gz", "destination": "local/",
                "options": {"checksum": "sha256:$sum"}}],
 "config": {"command": "\${NOMAD_TASK_DIR}/app/hello.sh"},
 "resources": {"memory_mb": 64, "pids_max": 32}}
JOB
echo "== job ($driver): fetch http://127.0.0.1:$port/app.tar.gz, run local/app/hello.sh"
set +e
target/demo/harness run "$work/job.json"
rc=$?
set -e
exit $rc
