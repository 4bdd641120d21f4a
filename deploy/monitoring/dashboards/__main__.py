"""`python -m deploy.monitoring.dashboards [--check]`: write (or check) the generated Grafana files.

Writes deploy/monitoring/grafana/dashboards/<name>.json for every dashboard, the
provisioning files under deploy/monitoring/grafana/provisioning/, and
docs/monitoring/grafana-dashboards.md. With --check it writes
nothing and exits 1 when a committed file differs from what the definitions generate.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from deploy.monitoring.dashboards.definitions import DASHBOARDS
from deploy.monitoring.dashboards.docs import markdown
from deploy.monitoring.dashboards.grafana import DASHBOARD_PROVIDER, DATASOURCES, dashboard_text

GRAFANA_DIR = Path(__file__).resolve().parent.parent / "grafana"
DOC = Path(__file__).resolve().parents[3] / "docs" / "monitoring" / "grafana-dashboards.md"


def file_name(uid: str) -> str:
    """catalytic-overview -> overview.json"""
    return uid.removeprefix("catalytic-") + ".json"


def generated() -> dict[Path, str]:
    """Every generated file and its text."""
    files = {
        GRAFANA_DIR / "dashboards" / file_name(spec.uid): dashboard_text(spec)
        for spec in DASHBOARDS
    }
    files[GRAFANA_DIR / "provisioning" / "dashboards" / "catalytic.yml"] = DASHBOARD_PROVIDER
    files[GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml"] = DATASOURCES
    files[DOC] = markdown()
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.monitoring.dashboards")
    parser.add_argument("--check", action="store_true", help="fail when a file is out of date")
    args = parser.parse_args(argv)
    stale = []
    for path, text in generated().items():
        current = path.read_text() if path.exists() else None
        if current == text:
            continue
        if args.check:
            stale.append(path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(
                f"wrote {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}"
            )
    if stale:
        names = ", ".join(str(path) for path in stale)
        print(f"out of date (run `make dashboards`): {names}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
