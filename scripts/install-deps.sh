#!/usr/bin/env bash
# Installs what a fresh machine of this kind lacks for building and testing ward.
# Idempotent: installs only what is missing.
set -euo pipefail

need_apt=()
# nft: `ward-proxy init` writes the capture rules with it, iptables-restore on machines
# without nft (its tests run both in network namespaces); ip (iproute2): the tests make
# those namespaces. gcc: cgo for SPIRE's SQLite datastore. redis-server: the gateway's
# shared rate limits are tested against it.
# nghttp (nghttp2-client): shows the SETTINGS the gateway sends to HTTP/2 clients.
# chromium + chromedriver: the control plane's dashboard is tested in a headless browser.
for tool in openssl:openssl curl:curl make:make gcc:gcc nft:nftables iptables-restore:iptables ip:iproute2 redis-server:redis-server nghttp:nghttp2-client chromium:chromium chromedriver:chromium-driver; do
  bin=${tool%%:*}; pkg=${tool##*:}
  command -v "$bin" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "install-deps: apt-get install ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

for component in rustfmt clippy; do
  if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
    rustup component add "$component"
  fi
done

if ! cargo nextest --version >/dev/null 2>&1; then
  cargo install cargo-nextest --locked
fi

# The benchmark harness runs in smoke mode in the test suite, so its tools are needed too.
"$(dirname "$0")/../bench/setup.sh"

# Python tools the suite runs, each pinned in its own venv under target/ so the system
# Python stays untouched: venv_tool DIR PACKAGE VERSION.
venv_tool() {
  local venv="$(dirname "$0")/../target/$1/venv"
  if ! "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('$2') != '$3')" 2>/dev/null; then
    echo "install-deps: $2==$3 into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "$2==$3"
  fi
}
# sslyze scans the gateway's public TLS.
venv_tool tls-scan sslyze 6.3.1
# py-spiffe: a Python app's Workload API client, run against the sidecar's Workload API.
venv_tool py-spiffe spiffe 0.3.2
# selenium drives Debian's chromium through its chromedriver for the dashboard's test.
venv_tool browser selenium 4.38.0
