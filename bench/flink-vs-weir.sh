#!/usr/bin/env bash
# Weir and Apache Flink side by side on identical work: the Flink peer's
# Nexmark-shaped datagen Bid table (same DDL, same options) and the same
# queries into a blackhole sink. Runs alternate on this machine; the table
# of ratios goes to stdout (paste it into bench/RESULTS.md).
#
#   bench/flink-vs-weir.sh [ROWS]        (default 5000000)
#
# Needs Flink's venv: python3 -m venv /tmp/flink-venv &&
#   /tmp/flink-venv/bin/pip install apache-flink==2.3.0
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
ROWS=${1:-5000000}
PEER=../shared/peers/flink/run_flink_peer.py
FLINK_PY=${FLINK_PY:-/tmp/flink-venv/bin/python}
CARGO_TARGET_DIR=${WEIR_RELEASE_TARGET:-$HOME/.cache/weir-target-release}
export CARGO_TARGET_DIR
cargo build --release --workspace --bins >&2
R=$CARGO_TARGET_DIR/release

eps() { sed -n 's/.*events_per_s=\([0-9]*\).*/\1/p' | tail -1; }

flink() { "$FLINK_PY" "$PEER" "$@" 2>/dev/null | tail -1; }
weir() { "$R/nexmark" --weir-bin "$R/weir" --events "$ROWS" "$@" 2>/dev/null | tail -1; }

echo "| query | Flink config | Flink events/s | Weir config | Weir events/s | Weir CPU s | Weir peak RSS MB | ratio |"
echo "|---|---|---|---|---|---|---|---|"
row() { # name flink-args weir-args flink-desc weir-desc
  local f w
  f=$(flink $1 "$ROWS" $2)
  w=$(weir --queries "$1" $3)
  echo "$f" >&2; echo "$w" >&2
  local fe we
  fe=$(echo "$f" | eps); we=$(echo "$w" | eps)
  local cpu rss
  cpu=$(echo "$w" | sed -n 's/.*cpu_s=\([0-9.]*\).*/\1/p')
  rss=$(echo "$w" | sed -n 's/.*peak_rss_mb=\([0-9]*\).*/\1/p')
  echo "| $1 | $4 | $fe | $5 | $we | $cpu | $rss | $(python3 -c "print(f'{$we/$fe:.1f}x')") |"
}
row q0 "" "" "p=1, heap" "p=1, ckpt 1 s"
row q1 "" "" "p=1, heap" "p=1, ckpt 1 s"
row q2 "" "" "p=1, heap" "p=1, ckpt 1 s"
row agg "" "" "p=1, heap" "p=1, ckpt 1 s"
row agg "--rocksdb --checkpoint-ms 1000" "--server-arg=--checkpoint-interval=100ms" \
  "p=1, RocksDB, ckpt 1 s" "p=1, ckpt 100 ms"
row agg "--parallelism 2" "--parallelism 2" "p=2, heap" "p=2, ckpt 1 s"
row q0 "--parallelism 2" "--parallelism 2" "p=2, heap" "p=2, ckpt 1 s"
row q1 "--parallelism 2" "--parallelism 2" "p=2, heap" "p=2, ckpt 1 s"
row q2 "--parallelism 2" "--parallelism 2" "p=2, heap" "p=2, ckpt 1 s"
