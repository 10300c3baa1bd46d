#!/usr/bin/env bash
# `make run` until the local mesh demo lands: creates a trust domain's CA and a workload
# SVID in a temporary directory with the real `ward` commands, and shows what they made.
set -euo pipefail

ward=${WARD:-target/debug/ward}
dir=$(mktemp -d -t ward-run.XXXXXX)
td=example.org
id=spiffe://$td/ns/default/sa/web

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

step "$ward" ca init --trust-domain "$td" --dir "$dir/ca"
step "$ward" cert issue --ca-dir "$dir/ca" --spiffe-id "$id" --ttl 1h \
  --cert "$dir/web.pem" --key "$dir/web.key"
step "$ward" cert inspect "$dir/web.pem" --bundle "$dir/ca/bundle.pem"
step ls -l "$dir" "$dir/ca"
if command -v openssl >/dev/null 2>&1; then
  step openssl verify -CAfile "$dir/ca/bundle.pem" "$dir/web.pem"
fi
printf '\nEverything is in %s (delete it when done).\n' "$dir"
