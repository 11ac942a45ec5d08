#!/usr/bin/env bash
# A wheelhouse for the images, made on the host (containers here cannot reach the package index).
#
#   wheels.sh [DIR]     default build/wheels
#
# Holds the project's runtime dependencies (read from pyproject.toml, the one list) for CPython 3.11
# on x86_64 Linux. Skips when DIR already holds wheels for exactly this list.
set -euo pipefail
cd "$(dirname "$0")/.."

DIR=${1:-build/wheels}
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3

say() { echo "wheels.sh: $*" >&2; }

reqs=$("$PY" - <<'EOF'
import tomllib
with open("pyproject.toml", "rb") as f:
    print("\n".join(sorted(tomllib.load(f)["project"]["dependencies"])))
EOF
)
stamp="$DIR/.requirements"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$reqs" ] && ls "$DIR"/*.whl >/dev/null 2>&1; then
    exit 0
fi

mkdir -p "$DIR"
say "downloading wheels into $DIR"
# Wheels only, for the image's interpreter and platform rather than the host's.
"$PY" -m pip download -q --disable-pip-version-check --only-binary=:all: \
    --python-version 3.11 --implementation cp --abi cp311 \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
    -d "$DIR" -r /dev/stdin <<<"$reqs" 2> >(grep -v "^WARNING: Location" >&2)
printf '%s\n' "$reqs" >"$stamp"
say "$(ls "$DIR"/*.whl | wc -l) wheels in $DIR"
