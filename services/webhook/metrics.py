"""Prometheus metrics of webhook delivery; every label has a handful of values at most."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

DELIVERIES = Counter(
    "catalytic_webhook_deliveries_total",
    "Delivery attempts by outcome: succeeded, failed (a retry follows) or dead (none follows).",
    ["outcome"],
)
ATTEMPT_DURATION = Histogram(
    "catalytic_webhook_attempt_duration_seconds",
    "Time of one delivery attempt: DNS, connect, TLS, request and the capped answer.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30),
)
QUEUE_DEPTH = Gauge(
    "catalytic_webhook_queue_depth",
    "Deliveries waiting for an attempt (due or scheduled), endpoints disabled excepted; every"
    " replica reports the same shared queue.",
)
OLDEST_PENDING_AGE = Gauge(
    "catalytic_webhook_oldest_pending_age_seconds",
    "Age of the oldest delivery still waiting (0 when none waits), endpoints disabled excepted.",
)
ENDPOINTS_DISABLED = Counter(
    "catalytic_webhook_endpoints_disabled_total",
    "Endpoints disabled by delivery: reason gone (answered 410) or failing (no success for"
    " WEBHOOK_DISABLE_AFTER_S).",
    ["reason"],
)
RETENTION_DELETED = Counter(
    "catalytic_webhook_retention_deleted_total",
    "Rows deleted by retention (WEBHOOK_RETENTION_DAYS): kind deliveries (finished, each with"
    " its attempts) or events (no delivery left).",
    ["kind"],
)
