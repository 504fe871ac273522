#!/usr/bin/env bash
# Nexmark queries with joins and subqueries, Weir and Apache Flink side by
# side on identical work: the Flink peer's person / auction / bid datagen
# tables (same DDL, same event mix) and the same query into a blackhole
# sink, at parallelism 1 and 2; then RisingWave's extended queries
# q101-q104 (Weir only: the Flink peer does not have them). Runs alternate
# on this machine; the Markdown table goes to stdout.
#
#   bench/joins-vs-flink.sh [EVENTS] [PARALLELISMS]   (default 10000000 "1 2")
#
# Needs Flink's venv: python3 -m venv /tmp/flink-venv &&
#   /tmp/flink-venv/bin/pip install apache-flink==2.3.0
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
EVENTS=${1:-10000000}
PARS=${2:-"1 2"}
PEER=../shared/peers/flink/run_flink_peer.py
FLINK_PY=${FLINK_PY:-/tmp/flink-venv/bin/python}
CARGO_TARGET_DIR=${WEIR_RELEASE_TARGET:-$HOME/.cache/weir-target-release}
export CARGO_TARGET_DIR
cargo build --release --workspace --bins >&2
R=$CARGO_TARGET_DIR/release

field() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p" | tail -1; }
# Flink keeps its state on the heap of a 4 GB task manager; Weir gets a
# comparable state budget (RocksDB block cache, memtables, operator caches).
CACHE_MB=${WEIR_STATE_CACHE_MB:-2048}
# A query that fails prints no numbers; the table goes on.
flink() { "$FLINK_PY" "$PEER" "$@" 2>/dev/null | tail -1 || true; }
weir() {
  "$R/nexmark" --weir-bin "$R/weir" --events "$EVENTS" \
    --server-arg=--state-cache-mb="$CACHE_MB" "$@" 2>/dev/null | tail -1 || true
}

echo "| query | p | Flink events/s | Flink CPU s | Weir events/s | Weir CPU s | Weir events/s per CPU s | Weir peak RSS MB | Weir data MB | rows out | ratio |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for p in $PARS; do
  for q in q3 q4 q20 q23 q101 q102 q103 q104; do
    f=""
    case $q in q3|q4|q20|q23) f=$(flink "$q" "$EVENTS" --parallelism "$p") ;; esac
    w=$(weir --queries "$q" --parallelism "$p")
    echo "$f" >&2; echo "$w" >&2
    fe=$(echo "$f" | field events_per_s); fc=$(echo "$f" | field cpu_s)
    we=$(echo "$w" | field events_per_s); wc=$(echo "$w" | field cpu_s)
    rss=$(echo "$w" | field peak_rss_mb); data=$(echo "$w" | field data_mb)
    rows=$(echo "$w" | field rows_out)
    per=$(python3 -c "print(f'{$we/$wc:.0f}')" 2>/dev/null || echo "-")
    ratio=$( [[ -n "$fe" && -n "$we" ]] && python3 -c "print(f'{$we/$fe:.1f}x')" || echo "-")
    echo "| $q | $p | ${fe:--} | ${fc:--} | ${we:--} | ${wc:--} | $per | ${rss:--} | ${data:--} | ${rows:--} | $ratio |"
  done
done
