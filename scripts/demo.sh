#!/usr/bin/env bash
# The main job end to end on the lab: build hactl, bring up the four lab hosts, apply the HA
# stack (etcd, PostgreSQL + Patroni, Prometheus + Alertmanager) and show that it runs.
# Leaves the lab running; `target/release/hactl lab down` removes it.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/preflight.sh
require_root_and_cargo
install_packages

cargo build --release
hactl=target/release/hactl
$hactl lab up -i inventory/lab.yml
$hactl inventory graph inventory/lab.yml
$hactl apply inventory/lab.yml

echo
echo "== etcd"
$hactl lab ssh ptrn-1 "etcdctl --endpoints=http://10.213.0.11:2379 endpoint health --cluster"
echo "== Patroni"
$hactl lab ssh ptrn-1 "curl -s http://10.213.0.11:8008/cluster | python3 -m json.tool"
echo "== Prometheus targets"
$hactl lab ssh prmt-1 "curl -s http://10.213.0.21:9090/api/v1/targets | python3 -c 'import json, sys
for t in json.load(sys.stdin)[\"data\"][\"activeTargets\"]:
    print(t[\"labels\"][\"job\"], t[\"labels\"][\"host\"], t[\"health\"])'"
