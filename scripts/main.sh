#!/usr/bin/env bash
# The main jobs on embedded defaults: install what is missing, build every binary of the
# workspace (flow-server, flow-loadgen, witness-server, pdm-client, continuum-controller,
# continuum-lab, flow-adapter-flux), then
#   scripts/main.sh [flow-server] [args]   run flow-server on 127.0.0.1:8080 (in-memory backend,
#                                          no tokens: loopback only); Ctrl-C stops it
#   scripts/main.sh drill [args]           Continuum's drill on the two-region lab (default:
#                                          TTL 6 s, 20 kills, 10 switchovers, the failback)
#   scripts/main.sh campaign [args]        seeded fault campaign (default: the stored README run,
#                                          40 runs, seed 20261207, TTL 6 s; as root in network
#                                          namespaces)
#   scripts/main.sh lab [args]             keep the two-region lab running (Ctrl-C stops it)
#   scripts/main.sh cluster                a real kube-apiserver + etcd with our CRDs, for local
#                                          debugging; prints its KUBECONFIG (Ctrl-C stops it)
# Extra arguments go to the program (see its --help).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
SETUP_SKIP_WASM=${SETUP_SKIP_WASM:-1} scripts/setup.sh
cargo build --release --workspace --bins
bin="$CARGO_TARGET_DIR/release"
case "${1:-flow-server}" in
  drill)
    shift
    if [ "$#" -eq 0 ]; then set -- --ttl 6 --renew 2 --kills 20 --switchovers 10; fi
    exec "$bin/continuum-lab" drill "$@" ;;
  campaign)
    shift
    # The README's campaign table comes from this command's stored output
    # (continuum-controller/drills/campaign-ttl6-seed20261207-40runs.txt).
    if [ "$#" -eq 0 ]; then set -- --runs 40 --seed 20261207 --ttl 6 --renew 2; fi
    exec "$bin/continuum-lab" campaign "$@" ;;
  cluster)
    shift
    bash scripts/build-k8s.sh
    exec cargo run -q --release -p testkit --example cluster ;;
  lab)
    shift
    if [ "$#" -eq 0 ]; then set -- --ttl 6 --renew 2; fi
    exec "$bin/continuum-lab" up "$@" ;;
  flow-server)
    [ "$#" -gt 0 ] && shift
    exec "$bin/flow-server" "$@" ;;
  *)
    exec "$bin/flow-server" "$@" ;;
esac
