#!/usr/bin/env bash
# Fails when the protos in the working tree break the wire or JSON contract of those on `main`
# (override the baseline with BUF_BREAKING_AGAINST, e.g. '.git#tag=v1.2.0').
set -euo pipefail
cd "$(dirname "$0")/.."
against="${BUF_BREAKING_AGAINST:-.git#branch=main}"
if [[ -z "${BUF_BREAKING_AGAINST:-}" ]] && ! git cat-file -e main:buf.yaml 2>/dev/null; then
  echo "buf breaking: main has no protos yet; nothing to compare against"
  exit 0
fi
node_modules/.bin/buf breaking --against "$against"
echo "buf breaking: no breaking changes against ${against}"
