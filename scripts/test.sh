#!/usr/bin/env bash
# Runs Periscope's whole test suite on a fresh machine: installs what the tests need,
# then builds everything once in the dev profile and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

# Tools the tests use. The end-to-end tests start the real `periscope` binary and talk to
# it with the OpenTelemetry Rust SDK, reqwest and tonic (cargo dependencies), read the
# Parquet files it writes with the `parquet` crate and with DuckDB and pyarrow (Python),
# compare PromQL answers with a real Prometheus, route alerts through a real
# Alertmanager, and open the UI in a real Chromium.
if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is missing: install Rust with rustup first (https://rustup.rs)" >&2
  exit 1
fi
if ! command -v python3 >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq python3 python3-pip
  else
    echo "python3 is missing: install it (the Parquet interoperability test uses DuckDB and pyarrow)" >&2
    exit 1
  fi
fi
if ! python3 -c 'import duckdb, pyarrow' 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    'duckdb==2.0.1' 'pyarrow==26.0.1' \
    || python3 -m pip install --quiet --break-system-packages 'duckdb==2.0.1' 'pyarrow==26.0.1'
fi

# The PromQL test compares answers with a real Prometheus (Debian's package, 2.42).
if ! command -v prometheus >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus
  else
    echo "prometheus is missing: install Prometheus 2.x (the PromQL test runs it side by side)" >&2
    exit 1
  fi
fi

# The alerting test sends Periscope's alerts through a real Alertmanager (Debian's
# package, 0.25), started by the test on loopback without its cluster port.
if ! command -v prometheus-alertmanager >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus-alertmanager
  else
    echo "prometheus-alertmanager is missing: install Alertmanager (the alerting test routes alerts through it)" >&2
    exit 1
  fi
fi

# The UI tests drive a real headless Chromium through ChromeDriver (Debian's packages).
if ! command -v chromedriver >/dev/null 2>&1 || ! command -v chromium >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver
  else
    echo "chromium and chromedriver are missing: install them (the UI tests drive a real browser)" >&2
    exit 1
  fi
fi

export RUST_BACKTRACE=1
# One build for all tests; unit tests run per crate, end-to-end tests in one binary.
cargo test --workspace --all-targets --no-fail-fast "$@"
