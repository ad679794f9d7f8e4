# Sourced by bench/start.sh and bench/pss.sh (with $0 being the script): a work dir under
# target/ (or $BENCH_DIR), removed on exit; the release build with the static supervisor;
# the C timer compiled into the work dir (BENCH_NO_BUILD=1: the release build is
# there already, as in tests/vm/bench.sh); the data dir and library exported for it.
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# Work files under target/ (override with BENCH_DIR): start.sh prints what a mkdir costs.
mkdir -p "${BENCH_DIR:=$ROOT/target}"
WORK=$(mktemp -d "$BENCH_DIR/execdriver-$(basename "$0" .sh)bench.XXXXXX")
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT

if [ -z "${BENCH_NO_BUILD:-}" ]; then
    echo "== cargo build --release, and the supervisor again as a static binary"
    "$ROOT/bench/build-release.sh"
fi
echo "== gcc -O2 bench/start_bench.c"
gcc -O2 -Wall -Wextra -Werror -o "$WORK/start_bench" "$ROOT/bench/start_bench.c" -ldl

mkdir -p "$WORK/data"
export EXECDRIVER_DATA_DIR="$WORK/data"
export EXECDRIVER_LIB="$ROOT/target/release/libexecdriver.so"
