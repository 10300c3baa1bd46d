#!/usr/bin/env bash
# Builds the real Kubernetes peers the Kubernetes tests run against: kube-apiserver and
# kubectl from the k8s.io/kubernetes module, etcd from the etcd server module that release
# depends on. Cached under target/k8s/bin (keyed by version), so a second run costs nothing.
# Cold: a few minutes of Go build on 2 cores; warm: a stat.
set -euo pipefail

K8S_VERSION="${WARD_K8S_VERSION:-v1.36.3}"
STAGING_VERSION="v0.${K8S_VERSION#v1.}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DIR="${WARD_K8S_DIR:-$ROOT/target/k8s}"
BIN="$DIR/bin"
STAMP="$BIN/.version"

if [[ -x "$BIN/kube-apiserver" && -x "$BIN/etcd" && -x "$BIN/kubectl" ]] \
    && [[ "$(cat "$STAMP" 2>/dev/null)" == "$K8S_VERSION" ]]; then
    exit 0
fi
command -v go >/dev/null || { echo "k8s-peers: the go command is needed to build kube-apiserver" >&2; exit 1; }

SRC="$DIR/src"
rm -rf "$SRC"
mkdir -p "$SRC" "$BIN"
cd "$SRC"
export GOFLAGS=-mod=mod GOTOOLCHAIN=local
go mod init ward.dev/k8s-peers >/dev/null 2>&1

# k8s.io/kubernetes points its k8s.io/* staging modules at ./staging; a module that requires
# it must point each one at the published v0.x of the same release instead.
gomod="$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
[[ -f "$gomod" ]] || { echo "k8s-peers: could not fetch k8s.io/kubernetes@$K8S_VERSION" >&2; exit 1; }
go mod edit -require "k8s.io/kubernetes@$K8S_VERSION"
for module in $(sed -n 's|^[[:space:]]*\(k8s.io/[^[:space:]]*\)[[:space:]]*=>[[:space:]]*\./staging/.*|\1|p' "$gomod"); do
    go mod edit -replace "$module=$module@$STAGING_VERSION"
done

cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
go mod tidy >/dev/null

minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
done
go build -trimpath -ldflags "$ldflags" -o "$BIN/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl
go build -trimpath -ldflags "-s -w" -o "$BIN/etcd" go.etcd.io/etcd/server/v3
echo "$K8S_VERSION" > "$STAMP"
echo "k8s-peers: kube-apiserver, kubectl, etcd $K8S_VERSION in $BIN"
