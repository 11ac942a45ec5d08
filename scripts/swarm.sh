#!/usr/bin/env bash
# The stack on the local Swarm.
#
#   swarm.sh image   base image (once) + wheelhouse + swarmscale/lb:TAG and swarmscale/web:TAG
#   swarm.sh up      engine + Swarm, images, `docker stack deploy`, wait until a changed balancer task
#                    is replaced and 127.0.0.1:8080 serves
#   swarm.sh down    remove the stack and wait until its services, containers and network are gone
#
# Tunables are environment variables read by deploy/stack.yml (LB_TARGET_INFLIGHT=8 swarm.sh up),
# LB_PUBLISHED_PORT / LB_ADMIN_PUBLISHED_PORT (8080 / 8081) and LB_DOCKER_SOCKET among them.
# SWARMSCALE_STACK (default swarmscale) names the stack; SWARMSCALE_UP_TIMEOUT bounds the wait.
# SWARMSCALE_FILE (default deploy/stack.yml) is the stack file; `make demo` uses deploy/demo.yml
# (with SWARMSCALE_PROBE_PATH=/vote/: up waits until that path serves, `/` by default; with web at
# zero replicas, LB_MIN_REPLICAS=0, only until the balancer's /healthz answers: no cold start).
# A re-deploy keeps each service's current replicas: <NAME>_REPLICAS (WEB_REPLICAS, VOTE_REPLICAS, ...)
# is read from the running service before `docker stack deploy` (the file's value otherwise).
# SWARMSCALE_TAG (default dev) tags the images, so two checkouts can share one engine.
set -euo pipefail
cd "$(dirname "$0")/.."

STACK=${SWARMSCALE_STACK:-swarmscale}
FILE=${SWARMSCALE_FILE:-deploy/stack.yml}
PROBE=${SWARMSCALE_PROBE_PATH:-/}   # a path the stack answers 200 on once it serves
UP_TIMEOUT=${SWARMSCALE_UP_TIMEOUT:-120}
DOWN_TIMEOUT=${SWARMSCALE_DOWN_TIMEOUT:-90}
BASE=${SWARMSCALE_BASE_IMAGE:-swarmscale/base:bookworm}
TAG=${SWARMSCALE_TAG:-dev}
LB_TAG=swarmscale/lb:$TAG
WEB_TAG=swarmscale/web:$TAG
# Content tags of this TAG's family: the bare id for dev (as before), TAG-id otherwise.
FAMILY=$([ "$TAG" = dev ] && echo "" || echo "$TAG-")
LOCK=/tmp/swarmscale-image.lock
PORT=${LB_PUBLISHED_PORT:-8080}
ADMIN_PORT=${LB_ADMIN_PUBLISHED_PORT:-8081}

say() { echo "swarm.sh: $*" >&2; }

# Quiet on success, the whole build log on failure.
build() {
    local tag=$1 out
    shift
    if ! out=$(docker build --force-rm --build-arg BASE_IMAGE="$BASE" -t "$tag" "$@" . 2>&1); then
        echo "$out" >&2
        say "building $tag failed"
        return 1
    fi
}

image() {
    bash scripts/engine.sh ensure
    # Several callers (make image, test sessions) may build at once; one at a time is faster.
    exec 8>"$LOCK"
    flock 8
    local start=$SECONDS
    bash scripts/base-image.sh "$BASE"
    bash scripts/wheels.sh build/wheels
    build "$LB_TAG" -f Dockerfile
    build "$WEB_TAG" -f deploy/web/Dockerfile
    flock -u 8
    say "images $LB_TAG and $WEB_TAG ready ($((SECONDS - start))s)"
}

# 0 when GET http://127.0.0.1:PORT/PATH answers 200 within a second.
http_ok() {
    python3 - "$1" "$2" <<'EOF'
import sys, urllib.request
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}{sys.argv[2]}", timeout=1) as r:
        sys.exit(0 if r.status == 200 else 1)
except Exception:
    sys.exit(1)
EOF
}

explain_failure() {
    say "the stack did not serve within ${UP_TIMEOUT}s; its tasks:"
    docker stack ps "$STACK" --no-trunc --format '{{.Name}} {{.CurrentState}} {{.Error}}' 2>&1 | head -20 >&2
    say "last lines of the balancer's log:"
    docker service logs --tail 20 "${STACK}_lb" 2>&1 | tail -20 >&2
}

# `docker stack deploy` sets every service to the file's replicas (leaving `replicas:` out does not
# help on this engine: docker/cli#2235), which would undo the balancer's scaling under load. So each
# running service's current count is exported as <SHORT_NAME>_REPLICAS for the file to use, unless
# the caller set it. The balancer itself (lb) always runs one.
keep_replicas() {
    local name replicas short var
    while read -r name replicas; do
        [ -n "$name" ] || continue
        short=${name#"${STACK}_"}
        [ "$short" = lb ] && continue
        var=$(echo "$short" | tr '[:lower:]-' '[:upper:]_')_REPLICAS
        if [ -z "${!var:-}" ] && [[ "$replicas" =~ ^[0-9]+$ ]]; then
            export "$var=$replicas"
            say "keeping $name at $replicas replicas ($var)"
        fi
    done < <(docker service ls --filter "label=com.docker.stack.namespace=$STACK" \
                 --format '{{.Name}}' 2>/dev/null | while read -r n; do
                 echo "$n $(docker service inspect -f '{{if .Spec.Mode.Replicated}}{{.Spec.Mode.Replicated.Replicas}}{{end}}' "$n" 2>/dev/null)"
             done)
    # First deploy: start from the minimum the balancer will keep anyway.
    export WEB_REPLICAS=${WEB_REPLICAS:-${LB_MIN_REPLICAS:-1}}
}

# A re-deploy that changes the balancer (a new image, a setting) replaces its task: stop-first, as
# its host-mode ports cannot be bound twice. Until that update completes the old task still answers
# the probes below, and a load started then would meet the swap (seen: a re-run of `make demo` after
# a code change lost 2,854 requests in its first seconds). So up waits for the update to complete.
# The engine says whether one started: the service's UpdateStatus.StartedAt moves (a deploy that
# changes nothing clears UpdateStatus; comparing specs is no guide: the client and engine normalise
# them differently).
lb_update() {   # "<StartedAt> <State>" of the balancer's last update, "absent" without a service
    docker service inspect -f '{{if .UpdateStatus}}{{.UpdateStatus.StartedAt}} {{.UpdateStatus.State}}{{end}}' \
        "${STACK}_lb" 2>/dev/null || echo absent
}

wait_for_lb_update() {  # $1: lb_update before the deploy, $2: when the deploy began
    local before=${1% *} start=$2 lb="${STACK}_lb" now state asked=$SECONDS
    [ "$1" = absent ] && return 0   # created just now: nothing old is answering
    while true; do
        now=$(lb_update)
        state=${now##* }
        if [ -n "$now" ] && [ "${now% *}" != "$before" ]; then
            case "$state" in
                completed) return 0 ;;
                paused|rollback_*)
                    say "the update of $lb stopped: $state"
                    explain_failure
                    return 1 ;;
            esac
            [ "$asked" = done ] || say "waiting for $lb to be replaced by its new task"
            asked=done
        elif [ "$asked" != done ] && [ $((SECONDS - asked)) -ge 3 ]; then
            return 0    # no update started: the balancer's task was left as it was
        fi
        if [ $((SECONDS - start)) -ge "$UP_TIMEOUT" ]; then
            say "the update of $lb did not complete in ${UP_TIMEOUT}s"
            explain_failure
            return 1
        fi
        sleep 0.2
    done
}

up() {
    image   # ensures the engine and the Swarm first
    # A tag per image content: re-deploying after a rebuild rolls the services onto the new image
    # (the same `:dev` tag would leave the spec unchanged and the old containers running).
    local lb_id web_id
    lb_id=$(docker image inspect -f '{{.Id}}' "$LB_TAG" | cut -d: -f2 | head -c 12)
    web_id=$(docker image inspect -f '{{.Id}}' "$WEB_TAG" | cut -d: -f2 | head -c 12)
    lb_id=$FAMILY$lb_id
    web_id=$FAMILY$web_id
    docker tag "$LB_TAG" "swarmscale/lb:$lb_id"
    docker tag "$WEB_TAG" "swarmscale/web:$web_id"
    # Older content tags would pile up with every rebuild; only the current ones are deployed.
    docker images --format '{{.Repository}}:{{.Tag}}' \
        | grep -E "^swarmscale/(lb|web):$FAMILY[0-9a-f]{12}\$" \
        | grep -v -x -e "swarmscale/lb:$lb_id" -e "swarmscale/web:$web_id" \
        | xargs -r docker rmi >/dev/null 2>&1 || true
    export LB_IMAGE=${LB_IMAGE:-swarmscale/lb:$lb_id}
    export WEB_IMAGE=${WEB_IMAGE:-swarmscale/web:$web_id}

    keep_replicas
    local start=$SECONDS
    local lb_before
    lb_before=$(lb_update)
    # No registry: never ask one for the image's digest.
    local out
    if ! out=$(docker stack deploy --resolve-image never -c "$FILE" "$STACK" 2>&1); then
        echo "$out" >&2
        say "docker stack deploy failed"
        return 1
    fi
    wait_for_lb_update "$lb_before" "$start" || return 1
    # At zero replicas (LB_MIN_REPLICAS=0) a request to the service would be a cold start that
    # keeps it up for a while: the balancer answering /healthz is enough then.
    local probe_service=1
    [ "${WEB_REPLICAS:-1}" = 0 ] && [ "$PROBE" = / ] && probe_service=0
    until http_ok "$ADMIN_PORT" /healthz && { [ "$probe_service" = 0 ] || http_ok "$PORT" "$PROBE"; }; do
        if [ $((SECONDS - start)) -ge "$UP_TIMEOUT" ]; then
            explain_failure
            return 1
        fi
        sleep 0.5
    done
    say "stack $STACK serving on http://127.0.0.1:$PORT (admin :$ADMIN_PORT) after $((SECONDS - start))s"
}

down() {
    if ! docker info >/dev/null 2>&1; then
        say "no engine answers: nothing to remove"
        return 0
    fi
    local start=$SECONDS filter="label=com.docker.stack.namespace=$STACK"
    docker stack rm "$STACK" >/dev/null 2>&1 || true
    # stack rm returns before the containers stop; the next `up` needs the host ports free.
    while [ -n "$(docker service ls -q --filter "$filter")$(docker ps -aq --filter "$filter")$(docker network ls -q --filter "$filter")" ]; do
        if [ $((SECONDS - start)) -ge "$DOWN_TIMEOUT" ]; then
            say "stack $STACK still has services, containers or networks after ${DOWN_TIMEOUT}s"
            return 1
        fi
        sleep 0.5
    done
    say "stack $STACK removed ($((SECONDS - start))s)"
}

case "${1:-}" in
    image) image ;;
    up) up ;;
    down) down ;;
    *)
        echo "usage: $0 image|up|down" >&2
        exit 2
        ;;
esac
