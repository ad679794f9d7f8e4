#!/usr/bin/env bash
# Runs every test: formatting and lints, the Rust unit and integration tests (which also
# build and run the C harness under valgrind and the Python ctypes suite), and checks the
# committed C header is current.
set -euo pipefail
cd "$(dirname "$0")"
cargo fmt --check
cargo clippy --all-targets --quiet -- -D warnings
cargo build --quiet
(cd examples-go && GOPROXY=off GOCACHE=$PWD/../target/tmp/gocache go vet ./...)
cargo test --no-fail-fast -- --test-threads="${TEST_THREADS:-4}"
