#!/usr/bin/env bash
# Builds Dex (github.com/dexidp/dex), the real OIDC identity provider the OIDC tests run
# against, from Go modules into target/dex/bin/dex. Cached: if the binary exists this exits
# at once. Cold: a few minutes of Go build on 2 cores (module download included).
#
# Dex's release tags (v2.x) are not valid Go module versions (its go.mod says
# github.com/dexidp/dex, no /v2), so the module proxy serves a release only as the
# pseudo-version of its tagged commit. Its go.mod also replaces api/v2 with ./api/v2,
# so `go install module@version` is refused; the source is fetched with
# `go mod download` and built in a copy of it, with ./api/v2 (a nested module, so left out
# of the module zip) filled from the published api/v2 release of that time. The checksum
# database here does not answer for that pseudo-version, so GONOSUMDB covers
# github.com/dexidp/dex alone; every dependency is still checked against Dex's own go.sum.
set -euo pipefail

DEX_RELEASE="${WARD_DEX_RELEASE:-v2.44.0}"
# The commit tagged v2.44.0 (2025-10-23), as a pseudo-version, and the api/v2 release its
# ./api/v2 matches (the newest before it; it has the ListClients call the server uses).
DEX_MODULE_VERSION="${WARD_DEX_MODULE_VERSION:-v0.0.0-20251023092925-7e2225c0e659}"
DEX_API_VERSION="${WARD_DEX_API_VERSION:-v2.4.0}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DIR="${WARD_DEX_DIR:-$ROOT/target/dex}"
BIN="$DIR/bin"

[[ -x "$BIN/dex" ]] && exit 0
command -v go >/dev/null || { echo "dex: the go command is needed to build Dex" >&2; exit 1; }

start=$SECONDS
mkdir -p "$BIN"
# A private GOPATH/module cache under target/dex, so a rebuild after `rm bin/dex` downloads
# nothing. CGO is off: Dex then builds without SQLite, and the in-memory storage the tests
# use needs none.
export GOPATH="$DIR/gopath" GOMODCACHE="$DIR/gopath/pkg/mod" GOCACHE="$DIR/gocache"
export GOFLAGS="-mod=readonly -buildvcs=false" GOTOOLCHAIN=local CGO_ENABLED=0
export GONOSUMDB=github.com/dexidp/dex

# Prints the module cache directory of module@version, downloading it if need be.
module_dir() {
    local json
    json="$(go mod download -json "$1")" || {
        echo "dex: could not fetch $1:" >&2; echo "$json" >&2; return 1; }
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p' <<<"$json"
}
dex_dir="$(module_dir "github.com/dexidp/dex@$DEX_MODULE_VERSION")"
api_dir="$(module_dir "github.com/dexidp/dex/api/v2@$DEX_API_VERSION")"
[[ -f "$dex_dir/cmd/dex/main.go" && -f "$api_dir/go.mod" ]] || {
    echo "dex: the downloaded Dex source is incomplete ($dex_dir, $api_dir)" >&2; exit 1; }

src="$DIR/src"
rm -rf "$src"
cp -r "$dex_dir" "$src"
chmod -R u+w "$src"
rm -rf "$src/api/v2"
cp -r "$api_dir" "$src/api/v2"
chmod -R u+w "$src/api/v2"

go -C "$src" build -trimpath -ldflags "-s -w -X main.version=$DEX_RELEASE" \
    -o "$BIN/dex.tmp" ./cmd/dex
mv "$BIN/dex.tmp" "$BIN/dex"
echo "$DEX_RELEASE $DEX_MODULE_VERSION" > "$BIN/.version"
echo "dex: built Dex $DEX_RELEASE into $BIN/dex in $((SECONDS - start))s"
