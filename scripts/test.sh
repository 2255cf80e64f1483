#!/usr/bin/env bash
# The whole test suite. Installs the real components the tests start (NATS, PowerDNS,
# PostgreSQL, workerd; scripts/setup.sh, idempotent), then runs every test of the workspace.
# Extra arguments go to `cargo test` (e.g. `scripts/test.sh -p contract`).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
scripts/setup.sh
# The witness tests serve the built wasm Worker in workerd; build it from the current sources.
scripts/build-witness.sh
if [ "$#" -eq 0 ]; then
  # Charts rendered by Helm's engine (fast; prints "charts: N passed, N failed").
  python3 charts/tests/test_charts.py
  python3 charts/tests/test_audits.py
  set -- --workspace
fi
exec cargo test "$@"
