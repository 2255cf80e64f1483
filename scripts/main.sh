#!/usr/bin/env bash
# The main job on embedded defaults: install what is missing, build every binary of the workspace
# (flow-server, flow-loadgen, witness-server, pdm-client, continuum-controller), and run
# flow-server on 127.0.0.1:8080 (in-memory backend, no tokens: loopback only). Ctrl-C stops it.
# Extra arguments go to flow-server (see `flow-server --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
SETUP_SKIP_WASM=${SETUP_SKIP_WASM:-1} scripts/setup.sh
cargo build --release --workspace --bins
exec "$CARGO_TARGET_DIR/release/flow-server" "$@"
