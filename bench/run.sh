#!/usr/bin/env bash
# `make bench`: every benchmark script, each printing its figures side by side (BENCHMARKS.md).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"

echo "== proxy vs nginx (wrk -t1 -c32, tiny response) =="
"$PY" bench/proxy_vs_nginx.py "$@"

echo
echo "== 1 GiB up and down through the balancer (memory stays bounded) =="
"$PY" bench/big_body.py

echo
echo "== load generator vs locust FastHttpUser (32 users, no wait) =="
"$PY" bench/loadgen_vs_locust.py

echo
echo "== scaling policies in the simulator (five traces, every policy and the oracle) =="
"$PY" -m policies.simulate
