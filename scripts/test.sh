#!/usr/bin/env bash
# The whole test suite. Installs the real components the tests start (NATS, PowerDNS,
# PostgreSQL, workerd, etcd + kube-apiserver built with go; scripts/setup.sh, idempotent), then
# runs every test of the workspace.
# Extra arguments go to `cargo test` (e.g. `scripts/test.sh -p contract`).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
scripts/setup.sh
# The witness tests serve the built wasm Worker in workerd; build it from the current sources.
scripts/build-witness.sh
if [ "$#" -gt 0 ]; then
  exec cargo test "$@"
fi
# Charts rendered by Helm's engine (fast; prints "charts: N passed, N failed").
# The audit tests run crdgen (CRD drift): build it first.
cargo build -p continuum-controller --bin crdgen
python3 charts/tests/test_charts.py
python3 charts/tests/test_audits.py
cargo test --workspace
# A short Continuum drill on the real lab (PostgreSQL pair, PowerDNS, NATS, witness-server; as
# root, every region and the witness in a network namespace of its own, partitions by nftables
# DROP): 2 kills, 1 switchover, 1 partition from the witness only, 1 isolation, 2 one-way cuts,
# 1 region split, 1 flapping link, 1 database-only kill, 1 database freeze, 1 controller-only
# kill (database left running), 1 controller pause past the TTL, 1 double failure (the
# superseded old primary must stay fenced), 2 witness kills (short, longer than the TTL), 2
# clock faults (libfaketime), 2 state-directory faults (full, read-only), 1 orphaned primary
# (controller killed, host cut from witness and peer, clients still on it), a switchover crashed
# at each step boundary on both sides, and the approved failback, at TTL 6 s, with the hostile
# client writing to both databases; exits non-zero on a lost transaction, two writers (the
# ledger's rounds, a superseded primary's late write or the checker's split-brain pairs), a
# partitioned primary that did not fence before the grant, or a stuck failover.
cargo build -p continuum-controller -p continuum-lab -p witness-worker --bins
"$CARGO_TARGET_DIR/debug/continuum-lab" drill --ttl 6 --renew 2 \
  --kills 2 --switchovers 1 --partitions 1 --isolations 1 --one-way-cuts 2 --region-splits 1 \
  --flaps 1 --db-kills 1 --db-pauses 1 --ctl-kills 1 --pauses 1 --double-failures 1 \
  --witness-outages 2 --clock-faults 2 --state-dir-faults 2 --orphans 1 --switchover-crashes \
  --seed 20261207 --dir "${TMPDIR:-/tmp}/continuum-ci-drill"
# Evidence that the drill's checker can fail: the same lab WITHOUT its database watchdogs and one
# orphaned primary (its controller SIGKILLed, its host cut from the witness and the peer, its
# clients still reaching it). Nothing then stops the old primary from acknowledging local
# commits after the peer promotes, and the checker, which reads the databases and the recorded
# history, must say so: this drill has to exit 1 with split_brain > 0.
if orphan_out=$("$CARGO_TARGET_DIR/debug/continuum-lab" drill --ttl 6 --renew 2 --kills 0 \
  --switchovers 0 --orphans 1 --no-watchdog --no-failback --seed 20261207 \
  --dir "${TMPDIR:-/tmp}/continuum-ci-no-watchdog" 2>&1); then
  printf '%s\n' "$orphan_out"
  echo "test: the drill without watchdogs passed: its checker cannot see a second writer" >&2
  exit 1
fi
printf '%s\n' "$orphan_out" | grep -E '^(checker|drill|\[orphan)'
printf '%s\n' "$orphan_out" | grep -Eq '^checker: .* split_brain=[1-9]' || {
  echo "test: the drill without watchdogs failed, but not with the checker's split brain" >&2
  exit 1
}
echo "test: without watchdogs the checker found the second writer, as it must"
# The short seeded campaign: 5 runs, each a fresh lab with 2-3 faults drawn from the seed; one
# line per run and a `campaign: …` summary; exits non-zero on a loss, two writers or a stuck run.
"$CARGO_TARGET_DIR/debug/continuum-lab" campaign --runs 5 --seed 20261207 --ttl 6 --renew 2 \
  --dir "${TMPDIR:-/tmp}/continuum-ci-campaign"
