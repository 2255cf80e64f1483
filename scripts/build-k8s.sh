#!/usr/bin/env bash
# Builds a real Kubernetes control plane for the tests: kube-apiserver (k8s.io/kubernetes) and
# etcd (go.etcd.io/etcd/server/v3), with the `go` command, from the Go module proxy only. Nothing
# third-party is committed: the build module is generated here, in a temporary directory, and the
# binaries land in a cache outside the clone, keyed by version:
#
#   ${OPENOVA_TOOLS:-~/.cache/openova-tools}/k8s-v<K8S_VERSION>/{kube-apiserver,etcd}
#
# k8s.io/kubernetes's published go.mod requires its staging modules (k8s.io/api, apimachinery,
# apiserver, …) at v0.0.0, which no proxy serves; the build module `replace`s each of them with
# the same release's published version (v0.<minor>.<patch>). etcd is the version kube-apiserver
# itself requires (go.etcd.io/etcd/server/v3 in its go.mod), so the pair is one that upstream
# tests together.
#
# Idempotent: exits at once when both binaries are cached. Prints where they are.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-1.36.3}"
tools="${OPENOVA_TOOLS:-$HOME/.cache/openova-tools}"
out="$tools/k8s-v$K8S_VERSION"
if [ -x "$out/kube-apiserver" ] && [ -x "$out/etcd" ]; then
  echo "build-k8s: cached in $out"
  exit 0
fi
export PATH="$PATH:/usr/local/go/bin"
command -v go >/dev/null || { echo "build-k8s: no go command (the polyglot machine has Go 1.26 in /usr/local/go/bin)" >&2; exit 1; }

minor_patch="${K8S_VERSION#*.}" # 36.3
staging_version="v0.$minor_patch"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
start=$(date +%s)

go mod init openova.local/k8s-build >/dev/null 2>&1
# The release's own go.mod: its staging modules (required at v0.0.0) and its etcd version.
mod="$(go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
[ -f "$mod" ] || { echo "build-k8s: could not fetch k8s.io/kubernetes@v$K8S_VERSION's go.mod" >&2; exit 1; }
staging="$(awk '/^require \(/{r=1;next} r&&/^\)/{r=0} r&&$2=="v0.0.0"{print $1}' "$mod")"
etcd_version="$(awk '$1=="go.etcd.io/etcd/server/v3"{print $2; exit}' "$mod")"
[ -n "$staging" ] && [ -n "$etcd_version" ] || { echo "build-k8s: unexpected go.mod at $mod" >&2; exit 1; }
for m in $staging; do
  go mod edit -replace "$m=$m@$staging_version"
done
go mod edit -require "k8s.io/kubernetes@v$K8S_VERSION"

mkdir -p "$out.tmp"
echo "build-k8s: kube-apiserver v$K8S_VERSION (staging $staging_version), etcd $etcd_version"
# Package paths, so that go.sum gets every module those two programs import.
go get "k8s.io/kubernetes/cmd/kube-apiserver@v$K8S_VERSION" "go.etcd.io/etcd/server/v3@$etcd_version"
# -trimpath and no VCS stamping: the build does not depend on where it ran.
go build -trimpath -buildvcs=false -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=v$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${minor_patch%%.*}" \
  -o "$out.tmp/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
go build -trimpath -buildvcs=false -ldflags "-s -w" -o "$out.tmp/etcd" go.etcd.io/etcd/server/v3
rm -rf "$out"
mv "$out.tmp" "$out"
echo "build-k8s: built in $(( $(date +%s) - start )) s into $out"
