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
