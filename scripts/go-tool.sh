#!/usr/bin/env bash
# Builds Go programs the tests run against from their module, into target/NAME/bin:
#   go-tool.sh NAME PACKAGE VERSION [MORE_PACKAGES...]
# e.g. go-tool.sh jaeger github.com/jaegertracing/jaeger/cmd/jaeger v1.76.0
# Each package becomes target/NAME/bin/<last path element>; the first one's binary is
# target/NAME/bin/NAME when its last path element is NAME. Packages after the first must be
# in the same module version (e.g. spire-server and spire-agent).
# GO_TOOL_CGO=1 builds with cgo (SPIRE's SQLite datastore needs it; the rest are static).
# Cached: if every binary of that version exists this exits at once. Cold: minutes of Go
# build on 2 cores (module download included), with a private module and build cache under
# target/NAME so a rebuild downloads nothing.
set -euo pipefail

NAME="$1" PACKAGE="$2" VERSION="$3"
shift 3
PACKAGES=("$PACKAGE" "$@")
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DIR="$ROOT/target/$NAME"
BIN="$DIR/bin"
STAMP="$BIN/.version"

built() {
    [[ "$(cat "$STAMP" 2>/dev/null)" == "$VERSION" ]] || return 1
    for pkg in "${PACKAGES[@]}"; do
        [[ -x "$BIN/${pkg##*/}" ]] || return 1
    done
}
built && exit 0
command -v go >/dev/null || { echo "$NAME: the go command is needed to build it" >&2; exit 1; }

start=$SECONDS
mkdir -p "$BIN"
export GOPATH="$DIR/gopath" GOMODCACHE="$DIR/gopath/pkg/mod" GOCACHE="$DIR/gocache"
export GOFLAGS="-mod=mod -buildvcs=false" GOTOOLCHAIN=local CGO_ENABLED="${GO_TOOL_CGO:-0}"

src="$DIR/src"
rm -rf "$src" "$STAMP"
mkdir -p "$src"
cd "$src"
go mod init "ward.dev/$NAME-peer" >/dev/null 2>&1
for pkg in "${PACKAGES[@]}"; do
    go get -tool "$pkg@$VERSION" >/dev/null
done
for pkg in "${PACKAGES[@]}"; do
    out="$BIN/${pkg##*/}"
    go build -trimpath -ldflags "-s -w" -o "$out.tmp" "$pkg"
    mv "$out.tmp" "$out"
done
echo "$VERSION" > "$STAMP"
# The build cache is only for rebuilding this one version: gone, it costs disk, not time.
rm -rf "$DIR/gocache"
echo "$NAME: built ${PACKAGES[*]} $VERSION into $BIN in $((SECONDS - start))s"
