#!/usr/bin/env bash
# `make lock`: re-resolves requirements/*.txt from pyproject.toml and requirements/*.in with uv
# (requirements/README.md). Every lock is resolved for Debian 12's CPython 3.11.2 on x86-64 (glibc
# 2.36): the images' interpreter and a developer's; with the hashes of every file of each pinned
# release. runtime.txt is what the images install; each larger lock is constrained by the one it
# extends, so the versions they share agree. A pin already in a lock stays while it still fits;
# LOCK_ARGS=--upgrade (or --upgrade-package NAME) moves to the newest releases allowed. A lock is
# replaced only when it changes, so an unchanged lock does not make the venv reinstall.
set -euo pipefail
cd "$(dirname "$0")/.."
UV=${UV:-.venv/bin/uv}
read -r -a extra_args <<<"${LOCK_ARGS:-}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "lock: resolving requirements/*.txt with $("$UV" --version) for CPython 3.11.2, manylinux_2_36 x86_64 ..."

compile() {  # compile LOCK INPUT [uv options...]
  local lock=requirements/$1
  shift
  # uv keeps the pins of the file it writes: start from the current lock.
  if [[ -f $lock ]]; then cp "$lock" "$work/out.txt"; else rm -f "$work/out.txt"; fi
  "$UV" pip compile --quiet --generate-hashes --python-version 3.11.2 \
    --python-platform x86_64-manylinux_2_36 --custom-compile-command "make lock" \
    ${extra_args[@]+"${extra_args[@]}"} "$@" -o "$work/out.txt"
  if cmp -s "$work/out.txt" "$lock"; then
    echo "lock: $lock unchanged"
  else
    mv "$work/out.txt" "$lock"
    echo "lock: $lock updated"
  fi
}

compile build.txt requirements/build.in
compile runtime.txt pyproject.toml
compile dev.txt pyproject.toml --extra dev -c requirements/runtime.txt -c requirements/build.txt
compile bench.txt pyproject.toml --extra dev --extra bench -c requirements/dev.txt
compile gpu.txt pyproject.toml --extra gpu -c requirements/runtime.txt
compile checkov.txt requirements/checkov.in
echo "lock: done; review \`git diff requirements/\`; the next make target reinstalls what changed"
