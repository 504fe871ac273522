#!/usr/bin/env bash
# Install missing dependencies, build Weir (release) and start it.
# Arguments go to `weir serve`, e.g. --listen 0.0.0.0:5466 --data-dir /tmp/w
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
source scripts/env.sh
cargo build --release --workspace --bins
exec "$CARGO_TARGET_DIR/release/weir" serve "$@"
