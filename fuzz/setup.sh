#!/usr/bin/env bash
# What `make fuzz` needs, only what is missing: a nightly toolchain (sanitizer flags) and
# cargo-fuzz from crates.io.
set -euo pipefail
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "fuzz/setup: rustup toolchain install nightly"
  rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz/setup: cargo install cargo-fuzz --locked"
  cargo install cargo-fuzz --locked
fi
