#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages the local stack needs, only when they are missing.
# PostgreSQL and Redis run as local processes under .run/ (see devstack/), never as system services.
# Prometheus and Alertmanager always (promtool and amtool check the rules); --monitoring (or
# MONITORING=1) adds the blackbox, PostgreSQL and Redis exporters, which devstack/monitoring.py
# runs next to them the same way (`make monitor`, `make test`).
set -euo pipefail

monitoring="${MONITORING:-}"
for arg in "$@"; do
  case "$arg" in
    --monitoring) monitoring=1 ;;
    *) echo "usage: $0 [--monitoring]" >&2; exit 2 ;;
  esac
done

need=()
pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1; }
[[ -n "$(pg_bin)" && -x "$(pg_bin)/initdb" ]] || need+=(postgresql postgresql-contrib)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
# Backups (make up BACKUP=1, make dr-drill, the drill in make test): WAL archiving and restores.
command -v pgbackrest >/dev/null 2>&1 || need+=(pgbackrest)
command -v npm >/dev/null 2>&1 || need+=(npm)
# Headless browser for the gateway's /docs and /redoc pages (tests/e2e/test_gateway_docs.py).
command -v chromium >/dev/null 2>&1 || need+=(chromium)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
# SoftHSM2, a PKCS#11 token in files: the tests of the HSM key provider (ADR 56) use a real one.
command -v softhsm2-util >/dev/null 2>&1 || need+=(softhsm2)
# promtool and amtool check the monitoring rules and routes (tests/monitoring/), so Prometheus and
# Alertmanager are always installed; each package installs /usr/bin/<its name>.
monitoring_services=(prometheus prometheus-alertmanager)
if [[ -n "$monitoring" ]]; then
  # The exporters devstack/monitoring.py runs next to them (`make monitor`, the live test).
  monitoring_services+=(prometheus-blackbox-exporter prometheus-postgres-exporter
    prometheus-redis-exporter)
fi
for package in "${monitoring_services[@]}"; do
  [[ -x "/usr/bin/$package" ]] || need+=("$package")
done

if ((${#need[@]} == 0)); then
  exit 0
fi

echo "installing system packages: ${need[*]}"
SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null 2>&1 || { echo "need root or sudo to install: ${need[*]}" >&2; exit 1; }
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# Debian starts packaged services on install; the stack runs its own instances instead.
if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
  $SUDO systemctl disable --now redis-server postgresql "${monitoring_services[@]}" >/dev/null 2>&1 || true
fi
