#!/usr/bin/env bash
# Runs Periscope's whole test suite on a fresh machine: installs what the tests need,
# then builds everything once in the dev profile and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

# Tools the tests use. The end-to-end tests start the real `periscope` binary and talk to
# it with the OpenTelemetry Rust SDK, reqwest and tonic (all cargo dependencies), and read
# the Parquet files with the `parquet` crate, so nothing else has to be installed yet.
if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is missing: install Rust with rustup first (https://rustup.rs)" >&2
  exit 1
fi

export RUST_BACKTRACE=1
# One build for all tests; unit tests run per crate, end-to-end tests in one binary.
cargo test --workspace --all-targets --no-fail-fast "$@"
