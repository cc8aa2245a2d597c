#!/usr/bin/env bash
# The main job end to end on the lab: build hactl, bring up the four lab hosts, and show
# what the inventory means. (Later: apply the stack, then a failover test.)
# Leaves the lab running; `target/release/hactl lab down` removes it.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/preflight.sh
require_root_and_cargo

cargo build --release
hactl=target/release/hactl
$hactl lab up -i inventory/lab.yml
$hactl lab status -i inventory/lab.yml
$hactl inventory graph inventory/lab.yml
$hactl inventory list inventory/lab.yml
