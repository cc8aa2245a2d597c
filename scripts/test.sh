#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and integration tests, and the lab
# end-to-end tests (as root: they make a bridge, mounts and nspawn machines).
# Installs the system packages it needs; tears the lab down however the tests end.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/preflight.sh
require_root_and_cargo

install_packages

cargo build --all-targets
trap 'target/debug/hactl lab down -i inventory/lab.yml || true' EXIT

cargo fmt --check
cargo clippy --all-targets -- -D warnings
cargo test --no-fail-fast
