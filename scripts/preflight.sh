# Sourced by the scripts beside it: what every one of them needs before it starts.

# Root (the lab makes a bridge, mounts and containers) and a Rust toolchain.
require_root_and_cargo() {
    local name
    name="scripts/$(basename "$0")"
    if [ "$(id -u)" != 0 ]; then
        echo "$name: run it as root (sudo): the lab makes a bridge, mounts and containers" >&2
        exit 2
    fi
    command -v cargo >/dev/null || { echo "$name: needs a Rust toolchain (cargo) — see README.md" >&2; exit 2; }
}

# What building hactl (protoc, for etcd-client's gRPC code), the lab and the tests (openssl makes
# the HTTPS probe test's certificates, chromium renders failover-test's HTML report) need on this
# machine; `hactl lab up` would install the lab's part too, but the Ansible cross-check needs
# python3 with venv before any test runs.
install_packages() {
    local packages missing p policy own_policy
    packages=(debootstrap systemd-container dbus apt-cacher-ng iproute2 openssh-client python3 python3-venv
        protobuf-compiler libprotobuf-dev openssl chromium)
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
        if [ $own_policy = 1 ]; then rm -f $policy; fi
    fi
}
