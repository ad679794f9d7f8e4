#!/usr/bin/env bash
# Runs every test: formatting and lints, the Rust unit and integration tests (which also
# build and run the C harness under valgrind, the Python ctypes suite, and gofmt, go vet and
# go test of examples-go), and checks the committed C header is current.
set -euo pipefail
cd "$(dirname "$0")"
# What the tests need (scripts/prereqs.sh): as root with apt-get, installed now;
# otherwise the exact command, and a stop, before anything is built.
. scripts/prereqs.sh
prereqs test.sh --lints --venv gcc:gcc g++:g++ make:make pkg-config:pkg-config curl:curl \
    python3:python3 go:golang-go valgrind:valgrind mkfs.ext4:e2fsprogs unshare:util-linux \
    tmux:tmux
cargo fmt --check
cargo clippy --all-targets --quiet -- -D warnings
# The library as shipped (without the `testing` feature its internals are private, which
# some lints only then look at).
cargo clippy --lib --bins --quiet -- -D warnings
# The internal docs (every module, private items too) without a broken link.
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --document-private-items --features testing --quiet
cargo build --quiet
cargo test --no-fail-fast -- --test-threads="${TEST_THREADS:-4}"
# The abi_stable root module (off by default): its own feature build and host test.
# Set SKIP_ABI_TEST=1 to leave it out.
if [ "${SKIP_ABI_TEST:-0}" != 1 ]; then
    cargo clippy --features abi --all-targets --quiet -- -D warnings
    cargo test --features abi --test abi_host
fi
# The cgroup v2 suite in a VM (a pure v2 host, Linux 6.1; see tests/vm/). Set SKIP_VM=1 to
# leave it out.
if [ "${SKIP_VM:-0}" = 1 ]; then
    echo "test.sh: SKIPPED the cgroup v2 suite in a VM (SKIP_VM=1)"
elif command -v qemu-system-x86_64 >/dev/null && ls /boot/vmlinuz-* >/dev/null 2>&1 && [ -x /bin/busybox ]; then
    tests/vm/v2.sh
else
    echo "test.sh: SKIPPED the cgroup v2 suite in a VM: it needs, as root:" >&2
    echo "    apt-get install -y qemu-system-x86 linux-image-amd64 busybox-static" >&2
fi
