#!/usr/bin/env bash
# Builds a Go test peer whose source lives in this repository (tests/peers/NAME, its own
# module with a go.sum) into target/NAME/bin/NAME: `go-peer.sh NAME`. Its module and build
# caches stay under target/NAME, so a rebuild after a source change takes seconds and
# downloads nothing.
set -euo pipefail

NAME="$1"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DIR="$ROOT/target/$NAME"
command -v go >/dev/null || { echo "$NAME: the go command is needed to build it" >&2; exit 1; }
export GOPATH="$DIR/gopath" GOMODCACHE="$DIR/gopath/pkg/mod" GOCACHE="$DIR/gocache"
export GOFLAGS="-mod=readonly -buildvcs=false" GOTOOLCHAIN=local CGO_ENABLED=0
mkdir -p "$DIR/bin"
cd "$ROOT/tests/peers/$NAME"
go build -trimpath -o "$DIR/bin/$NAME.tmp" .
mv "$DIR/bin/$NAME.tmp" "$DIR/bin/$NAME"
