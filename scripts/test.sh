#!/usr/bin/env bash
# Install missing dependencies, then build and run every test (debug).
# Extra arguments go to `cargo test`, e.g. scripts/test.sh --test psql_smoke
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
source scripts/env.sh
cargo test --workspace "$@"
