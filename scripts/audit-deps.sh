#!/usr/bin/env bash
# `make audit`, and the last step of `make lint`: pip-audit of the runtime lock (what the images
# ship). Exact pins with hashes, so pip-audit resolves nothing and runs no pip (--disable-pip).
# Advisory sources in turn: PyPI's per-release JSON (its "vulnerabilities", from the OSV database),
# then OSV's API. A known vulnerability fails. A source that cannot answer (no network, a timeout,
# an outage, a mirror that serves no per-release JSON) passes to the next; when none answers the
# audit skips and says why, so the network never fails CI. Accepted advisories, each with its
# reason: requirements/audit-ignore.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
LOCK=${AUDIT_LOCK:-requirements/runtime.txt}
BIN=${BIN:-.venv/bin}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
ignores=()
while read -r id _; do
  ignores+=(--ignore-vuln "$id")
done < <(grep -v -E '^[[:space:]]*(#|$)' requirements/audit-ignore.txt || true)

reasons=()
for service in pypi osv; do
  rm -f "$out/report.json"
  status=0
  "$BIN/pip-audit" --requirement "$LOCK" --require-hashes --disable-pip \
    --vulnerability-service "$service" --timeout 20 --progress-spinner off \
    --format json --output "$out/report.json" ${ignores[@]+"${ignores[@]}"} \
    >"$out/stdout" 2>"$out/stderr" || status=$?
  if [[ ! -s $out/report.json ]]; then
    # pip-audit writes its report once every package is queried: none means it stopped early.
    if grep -q -E 'requests\.exceptions\.|ServiceError|ConnectionError|network may be blocking' "$out/stderr"; then
      line=$(grep -v '^Tip' "$out/stderr" | grep -E 'Error|error|Could not' | tail -n 1)
      # requests' message, shortened: "ConnectionError to HOST (NameResolutionError)"
      line=$(sed -E "s/.*requests\.exceptions\.([A-Za-z]+).*host='([^']+)'.*Caused by ([A-Za-z]+)\(.*/\1 to \2 (\3)/" <<<"$line")
      reasons+=("$service: ${line:0:240}")
      continue
    fi
    cat "$out/stderr" >&2
    echo "audit: pip-audit ($service) failed, exit $status, without a report" >&2
    exit 1
  fi
  verdict=0
  message=$("$BIN/python" - "$out/report.json" "$LOCK" "$service" "$((${#ignores[@]} / 2))" <<'PY'
import json
import sys

path, lock, service, accepted = sys.argv[1:]
deps = json.load(open(path, encoding="utf-8"))["dependencies"]
skipped = [d for d in deps if "skip_reason" in d]
if deps and len(skipped) == len(deps):
    # Every package of a lock resolved from PyPI exists there: this source has no data here.
    print(f"{service}: no advisory data for any locked release ({skipped[0]['skip_reason']})")
    sys.exit(3)
found = [(d["name"], d["version"], v) for d in deps for v in d.get("vulns", [])]
for name, version, vuln in found:
    fixes = ", ".join(vuln.get("fix_versions") or []) or "no fixed release"
    aliases = ", ".join(vuln.get("aliases") or [])
    print(f"audit: {name} {version}: {vuln['id']} ({aliases}); fixed in: {fixes}", file=sys.stderr)
for dep in skipped:
    print(f"audit: not audited: {dep['name']}: {dep['skip_reason']}", file=sys.stderr)
if found or skipped:
    print(
        f"audit: {len(found)} known vulnerabilities, {len(skipped)} packages not audited in "
        f"{lock} ({service} advisory data): upgrade (make lock LOCK_ARGS='--upgrade-package "
        "NAME') or accept an advisory in requirements/audit-ignore.txt with its reason",
        file=sys.stderr,
    )
    sys.exit(1)
print(
    f"audit: {len(deps)} packages of {lock}: no known vulnerabilities ({service} advisory data; "
    f"{accepted} accepted in requirements/audit-ignore.txt)"
)
PY
) || verdict=$?
  case $verdict in
    0) echo "$message" && exit 0 ;;
    3) reasons+=("$message") ;;
    *) exit 1 ;;
  esac
done
printf 'audit: skipped: no advisory source answered from here:\n'
printf '  %s\n' "${reasons[@]}"
