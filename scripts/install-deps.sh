#!/usr/bin/env bash
# Installs what a fresh machine of this kind lacks for building and testing ward.
# Idempotent: installs only what is missing.
set -euo pipefail

need_apt=()
# nft: `ward-proxy init` writes the capture rules with it, iptables-restore on machines
# without nft (its tests run both in network namespaces); ip (iproute2): the tests make
# those namespaces. redis-server: the gateway's shared rate limits are tested against it.
for tool in openssl:openssl curl:curl make:make nft:nftables iptables-restore:iptables ip:iproute2 redis-server:redis-server; do
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
