#!/usr/bin/env bash
# Builds the witness Worker (Rust -> wasm32 -> wasm-bindgen module + ES entry) into
# witness-worker/build/, without rustup's download host (shared/TOOLCHAIN.md route B):
# Debian's rustc-web with -Zbuild-std, then wasm-bindgen-cli matching Cargo.lock.
# Prints the bundle size (raw and gzip). Output: build/entry.mjs, build/index.js,
# build/index_bg.wasm — what wrangler.toml's `main` and tests/workerd.rs serve.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
out=witness-worker/build
tools="${OPENOVA_TOOLS:-$HOME/.cache/openova-tools}"
bindgen="$tools/bin/wasm-bindgen"
[ -x "$bindgen" ] || bindgen=$(command -v wasm-bindgen || true)
if [ -z "$bindgen" ]; then
  echo "build-witness: FAIL: wasm-bindgen not found; run scripts/setup.sh" >&2; exit 1
fi
want=$(awk '/^name = "wasm-bindgen"$/{getline; print $3}' Cargo.lock | tr -d '"' | head -n1)
have=$("$bindgen" --version | awk '{print $2}')
if [ -n "$want" ] && [ "$want" != "$have" ]; then
  echo "build-witness: FAIL: wasm-bindgen $have but Cargo.lock has $want; run scripts/setup.sh" >&2; exit 1
fi
WASM_TARGET_DIR="${WASM_TARGET_DIR:-$HOME/.cache/openova-target-wasm}"
WASM_BINDGEN_USE_JS_SYS=1 WASM_TARGET_DIR="$WASM_TARGET_DIR" scripts/check-wasm.sh -p witness-worker --lib >&2
rm -rf "$out"; mkdir -p "$out"
"$bindgen" "$WASM_TARGET_DIR/wasm32-unknown-unknown/release/witness_worker.wasm" \
  --out-dir "$out" --target module --out-name index --no-typescript
# workerd imports a compiled wasm module with a plain import (not `import source`).
sed -i 's/^import source \(.*\)$/import \1/' "$out/index.js"
cp witness-worker/js/entry.mjs "$out/entry.mjs"
raw=$(stat -c %s "$out/index_bg.wasm")
gz=$(gzip -9 -c "$out/index_bg.wasm" | wc -c)
echo "build-witness: PASS: $out/index_bg.wasm raw=${raw} bytes gzip=${gz} bytes"
