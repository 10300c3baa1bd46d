#!/usr/bin/env bash
# Builds promtool (github.com/prometheus/prometheus/cmd/promtool), which checks and unit-tests
# the alerting rules in deploy/observability and the dashboard's queries, from Go modules into
# target/promtool/bin/promtool. Cached: if the binary of this version exists this exits at
# once. Cold: minutes of Go build on 2 cores (module download included).
set -euo pipefail

PROM_VERSION="${WARD_PROMETHEUS_VERSION:-v0.316.0}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DIR="${WARD_PROMTOOL_DIR:-$ROOT/target/promtool}"
BIN="$DIR/bin"
STAMP="$BIN/.version"

if [[ -x "$BIN/promtool" && "$(cat "$STAMP" 2>/dev/null)" == "$PROM_VERSION" ]]; then
    exit 0
fi
command -v go >/dev/null || { echo "promtool: the go command is needed to build promtool" >&2; exit 1; }

start=$SECONDS
mkdir -p "$BIN"
export GOPATH="$DIR/gopath" GOMODCACHE="$DIR/gopath/pkg/mod" GOCACHE="$DIR/gocache"
export GOFLAGS="-mod=mod -buildvcs=false" GOTOOLCHAIN=local CGO_ENABLED=0

src="$DIR/src"
rm -rf "$src"
mkdir -p "$src"
cd "$src"
go mod init ward.dev/promtool-peer >/dev/null 2>&1
go get -tool "github.com/prometheus/prometheus/cmd/promtool@$PROM_VERSION" >/dev/null
go build -trimpath -ldflags "-s -w" -o "$BIN/promtool.tmp" github.com/prometheus/prometheus/cmd/promtool
mv "$BIN/promtool.tmp" "$BIN/promtool"
echo "$PROM_VERSION" > "$STAMP"
echo "promtool: built promtool $PROM_VERSION into $BIN/promtool in $((SECONDS - start))s"
