"""Pictures of the dashboards drawn from a live Prometheus, and the alerts firing now.

No Grafana server runs here, so each dashboard is drawn with matplotlib: one subplot per panel,
one line per series of each of its queries over the last N minutes, as Grafana would plot them.
`make monitor-snapshot` runs this against the `make monitor` Prometheus and Alertmanager:

    python -m deploy.monitoring.snapshot [--minutes 15] [--out docs/monitoring/img]
        [--traffic 60] [--prometheus URL] [--alertmanager URL] [--gateway URL]
"""

from __future__ import annotations

import argparse
import io
import math
import os
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from deploy.monitoring.dashboards.definitions import DASHBOARDS
from deploy.monitoring.dashboards.panels import Dashboard, Panel, Query

IMG_DIR = Path(__file__).resolve().parents[2] / "docs" / "monitoring" / "img"


class PrometheusError(RuntimeError):
    """Prometheus refused a query (a syntax error, an unknown function) or is unreachable."""


@dataclass(frozen=True)
class Series:
    labels: dict[str, str]
    times: list[float]
    values: list[float]


class Prometheus:
    """The few HTTP API calls the pictures and the live test need."""

    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=30, trust_env=False)

    def close(self) -> None:
        self.http.close()

    def _get(self, path: str, **params: Any) -> Any:
        reply = self.http.get(path, params=params)
        body = reply.json()
        if body.get("status") != "success":
            raise PrometheusError(f"{params.get('query', path)}: {body.get('error', reply.text)}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result vector (a list of {metric, value})."""
        result: list[dict[str, Any]] = self._get("/api/v1/query", query=expr)["result"]
        return result

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[Series]:
        data = self._get("/api/v1/query_range", query=expr, start=start, end=end, step=step)
        return [
            Series(
                item["metric"],
                [float(t) for t, _ in item["values"]],
                [float(v) for _, v in item["values"]],
            )
            for item in data["result"]
        ]

    def metric_names(self) -> set[str]:
        """Every metric name Prometheus knows: with samples, or only announced by a target
        (# TYPE of a labelled family without children yet, under its OpenMetrics name)."""
        names = set(self._get("/api/v1/label/__name__/values"))
        for family, entries in self._get("/api/v1/metadata").items():
            names.add(family)
            if entries and entries[0].get("type") == "counter":
                names.add(f"{family}_total")
        return names

    def targets(self) -> list[dict[str, Any]]:
        active: list[dict[str, Any]] = self._get("/api/v1/targets")["activeTargets"]
        return active

    def rules(self) -> list[dict[str, Any]]:
        """Every rule of every loaded group (recording and alerting)."""
        groups = self._get("/api/v1/rules")["groups"]
        return [rule for group in groups for rule in group["rules"]]


_NAME = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?:\{|\[|\)|$| )")
_NOT_METRICS = frozenset(
    {
        "sum", "min", "max", "avg", "count", "rate", "irate", "increase", "by", "without", "on",
        "or", "and", "unless", "histogram_quantile", "le", "ignoring", "group_left", "vector",
        "abs", "clamp_min", "clamp_max", "time", "bool", "offset", "absent", "topk",
    }
)  # fmt: skip
_INTERVAL = re.compile(r"\[[^\]]*\]")
_LABEL_BLOCK = re.compile(r"\{[^}]*\}")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring)\s*\([^)]*\)")


def metric_names_in(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (good enough for the dashboards' queries)."""
    text = _GROUPING.sub(" ", _LABEL_BLOCK.sub("{}", _INTERVAL.sub("[]", expr)))
    names = {match.group(1) for match in _NAME.finditer(text + " ")}
    return names - _NOT_METRICS


def legend(template: str, labels: dict[str, str]) -> str:
    """Grafana's `{{label}}` legend template filled in from a series' labels."""
    text = re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template)
    return " ".join(text.split()) or ", ".join(f"{k}={v}" for k, v in sorted(labels.items()))


# ---------------------------------------------------------------------------- drawing
def draw(
    spec: Dashboard,
    prometheus: Prometheus,
    *,
    start: float,
    end: float,
    rate_window: str,
    out: Path,
    empty: list[str] | None = None,
) -> Path:
    """One PNG of the dashboard: its panels in Grafana's order, two a row. The titles of panels
    without data that should have some are appended to `empty`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    panels = list(spec.panels())
    empty = [] if empty is None else empty
    columns = 2
    rows = math.ceil(len(panels) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(15, 3.4 * rows), squeeze=False)
    step = max(1.0, (end - start) / 240)
    for index, panel in enumerate(panels):
        ax = axes[index // columns][index % columns]
        lines = _draw_panel(ax, panel, prometheus, start, end, step, rate_window)
        if not lines and any(query.may_be_empty is None for query in panel.queries):
            empty.append(f"{spec.title} / {panel.title}")
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))  # type: ignore[no-untyped-call]
    for index in range(len(panels), rows * columns):
        axes[index // columns][index % columns].axis("off")
    stamp = datetime.fromtimestamp(end, UTC).strftime("%Y-%m-%d %H:%M UTC")
    minutes = round((end - start) / 60)
    figure.suptitle(f"{spec.title} — last {minutes} min to {stamp}", fontsize=14)
    figure.tight_layout(rect=(0, 0, 1, 0.98))
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{spec.uid.removeprefix('catalytic-')}.png"
    buffer = io.BytesIO()
    figure.savefig(buffer, dpi=72)
    plt.close(figure)
    _save_small_png(buffer, path)
    return path


def _save_small_png(buffer: io.BytesIO, path: Path) -> None:
    """The picture with a 64-colour palette: a third of the size, the same to the eye (flat
    backgrounds and a few line colours), so the committed pictures stay small."""
    from PIL import Image

    buffer.seek(0)
    with Image.open(buffer) as image:
        image.convert("RGB").quantize(colors=64).save(path, optimize=True)


def _draw_panel(
    ax: Any,
    panel: Panel,
    prometheus: Prometheus,
    start: float,
    end: float,
    step: float,
    rate_window: str,
) -> int:
    """Draws the panel's series; returns how many (0: the panel says why it has none)."""
    from matplotlib.dates import date2num

    lines = 0
    ax.set_xlim(  # the same time axis with or without data
        date2num(datetime.fromtimestamp(start, UTC)),  # type: ignore[no-untyped-call]
        date2num(datetime.fromtimestamp(end, UTC)),  # type: ignore[no-untyped-call]
    )
    for query in panel.queries:
        for series in prometheus.query_range(query.promql(rate_window), start, end, step):
            times = date2num([datetime.fromtimestamp(t, UTC) for t in series.times])  # type: ignore[no-untyped-call]
            ax.plot(times, series.values, linewidth=1.2, label=legend(query.legend, series.labels))
            lines += 1
    unit = {"percentunit": "ratio", "reqps": "req/s", "ops": "ops/s"}.get(panel.unit, panel.unit)
    ax.set_title(f"{panel.title} ({unit})" if unit != "short" else panel.title, fontsize=10)
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.3)
    if lines:
        ax.legend(fontsize=7, loc="upper left", ncol=2 if lines > 4 else 1)
    else:
        # A panel that may rightly be empty says why (no GPU here), not just "no data".
        reasons = [query.may_be_empty for query in panel.queries]
        known = sorted({reason for reason in reasons if reason is not None})
        text = "no data: " + "; ".join(known) if None not in reasons else "no data"
        ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, wrap=True)
    return lines


# ---------------------------------------------------------------------------- alerts
def firing_alerts(alertmanager_url: str) -> list[dict[str, Any]]:
    """The alerts Alertmanager holds now (API v2), active ones first."""
    reply = httpx.get(f"{alertmanager_url}/api/v2/alerts", timeout=10, trust_env=False)
    reply.raise_for_status()
    alerts: list[dict[str, Any]] = reply.json()
    return sorted(alerts, key=lambda a: (a["status"]["state"] != "active", a["startsAt"]))


def format_alerts(alerts: Sequence[dict[str, Any]]) -> str:
    if not alerts:
        return "no alerts firing"
    lines = []
    for alert in alerts:
        labels = alert["labels"]
        summary = alert.get("annotations", {}).get("summary", "")
        lines.append(
            f"{alert['status']['state']:<10} {labels.get('alertname', '?'):<28} "
            f"{labels.get('severity', ''):<9} {labels.get('service', ''):<9} "
            f"since {alert['startsAt'][:19]}  {summary}"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------- command
def main(argv: list[str] | None = None) -> int:
    env = os.environ
    parser = argparse.ArgumentParser(
        prog="python -m deploy.monitoring.snapshot", description=__doc__
    )
    parser.add_argument(
        "--prometheus", default=f"http://127.0.0.1:{env.get('PROMETHEUS_PORT', '9090')}"
    )
    parser.add_argument(
        "--alertmanager", default=f"http://127.0.0.1:{env.get('ALERTMANAGER_PORT', '9093')}"
    )
    parser.add_argument("--gateway", default=f"http://127.0.0.1:{env.get('GATEWAY_PORT', '8080')}")
    parser.add_argument("--minutes", type=float, default=15.0, help="time range drawn (15)")
    parser.add_argument("--rate-window", default="1m", help="for Grafana's $__rate_interval (1m)")
    parser.add_argument(
        "--traffic",
        type=float,
        default=0.0,
        help="first drive this many seconds of API traffic through the gateway",
    )
    parser.add_argument("--out", type=Path, default=IMG_DIR)
    parser.add_argument("--dashboard", action="append", help="uid suffix, e.g. overview (all)")
    args = parser.parse_args(argv)

    if args.traffic > 0:
        from deploy.monitoring.traffic import drive

        counts = drive(args.gateway, duration_s=args.traffic)
        print(
            f"traffic: {counts.total} requests, by status {dict(sorted(counts.by_status.items()))}"
        )
    prometheus = Prometheus(args.prometheus)
    end = time.time()
    start = end - args.minutes * 60
    empty: list[str] = []
    try:
        for spec in DASHBOARDS:
            if args.dashboard and spec.uid.removeprefix("catalytic-") not in args.dashboard:
                continue
            path = draw(
                spec,
                prometheus,
                start=start,
                end=end,
                rate_window=args.rate_window,
                out=args.out,
                empty=empty,
            )
            print(f"{spec.title:<32} {path}")
        if empty:
            print("\npanels without data:\n  " + "\n  ".join(empty))
    except (httpx.HTTPError, PrometheusError) as exc:
        print(
            f"snapshot: Prometheus at {args.prometheus}: {exc}; is `make monitor` running?",
            file=sys.stderr,
        )
        return 1
    finally:
        prometheus.close()
    try:
        print(
            f"\nalerts at {args.alertmanager}:\n{format_alerts(firing_alerts(args.alertmanager))}"
        )
    except httpx.HTTPError as exc:
        print(f"snapshot: Alertmanager at {args.alertmanager}: {exc}", file=sys.stderr)
        return 1
    return 0


def panel_queries() -> list[tuple[Dashboard, Panel, Query]]:
    """Every query of every dashboard, for the live test."""
    return [
        (spec, panel, query)
        for spec in DASHBOARDS
        for panel in spec.panels()
        for query in panel.queries
    ]


if __name__ == "__main__":
    sys.exit(main())
