#!/usr/bin/env bash
# Release build as it would be shipped: the library, then the supervisor relinked as a
# static-pie binary. A static supervisor skips the dynamic loader (no libc/libgcc_s to
# map and relocate), which is a good part of its start-up on every task start.
# `cargo rustc` passes the flag to the shim's own link only; crt-static in RUSTFLAGS
# would apply to the cdylib too, which cannot be built that way.
# A later plain `cargo build --release` relinks the shim dynamically (both work).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q
cargo rustc --release -q --bin execdriver-shim -- -C target-feature=+crt-static
