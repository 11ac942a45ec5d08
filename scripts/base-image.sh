#!/usr/bin/env bash
# Builds a local base image (Debian minbase + python3, python3-venv, ca-certificates) for machines
# where no image registry is reachable. Skips when the image already exists.
#
#   base-image.sh [IMAGE]      default swarmscale/base:bookworm (or $SWARMSCALE_BASE_IMAGE)
#
# The mirror is the one apt already uses on this machine, read from its sources at run time.
# Bookworm because its python3 is 3.11, the project's version.
set -euo pipefail

IMAGE=${1:-${SWARMSCALE_BASE_IMAGE:-swarmscale/base:bookworm}}
SUITE=bookworm

say() { echo "base-image.sh: $*" >&2; }

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    exit 0
fi

# First URIs: of a stanza that serves the suite itself (not -security / -updates).
mirror() {
    local file=/etc/apt/sources.list.d/debian.sources uri
    if [ -f "$file" ]; then
        uri=$(awk -v suite="$SUITE" '
            /^URIs:/   { uris = $2 }
            /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == suite) { print uris; exit } }
        ' "$file")
        [ -n "$uri" ] && { echo "$uri"; return; }
    fi
    if [ -f /etc/apt/sources.list ]; then
        uri=$(awk '$1 == "deb" && $2 ~ /^https?:/ && $3 !~ /security|updates/ { print $2; exit }' /etc/apt/sources.list)
        [ -n "$uri" ] && { echo "$uri"; return; }
    fi
    return 1
}

MIRROR=$(mirror) || { say "no Debian mirror found in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list"; exit 1; }

if ! command -v debootstrap >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        say "installing debootstrap (apt-get)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >/dev/null
        apt-get install -y -qq debootstrap >/dev/null
    else
        say "debootstrap is missing and cannot be installed here (needs root on Debian)"
        exit 1
    fi
fi
[ "$(id -u)" = 0 ] || { say "debootstrap needs root"; exit 1; }

ROOTFS=$(mktemp -d /var/tmp/swarmscale-rootfs.XXXXXX)
trap 'rm -rf "$ROOTFS"' EXIT

say "debootstrap $SUITE from the configured mirror into $ROOTFS (about a minute)"
start=$(date +%s)
if ! debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        "$SUITE" "$ROOTFS" "$MIRROR" >"$ROOTFS.log" 2>&1; then
    say "debootstrap failed; last lines of $ROOTFS.log:"
    tail -n 20 "$ROOTFS.log" >&2
    exit 1
fi
rm -f "$ROOTFS.log"

# Smaller image: no package caches or lists (the image never runs apt without the host's help).
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/usr/share/doc \
       "$ROOTFS"/usr/share/man "$ROOTFS"/usr/share/locale

tar -C "$ROOTFS" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    - "$IMAGE" >/dev/null
say "built $IMAGE in $(( $(date +%s) - start ))s"
