#!/usr/bin/env bash
# Builds one Go program the tests run against from its module, into
# target/NAME/bin/NAME: `go-tool.sh NAME PACKAGE VERSION`, e.g.
#   go-tool.sh jaeger github.com/jaegertracing/jaeger/cmd/jaeger v1.76.0
# Cached: if the binary of that version exists this exits at once. Cold: minutes of Go
# build on 2 cores (module download included), with a private module and build cache under
# target/NAME so a rebuild downloads nothing.
set -euo pipefail

NAME="$1" PACKAGE="$2" VERSION="$3"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DIR="$ROOT/target/$NAME"
BIN="$DIR/bin"
STAMP="$BIN/.version"

if [[ -x "$BIN/$NAME" && "$(cat "$STAMP" 2>/dev/null)" == "$VERSION" ]]; then
    exit 0
fi
command -v go >/dev/null || { echo "$NAME: the go command is needed to build it" >&2; exit 1; }

start=$SECONDS
mkdir -p "$BIN"
export GOPATH="$DIR/gopath" GOMODCACHE="$DIR/gopath/pkg/mod" GOCACHE="$DIR/gocache"
export GOFLAGS="-mod=mod -buildvcs=false" GOTOOLCHAIN=local CGO_ENABLED=0

src="$DIR/src"
rm -rf "$src"
mkdir -p "$src"
cd "$src"
go mod init "ward.dev/$NAME-peer" >/dev/null 2>&1
go get -tool "$PACKAGE@$VERSION" >/dev/null
go build -trimpath -ldflags "-s -w" -o "$BIN/$NAME.tmp" "$PACKAGE"
mv "$BIN/$NAME.tmp" "$BIN/$NAME"
echo "$VERSION" > "$STAMP"
# The build cache is only for rebuilding this one version: gone, it costs disk, not time.
rm -rf "$DIR/gocache"
echo "$NAME: built $PACKAGE $VERSION into $BIN/$NAME in $((SECONDS - start))s"
