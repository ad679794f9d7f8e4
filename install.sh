#!/usr/bin/env bash
# Installs execdriver under PREFIX (default /usr/local), from a release build:
#   PREFIX/lib/libexecdriver.so.1       the library (SONAME libexecdriver.so.1)
#   PREFIX/lib/libexecdriver.so         -> libexecdriver.so.1, for linking
#   PREFIX/libexec/execdriver/execdriver-shim   the supervisor (the library finds it there)
#   PREFIX/include/execdriver.h
#   PREFIX/lib/pkgconfig/execdriver.pc  (its Libs carry an rpath to PREFIX/lib)
#
# Usage: ./install.sh [PREFIX]   (or PREFIX=… ./install.sh; DESTDIR=… stages for packaging)
#        BUILD_DIR=target/debug ./install.sh PREFIX   installs that build as it is (no
#        cargo build; the default builds and installs target/release).
set -euo pipefail
cd "$(dirname "$0")"
PREFIX=${1:-${PREFIX:-/usr/local}}
case "$PREFIX" in /*) ;; *) echo "install.sh: PREFIX must be absolute: $PREFIX" >&2; exit 2 ;; esac
DEST=${DESTDIR:-}$PREFIX
if [ -z "${BUILD_DIR:-}" ]; then
    cargo build --release --quiet
    BUILD_DIR=target/release
fi
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
install -d "$DEST/lib/pkgconfig" "$DEST/libexec/execdriver" "$DEST/include"
install -m 0755 "$BUILD_DIR/libexecdriver.so" "$DEST/lib/libexecdriver.so.1"
ln -sfn libexecdriver.so.1 "$DEST/lib/libexecdriver.so"
install -m 0755 "$BUILD_DIR/execdriver-shim" "$DEST/libexec/execdriver/execdriver-shim"
install -m 0644 include/execdriver.h "$DEST/include/execdriver.h"
cat > "$DEST/lib/pkgconfig/execdriver.pc" <<PC
prefix=$PREFIX
libdir=\${prefix}/lib
includedir=\${prefix}/include

Name: execdriver
Description: Nomad's exec and raw_exec task drivers as a C library
Version: $version
Cflags: -I\${includedir}
Libs: -L\${libdir} -Wl,-rpath,\${libdir} -lexecdriver
PC
echo "installed execdriver $version under $DEST"
