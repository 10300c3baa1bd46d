#!/usr/bin/env bash
# Builds Jaeger (github.com/jaegertracing/jaeger, the v2 binary that is an OpenTelemetry
# Collector distribution), the real trace backend the tracing tests export to over OTLP
# (gRPC and HTTP) and read back through its query API. From Go modules into
# target/jaeger/bin/jaeger; cached: if the binary of this version exists this exits at once.
# Cold: several minutes of Go build on 2 cores (module download included).
set -euo pipefail

JAEGER_VERSION="${WARD_JAEGER_VERSION:-v1.76.0}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DIR="${WARD_JAEGER_DIR:-$ROOT/target/jaeger}"
BIN="$DIR/bin"
STAMP="$BIN/.version"

if [[ -x "$BIN/jaeger" && "$(cat "$STAMP" 2>/dev/null)" == "$JAEGER_VERSION" ]]; then
    exit 0
fi
command -v go >/dev/null || { echo "jaeger: the go command is needed to build Jaeger" >&2; exit 1; }

start=$SECONDS
mkdir -p "$BIN"
# A private module and build cache under target/jaeger, so a rebuild downloads nothing.
export GOPATH="$DIR/gopath" GOMODCACHE="$DIR/gopath/pkg/mod" GOCACHE="$DIR/gocache"
export GOFLAGS="-mod=mod -buildvcs=false" GOTOOLCHAIN=local CGO_ENABLED=0

src="$DIR/src"
rm -rf "$src"
mkdir -p "$src"
cd "$src"
go mod init ward.dev/jaeger-peer >/dev/null 2>&1
go get -tool "github.com/jaegertracing/jaeger/cmd/jaeger@$JAEGER_VERSION" >/dev/null
go build -trimpath -ldflags "-s -w" -o "$BIN/jaeger.tmp" github.com/jaegertracing/jaeger/cmd/jaeger
mv "$BIN/jaeger.tmp" "$BIN/jaeger"
echo "$JAEGER_VERSION" > "$STAMP"
echo "jaeger: built Jaeger $JAEGER_VERSION into $BIN/jaeger in $((SECONDS - start))s"
