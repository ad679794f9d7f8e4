# What a script of this repository needs before it builds anything, checked in its first
# second. Sourced (by demo.sh and test.sh, from the repository root), then:
#
#     prereqs WHO [--lints] [--venv] COMMAND:PACKAGE...
#
# Each COMMAND missing from PATH is wanted as the Debian PACKAGE; `--venv` also wants
# python3-venv when `python3 -m venv` cannot work. As root with apt-get the wanted
# packages are installed now; otherwise WHO prints the exact `apt-get install` command and
# exits 1. The Rust toolchain comes from rustup, not Debian (whose rustc is older than
# the crate's rust-version): without cargo, with too old a rustc, or (`--lints`) without
# rustfmt or clippy, WHO prints the rustup command and exits 1.

prereqs() {
    local who=$1 lints=0 venv=0
    shift
    while [ $# -gt 0 ]; do
        case $1 in
        --lints) lints=1 ;;
        --venv) venv=1 ;;
        *) break ;;
        esac
        shift
    done
    local need=() tool rust
    for tool in "$@"; do
        command -v "${tool%%:*}" >/dev/null || need+=("${tool#*:}")
    done
    if [ $venv = 1 ] && ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
        need+=(python3-venv)
    fi
    rust=$(prereqs_rust "$lints")
    if [ ${#need[@]} -gt 0 ]; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            echo "$who: installing ${need[*]}" >&2
            DEBIAN_FRONTEND=noninteractive apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
        else
            echo "$who: missing ${need[*]}; install them first, as root:" >&2
            echo "    apt-get install -y ${need[*]}" >&2
            [ -z "$rust" ] || echo "$who: $rust" >&2
            exit 1
        fi
    fi
    if [ -n "$rust" ]; then
        echo "$who: $rust" >&2
        exit 1
    fi
}

# What is wrong with the Rust toolchain, with the command that fixes it; nothing when it
# has cargo, a rustc of at least Cargo.toml's rust-version and (lints = 1) rustfmt and
# clippy.
prereqs_rust() {
    local lints=$1 want have comp=()
    want=$(sed -n 's/^rust-version *= *"\(.*\)"/\1/p' Cargo.toml)
    if ! command -v cargo >/dev/null; then
        printf '%s\n' "no Rust toolchain (cargo); install Rust $want or later with rustup:" \
            "    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y" \
            "    . \"\$HOME/.cargo/env\""
        return 0
    fi
    have=$(rustc --version 2>/dev/null | sed -n 's/^rustc \([0-9][0-9.]*\).*/\1/p')
    if [ "$(printf '%s\n%s\n' "$want" "${have:-0}" | sort -V | head -n1)" != "$want" ]; then
        printf '%s\n' "rustc ${have:-(none)} is older than the crate's rust-version $want; update it:" \
            "    rustup update stable"
        return 0
    fi
    if [ "$lints" = 1 ]; then
        cargo fmt --version >/dev/null 2>&1 || comp+=(rustfmt)
        cargo clippy --version >/dev/null 2>&1 || comp+=(clippy)
        if [ ${#comp[@]} -gt 0 ]; then
            printf '%s\n' "missing ${comp[*]}; add them:" "    rustup component add ${comp[*]}"
        fi
    fi
    return 0
}
