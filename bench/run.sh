#!/usr/bin/env bash
# `make bench`: every benchmark script, each printing its figures side by side.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"

echo "== proxy vs nginx (wrk -t1 -c32, tiny response) =="
"$PY" bench/proxy_vs_nginx.py "$@"

echo
echo "== 1 GiB up and down through the balancer (memory stays bounded) =="
"$PY" bench/big_body.py

if [[ -f bench/loadgen_vs_locust.py ]]; then
  echo
  echo "== load generator vs locust =="
  "$PY" bench/loadgen_vs_locust.py
fi
