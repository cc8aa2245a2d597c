#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and integration tests, and the lab
# end-to-end tests (as root: they make a bridge, mounts and nspawn machines).
# Installs the system packages it needs; tears the lab down however the tests end.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/preflight.sh
require_root_and_cargo

# What the lab and the tests need on this machine; `hactl lab up` would install the lab's
# part too, but the Ansible cross-check needs python3 with venv before any test runs.
packages=(debootstrap systemd-container dbus apt-cacher-ng iproute2 openssh-client python3 python3-venv)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]}"
    apt-get update -qq
    # No service of these packages starts on install: the lab runs its own proxy.
    policy=/usr/sbin/policy-rc.d
    own_policy=0
    if [ ! -e $policy ]; then printf '#!/bin/sh\nexit 101\n' > $policy; chmod 755 $policy; own_policy=1; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    [ $own_policy = 1 ] && rm -f $policy
fi

cargo build --all-targets
trap 'target/debug/hactl lab down -i inventory/lab.yml || true' EXIT

cargo fmt --check
cargo clippy --all-targets -- -D warnings
cargo test --no-fail-fast
