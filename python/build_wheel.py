#!/usr/bin/env python3
"""Builds the execdriver wheel: the Python package with libexecdriver.so and
execdriver-shim inside it, tagged py3-none-linux_<arch>.

    python3 python/build_wheel.py            # cargo build --release; the wheel into target/wheels/
    python3 python/build_wheel.py -o DIR     # the wheel into DIR
    python3 python/build_wheel.py --debug    # from a debug build
    python3 python/build_wheel.py --lib target/debug/libexecdriver.so \\
        --shim target/debug/execdriver-shim  # from these files, no cargo

Standard library only (no setuptools, wheel or network); prints the wheel's path.

Installed (`pip install execdriver-*.whl`), `Driver()` loads the bundled library from
the package directory, and the library runs the `execdriver-shim` beside it: no
environment variables needed.

The tag is linux_<arch>, not manylinux: the files are whatever this host's toolchain
built, linked against this host's glibc, and nothing here checks them against a
manylinux policy, so the wheel is for machines like the one that built it.
"""

from __future__ import annotations

import argparse
import base64
import ctypes
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import sysconfig
import time
import zipfile
from typing import List, Optional, Tuple

PYDIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(PYDIR)
PACKAGE = "execdriver"
LIB = "libexecdriver.so"
SHIM = "execdriver-shim"

# ELF e_machine -> the platform tag's architecture.
_MACHINES = {62: "x86_64", 183: "aarch64", 243: "riscv64", 22: "s390x", 21: "ppc64le"}


def die(msg: str) -> None:
    sys.exit("build_wheel: " + msg)


def project() -> Tuple[str, str, str, str]:
    """(name, version, summary, requires-python) from python/pyproject.toml. A regex,
    not tomllib: that is only in Python 3.11+, and these are four plain strings."""
    with open(os.path.join(PYDIR, "pyproject.toml")) as f:
        text = f.read()
    section = text.split("[project]", 1)[1].split("\n[", 1)[0]
    out = []
    for key in ("name", "version", "description", "requires-python"):
        m = re.search(r'^%s\s*=\s*"([^"]*)"' % re.escape(key), section, re.M)
        if not m:
            die("python/pyproject.toml: no %s in [project]" % key)
        out.append(m.group(1))
    return out[0], out[1], out[2], out[3]


def cargo_build(release: bool) -> Tuple[str, str]:
    """Runs cargo build and returns the paths of the library and the shim it made, from
    cargo's own artifact messages (so CARGO_TARGET_DIR and the profile are respected)."""
    cmd = ["cargo", "build", "--message-format=json-render-diagnostics"]
    if release:
        cmd.append("--release")
    print("build_wheel: " + " ".join(cmd), file=sys.stderr)
    proc = subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, universal_newlines=True)
    if proc.returncode != 0:
        die("cargo build failed (exit %d)" % proc.returncode)
    lib = shim = None
    for line in proc.stdout.splitlines():
        msg = json.loads(line)
        if msg.get("reason") != "compiler-artifact":
            continue
        target = msg.get("target", {})
        if target.get("name") == SHIM and msg.get("executable"):
            shim = msg["executable"]
        if "cdylib" in target.get("kind", []):
            lib = next((f for f in msg.get("filenames", []) if f.endswith(".so")), lib)
    if not lib or not shim:
        die("cargo build did not report %s and %s" % (LIB, SHIM))
    return lib, shim


def elf_arch(path: str) -> str:
    """The architecture of a 64-bit little-endian ELF file, for the platform tag."""
    with open(path, "rb") as f:
        head = f.read(20)
    if head[:4] != b"\x7fELF":
        die("%s is not an ELF file" % path)
    machine = int.from_bytes(head[18:20], "little")
    if machine not in _MACHINES:
        die("%s: unknown ELF machine %d" % (path, machine))
    return _MACHINES[machine]


def check_library(path: str, version: str) -> None:
    """Loads the library by its full path, as the package will (its SONAME,
    libexecdriver.so.1, plays no part then), and checks ABI and version."""
    lib = ctypes.CDLL(os.path.abspath(path))
    lib.driver_abi_version.restype = ctypes.c_uint32
    lib.driver_version.restype = ctypes.c_char_p
    abi, libver = lib.driver_abi_version(), lib.driver_version().decode()
    if abi != 1:
        die("%s has C ABI %d; the package speaks 1" % (path, abi))
    if libver != version:
        die("%s is version %s but python/pyproject.toml says %s" % (path, libver, version))


def record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return "sha256=" + digest.decode()


def metadata(name: str, version: str, summary: str, requires: str) -> bytes:
    with open(os.path.join(PYDIR, "README.md")) as f:
        readme = f.read()
    head = [
        "Metadata-Version: 2.1",
        "Name: " + name,
        "Version: " + version,
        "Summary: " + summary,
        "Requires-Python: " + requires,
        "Description-Content-Type: text/markdown",
    ]
    return ("\n".join(head) + "\n\n" + readme).encode()


def build(lib: str, shim: str, outdir: str) -> str:
    name, version, summary, requires = project()
    for p in (lib, shim):
        if not os.path.isfile(p):
            die("%s does not exist" % p)
    arch = elf_arch(lib)
    if elf_arch(shim) != arch:
        die("%s and %s are built for different machines" % (lib, shim))
    if not sysconfig.get_platform().startswith("linux"):
        die("a linux wheel is built on Linux (this is %s)" % sysconfig.get_platform())
    check_library(lib, version)

    tag = "py3-none-linux_" + arch
    dist = name.replace("-", "_")
    info = "%s-%s.dist-info" % (dist, version)
    # (path in the wheel, contents, Unix mode)
    files: List[Tuple[str, bytes, int]] = []
    src = os.path.join(PYDIR, PACKAGE)
    for entry in sorted(os.listdir(src)):
        # The binaries come from the build, never from stale copies in the source tree.
        if entry in (LIB, SHIM) or not os.path.isfile(os.path.join(src, entry)):
            continue
        if entry.endswith((".py", ".typed")):
            with open(os.path.join(src, entry), "rb") as f:
                files.append(("%s/%s" % (PACKAGE, entry), f.read(), 0o644))
    # Under the names the package and the library look for, whatever the inputs' names.
    for path, name_in_pkg in ((lib, LIB), (shim, SHIM)):
        with open(path, "rb") as f:
            files.append(("%s/%s" % (PACKAGE, name_in_pkg), f.read(), 0o755))
    wheel_meta = "Wheel-Version: 1.0\nGenerator: execdriver build_wheel.py\n"
    wheel_meta += "Root-Is-Purelib: false\nTag: %s\n" % tag
    files.append((info + "/METADATA", metadata(name, version, summary, requires), 0o644))
    files.append((info + "/WHEEL", wheel_meta.encode(), 0o644))
    files.append((info + "/top_level.txt", (PACKAGE + "\n").encode(), 0o644))
    record = "".join("%s,%s,%d\n" % (p, record_hash(d), len(d)) for p, d, _ in files)
    record += info + "/RECORD,,\n"
    files.append((info + "/RECORD", record.encode(), 0o644))

    os.makedirs(outdir, exist_ok=True)
    out = os.path.join(outdir, "%s-%s-%s.whl" % (dist, version, tag))
    # A fixed timestamp (or SOURCE_DATE_EPOCH's): the same inputs give the same wheel.
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH", "315532800"))
    stamp = time.gmtime(max(epoch, 315532800))[:6]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for path, data, mode in files:
            zi = zipfile.ZipInfo(path, stamp)
            zi.compress_type = zipfile.ZIP_DEFLATED
            # Regular file + permissions in the high 16 bits: pip gives the installed file
            # its exec bit from here, which the shim needs.
            zi.external_attr = (0o100000 | mode) << 16
            z.writestr(zi, data)
    tmp = out + ".tmp"
    with open(tmp, "wb") as f:
        f.write(buf.getvalue())
    os.replace(tmp, out)
    return out


def main(argv: Optional[List[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    prof = ap.add_mutually_exclusive_group()
    prof.add_argument("--release", action="store_true", help="cargo build --release (default)")
    prof.add_argument("--debug", action="store_true", help="cargo build (debug profile)")
    ap.add_argument("--lib", help="use this libexecdriver.so instead of building")
    ap.add_argument("--shim", help="use this execdriver-shim instead of building")
    ap.add_argument(
        "-o", "--out", default=os.path.join(REPO, "target", "wheels"), help="output directory"
    )
    args = ap.parse_args(argv)
    if bool(args.lib) != bool(args.shim):
        ap.error("--lib and --shim go together")
    if args.lib and (args.release or args.debug):
        ap.error("--lib/--shim use prebuilt files; --release/--debug build them")
    if args.lib:
        lib, shim = args.lib, args.shim
    else:
        lib, shim = cargo_build(release=not args.debug)
    print(build(lib, shim, args.out))


if __name__ == "__main__":
    main()
