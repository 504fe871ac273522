#!/usr/bin/env bash
# Build Weir in release mode and run the GROUP BY ingest benchmark.
# The last line printed is:
#   weir bench=agg rows=N seconds=S rows_per_s=R peak_rss_mb=M
# Extra arguments go to agg-bench, e.g. bench/run-agg.sh --rows 1000000
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
cargo build --release --workspace --bins >&2
exec "$CARGO_TARGET_DIR/release/agg-bench" --weir-bin "$CARGO_TARGET_DIR/release/weir" "$@"
