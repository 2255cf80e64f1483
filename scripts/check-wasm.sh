#!/usr/bin/env bash
# Proves that `contract` (and anything passed as arguments) builds for wasm32-unknown-unknown,
# the target of the witness Worker, without rustup's download host (shared/TOOLCHAIN.md route B:
# Debian's rustc-web + rust-web-src + lld, std built from source with -Zbuild-std).
#
#   scripts/check-wasm.sh [-p crate ...]     default: -p contract
set -euo pipefail
cd "$(dirname "$0")/.."
args=("$@"); [ "${#args[@]}" -gt 0 ] || args=(-p contract)
if [ ! -x /usr/bin/rustc ] || [ ! -d /usr/lib/rustlib/src/rust/library ] || [ ! -x /usr/lib/llvm-22/bin/wasm-ld ]; then
  echo "check-wasm: FAIL: Debian wasm toolchain missing; run scripts/setup.sh (apt: rustc-web cargo-web rust-web-src lld-22)" >&2
  exit 1
fi
target_dir=${WASM_TARGET_DIR:-${HOME}/.cache/openova-target-wasm}
start=$(date +%s)
# rust-toolchain.toml would make /usr/bin/cargo ask rustup; point everything at Debian's 1.96.
RUSTUP_TOOLCHAIN= RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1 \
CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER=/usr/lib/llvm-22/bin/wasm-ld \
CARGO_TARGET_DIR="$target_dir" \
  /usr/bin/cargo build --release --target wasm32-unknown-unknown -Zbuild-std=std,panic_abort "${args[@]}"
echo "check-wasm: PASS: ${args[*]} builds for wasm32-unknown-unknown in $(( $(date +%s) - start )) s"
