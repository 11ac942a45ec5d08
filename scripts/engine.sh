#!/usr/bin/env bash
# The one place that makes a Docker engine in Swarm mode answer, for `make test`, `make swarm-up`
# and `make demo` alike.
#
#   engine.sh ensure              engine + one-node Swarm, or fail with one clear line
#   engine.sh ensure-if-possible  the same; where it cannot (not root, not Debian) say the
#                                 end-to-end tests will be skipped and exit 0
#   engine.sh status              print whether the engine and the Swarm answer
#
# Quiet and quick when everything is already up; safe to run from several shells at once.
set -euo pipefail

LOG=${SWARMSCALE_DOCKERD_LOG:-/var/log/swarmscale-dockerd.log}
WAIT_S=${SWARMSCALE_ENGINE_WAIT:-60}
LOCK=${SWARMSCALE_ENGINE_LOCK:-/tmp/swarmscale-engine.lock}

say() { echo "engine.sh: $*" >&2; }

engine_answers() {
    command -v docker >/dev/null 2>&1 && docker info --format '{{.ServerVersion}}' >/dev/null 2>&1
}

# Why we cannot start an engine here, or nothing when we can.
cannot_start() {
    if [ -n "${DOCKER_HOST:-}" ] && [ "${DOCKER_HOST}" != "unix:///var/run/docker.sock" ]; then
        echo "DOCKER_HOST=${DOCKER_HOST} does not answer (only a local engine is started by this script)"
    elif [ "$(id -u)" != 0 ]; then
        echo "no Docker engine answers and this user is not root (cannot install or start dockerd)"
    elif ! command -v dockerd >/dev/null 2>&1 && { [ ! -f /etc/debian_version ] || ! command -v apt-get >/dev/null 2>&1; }; then
        echo "no Docker engine answers, dockerd is missing and this is not Debian (cannot apt-get install docker.io)"
    fi
}

install_engine() {
    command -v dockerd >/dev/null 2>&1 && command -v docker >/dev/null 2>&1 && return 0
    say "installing docker.io (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    # The package's init script may try to start the engine; without an init system that can fail
    # harmlessly, and we start dockerd ourselves below either way.
    apt-get install -y -qq docker.io >/dev/null
}

start_engine() {
    engine_answers && return 0
    say "starting dockerd (log: $LOG)"
    mkdir -p "$(dirname "$LOG")"
    # setsid + closed fds: the engine outlives this script and does not hold make's output open.
    setsid dockerd </dev/null >>"$LOG" 2>&1 9>&- &
    local pid=$! waited=0
    until engine_answers; do
        if ! kill -0 "$pid" 2>/dev/null && ! pgrep -x dockerd >/dev/null; then
            say "dockerd exited; last lines of $LOG:"
            tail -n 15 "$LOG" >&2
            return 1
        fi
        if [ "$waited" -ge $((WAIT_S * 10)) ]; then
            say "dockerd did not answer within ${WAIT_S}s; last lines of $LOG:"
            tail -n 15 "$LOG" >&2
            return 1
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
    say "engine up after $((waited / 10)).$((waited % 10))s"
}

ensure_swarm() {
    local state
    state=$(docker info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null || echo unknown)
    case "$state" in
        active) return 0 ;;
        inactive)
            say "initialising a one-node Swarm"
            docker swarm init --advertise-addr 127.0.0.1 >/dev/null
            ;;
        *)
            say "the engine's Swarm state is '$state' (expected active or inactive); see 'docker info'"
            return 1
            ;;
    esac
}

ensure() {
    local soft=$1 why
    if ! engine_answers; then
        why=$(cannot_start)
        if [ -n "$why" ]; then
            if [ "$soft" = 1 ]; then
                say "$why: end-to-end tests will be skipped"
                return 0
            fi
            say "$why"
            return 1
        fi
        # Serialise concurrent callers so only one installs and starts an engine.
        exec 9>"$LOCK"
        flock 9
        if ! engine_answers; then
            install_engine
            start_engine
        fi
        flock -u 9
    fi
    ensure_swarm
}

case "${1:-}" in
    ensure) ensure 0 ;;
    ensure-if-possible) ensure 1 ;;
    status)
        if engine_answers; then
            echo "engine: $(docker info --format '{{.ServerVersion}}'), swarm: $(docker info --format '{{.Swarm.LocalNodeState}}')"
        else
            echo "engine: not answering"
            exit 1
        fi
        ;;
    *)
        echo "usage: $0 ensure|ensure-if-possible|status" >&2
        exit 2
        ;;
esac
