#!/usr/bin/env bash
# Builds Flux's own controllers for the Flux end-to-end tests: source-controller,
# kustomize-controller and helm-controller of ONE Flux release (2.7: v1.7.3 / v1.7.3 / v1.4.3),
# with the `go` command, from the Go module proxy only. Nothing third-party is committed: each
# controller gets a generated build module (in a temporary directory) that requires it and
# repeats the `replace` lines of its own go.mod (all but `./api`, which resolves to the
# published api module of the same version). Binaries land in a cache outside the clone:
#
#   ${OPENOVA_TOOLS:-~/.cache/openova-tools}/flux-<FLUX_VERSION>/{source,kustomize,helm}-controller
#
# Idempotent: exits at once when all three are cached. The proxy lists no helm-controller
# versions at all, but serves exact ones (v1.4.3, v1.4.0, v1.3.0 resolve; v1.5.0 is refused).
set -euo pipefail

FLUX_VERSION="${FLUX_VERSION:-2.7}"
SOURCE_CONTROLLER="${SOURCE_CONTROLLER:-v1.7.3}"
KUSTOMIZE_CONTROLLER="${KUSTOMIZE_CONTROLLER:-v1.7.3}"
HELM_CONTROLLER="${HELM_CONTROLLER:-v1.4.3}"
tools="${OPENOVA_TOOLS:-$HOME/.cache/openova-tools}"
out="$tools/flux-$FLUX_VERSION"
if [ -x "$out/source-controller" ] && [ -x "$out/kustomize-controller" ] && [ -x "$out/helm-controller" ]; then
  echo "build-flux: cached in $out"
  exit 0
fi
export PATH="$PATH:/usr/local/go/bin"
command -v go >/dev/null || { echo "build-flux: no go command (the polyglot machine has Go 1.26 in /usr/local/go/bin)" >&2; exit 1; }
mkdir -p "$out.tmp"
start=$(date +%s)

build() { # name version
  local name="$1" version="$2" module="github.com/fluxcd/$1" work mod
  work="$(mktemp -d)"
  (
    cd "$work"
    go mod init "openova.local/build-$name" >/dev/null 2>&1
    mod="$(go mod download -json "$module@$version" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
    [ -f "$mod" ] || { echo "build-flux: could not fetch $module@$version's go.mod" >&2; exit 1; }
    # Its replace lines (single and block form), minus the local ./api one.
    awk '
      /^replace \(/ { block=1; next }
      block && /^\)/ { block=0; next }
      block { print; next }
      /^replace / { sub(/^replace /, ""); print }
    ' "$mod" | grep -v '=> \./' | while read -r from _arrow to ver; do
      [ -n "$from" ] && go mod edit -replace "$from=$to@$ver"
    done
    go get "$module@$version"
    go build -trimpath -buildvcs=false -ldflags "-s -w" -o "$out.tmp/$name" "$module"
  )
  rm -rf "$work"
  echo "build-flux: $name $version built"
}

build source-controller "$SOURCE_CONTROLLER"
build kustomize-controller "$KUSTOMIZE_CONTROLLER"
build helm-controller "$HELM_CONTROLLER"
rm -rf "$out"
mv "$out.tmp" "$out"
echo "build-flux: built in $(( $(date +%s) - start )) s into $out"
