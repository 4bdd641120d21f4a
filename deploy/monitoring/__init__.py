"""Monitoring as code: Prometheus and blackbox configuration, dashboards, snapshots."""
