#!/usr/bin/env bash
# `make demo`: two frontends (vote, result) behind one balancer on a one-node Swarm (deploy/demo.yml),
# under a step of load on both at once, with its report. `make swarm-up` deploys the single-service
# deploy/stack.yml instead.
# Safe to re-run: the stack is (re)deployed in place and the reports are overwritten.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}

# The demo's settings (the issue's bar); each can be overridden from the environment.
export LB_TARGET_INFLIGHT=${LB_TARGET_INFLIGHT:-8}
export LB_STABLE_WINDOW=${LB_STABLE_WINDOW:-30}
export LB_MIN_REPLICAS=${LB_MIN_REPLICAS:-1}
export LB_MAX_REPLICAS=${LB_MAX_REPLICAS:-10}
export WEB_LATENCY_MS=${WEB_LATENCY_MS:-100}
DEMO_USERS=${DEMO_USERS:-64}

SWARMSCALE_FILE=deploy/demo.yml SWARMSCALE_PROBE_PATH=/vote/ bash scripts/swarm.sh up

mkdir -p reports
echo "== load: a step to ${DEMO_USERS} users, about two minutes (reports/) =="
# loadtest exits 1 when any request failed (like locust): report first, then say so.
rc=0
"$PY" -m loadtest -f loadtest/scenarios/demo.py --shape step \
    --shape-args "low=4,high=${DEMO_USERS},start=15,length=45,end=120" \
    --host "http://127.0.0.1:${LB_PUBLISHED_PORT:-8080}" --lb-admin "http://127.0.0.1:${LB_ADMIN_PUBLISHED_PORT:-8081}" \
    --headless --csv reports/demo --plot reports/demo.png || rc=$?

# The run prints its own report (the summary above) when it has --lb-admin.
echo
echo "Reports: reports/demo_stats.csv reports/demo_stats_history.csv reports/demo_failures.csv reports/demo.png"
echo "The stack is still running (http://127.0.0.1:8080, admin http://127.0.0.1:8081/status). Take it down with: make swarm-down"
if [ "$rc" -ne 0 ]; then
    echo "Some requests failed (see reports/demo_failures.csv)." >&2
fi
exit "$rc"
