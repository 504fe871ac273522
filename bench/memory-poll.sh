#!/bin/bash
# Where a large GROUP BY's memory goes: start a release `weir` with a
# 256 MB state budget, poll weir_catalog.memory (and the server's RSS)
# every 0.5 s into $OUT/poll.log while agg-bench loads ROWS rows as ROWS
# groups, then print the largest samples. Extra arguments go to the server.
#
#   bench/memory-poll.sh 20000000 [--state-cache-mb 256] ...
#
# Needs psql and `cargo build --release --workspace --bins` first.
set -euo pipefail
ROWS=${1:?rows}
shift
R=${CARGO_TARGET_DIR:-$HOME/.cache/weir-target-release}/release
OUT=${OUT:-$(mktemp -d /tmp/weir-memory.XXXX)}
PORT=${PORT:-6890}
mkdir -p "$OUT"
rm -rf "$OUT/data"
"$R/weir" serve --data-dir "$OUT/data" --listen "127.0.0.1:$PORT" --state-cache-mb 256 "$@" \
    > "$OUT/server.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    psql -h 127.0.0.1 -p "$PORT" -U weir -d weir -Atc "SELECT 1" > /dev/null 2>&1 && break
    sleep 0.1
done
(
    while kill -0 $PID 2> /dev/null; do
        rss=$(awk '/VmRSS/ {print $2}' /proc/$PID/status 2> /dev/null || true)
        mem=$(psql -h 127.0.0.1 -p "$PORT" -U weir -d weir -At -F' ' \
            -c "SELECT name, bytes / 1048576 FROM weir_catalog.memory" 2> /dev/null | tr '\n' ' ')
        echo "$(date +%T) rss_mb=$((${rss:-0} / 1024)) $mem"
        sleep 0.5
    done
) > "$OUT/poll.log" &
"$R/agg-bench" --addr "127.0.0.1:$PORT" --server-pid $PID --rows "$ROWS" --groups "$ROWS" --batch 200000
echo "largest samples (MB) in $OUT/poll.log:"
sort -t= -k2 -n "$OUT/poll.log" | tail -3
